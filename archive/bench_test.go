package archive

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fsutil"
	lg "github.com/stratafs/strata/internal/layergen"
)

// benchDir holds generated layers between runs (disk-backed, not tmpfs).
const benchDir = "/var/tmp/strata-bench"

// Benchmark layers: the "generated base layer" and a 1 GB one
// for the memory check.
var (
	baseSpec = lg.Spec{Files: 10000, TotalBytes: 200 << 20, Seed: 1}
	bigSpec  = lg.Spec{Files: 20000, TotalBytes: 1 << 30, Seed: 2}
)

// layerFile generates the layer for spec once and returns its path.
func layerFile(tb testing.TB, spec lg.Spec) string {
	tb.Helper()
	p := filepath.Join(benchDir, fmt.Sprintf("base-%d-%d-%d.tar", spec.Files, spec.TotalBytes, spec.Seed))
	if _, err := os.Stat(p); err == nil {
		return p
	}
	must(tb, os.MkdirAll(benchDir, 0o755))
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	must(tb, err)
	w := bufio.NewWriterSize(f, 1<<20)
	must(tb, lg.Base(w, spec))
	must(tb, w.Flush())
	must(tb, f.Close())
	must(tb, os.Rename(tmp, p))
	return p
}

// freshDir returns an empty directory under benchDir, removing (outside
// the timer) whatever the previous iteration left, and flushing dirty
// pages so that one iteration's writeback does not bill the next.
func freshDir(b *testing.B, name string) string {
	b.Helper()
	d := filepath.Join(benchDir, name)
	must(b, os.RemoveAll(d))
	must(b, os.Mkdir(d, 0o755))
	must(b, fsutil.Syncfs(benchDir))
	return d
}

func benchApply(b *testing.B, spec lg.Spec, run func(dst, tarball string)) {
	requireRoot(b)
	tarball := layerFile(b, spec)
	b.SetBytes(spec.TotalBytes)
	for b.Loop() {
		b.StopTimer()
		dst := freshDir(b, "apply-target")
		b.StartTimer()
		run(dst, tarball)
	}
	b.StopTimer()
	os.RemoveAll(filepath.Join(benchDir, "apply-target"))
}

// BenchmarkApply and BenchmarkGNUTarExtract unpack the same tar into the
// same filesystem, so their ratio is the "Apply <= 1.2x tar".
func BenchmarkApply(b *testing.B) {
	benchApply(b, baseSpec, func(dst, tarball string) {
		f, err := os.Open(tarball)
		must(b, err)
		defer f.Close()
		if _, err := Apply(context.Background(), dst, f, ApplyOptions{}); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkGNUTarExtract(b *testing.B) {
	needTar(b)
	benchApply(b, baseSpec, func(dst, tarball string) {
		if out, err := exec.Command("tar", "-C", dst, "-xf", tarball).CombinedOutput(); err != nil {
			b.Fatalf("tar: %v\n%s", err, out)
		}
	})
}

// BenchmarkApplyVsGNUTar alternates the two inside each iteration and
// reports their ratio: on a shared machine whose disk load drifts over
// minutes, alternating is fairer than two benchmarks run one after the
// other.
func BenchmarkApplyVsGNUTar(b *testing.B) {
	requireRoot(b)
	needTar(b)
	tarball := layerFile(b, baseSpec)
	var ours, theirs, oursCPU, theirsCPU time.Duration
	for b.Loop() {
		b.StopTimer()
		dst := freshDir(b, "apply-target")
		b.StartTimer()
		start, cpu0 := time.Now(), processCPU(b)
		f, err := os.Open(tarball)
		must(b, err)
		_, err = Apply(context.Background(), dst, f, ApplyOptions{})
		f.Close()
		must(b, err)
		ours += time.Since(start)
		oursCPU += processCPU(b) - cpu0
		b.StopTimer()
		dst = freshDir(b, "apply-target")
		b.StartTimer()
		start = time.Now()
		cmd := exec.Command("tar", "-C", dst, "-xf", tarball)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("tar: %v\n%s", err, out)
		}
		theirs += time.Since(start)
		theirsCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	b.StopTimer()
	os.RemoveAll(filepath.Join(benchDir, "apply-target"))
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "apply-s/op")
	b.ReportMetric(theirs.Seconds()/n, "tar-s/op")
	b.ReportMetric(ours.Seconds()/theirs.Seconds(), "apply/tar")
	// CPU time (user+sys) drifts less than wall time on a shared disk.
	b.ReportMetric(oursCPU.Seconds()/n, "apply-cpu-s/op")
	b.ReportMetric(theirsCPU.Seconds()/n, "tar-cpu-s/op")
}

// processCPU is this process's user+system time so far.
func processCPU(tb testing.TB) time.Duration {
	var ru unix.Rusage
	must(tb, unix.Getrusage(unix.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkWriteDir(b *testing.B) {
	requireRoot(b)
	tarball := layerFile(b, baseSpec)
	src := freshDir(b, "writedir-source")
	defer os.RemoveAll(src)
	f, err := os.Open(tarball)
	must(b, err)
	_, err = Apply(context.Background(), src, f, ApplyOptions{})
	f.Close()
	must(b, err)
	b.SetBytes(baseSpec.TotalBytes)
	for b.Loop() {
		if err := WriteDir(context.Background(), io.Discard, src, DiffOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPeakRSS applies and writes back the 1 GB layer in a child
// process (this test binary, run for TestMemoryChild) and reports the
// child's peak RSS (VmHWM): the figure that must stay under 100 MB.
func BenchmarkPeakRSS(b *testing.B) {
	requireRoot(b)
	tarball := layerFile(b, bigSpec)
	for _, op := range []string{"apply", "writedir"} {
		b.Run(op, func(b *testing.B) {
			var peak int64
			for b.Loop() {
				peak = childRSS(b, op, tarball, filepath.Join(benchDir, "rss-target"))
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
			if peak > 100<<20 {
				b.Errorf("%s of a %d MB layer peaked at %d MB RSS (limit 100)", op, bigSpec.TotalBytes>>20, peak>>20)
			}
		})
	}
	os.RemoveAll(filepath.Join(benchDir, "rss-target"))
}

const childEnv = "STRATA_ARCHIVE_MEM_CHILD"

// childRSS runs op in a child and returns its peak RSS in bytes. For
// "writedir" the tree is made first (by a child too, so it does not count).
func childRSS(tb testing.TB, op, tarball, dir string) int64 {
	tb.Helper()
	if op == "apply" || !exists(dir) {
		must(tb, os.RemoveAll(dir))
		must(tb, os.MkdirAll(dir, 0o755))
		if op != "apply" {
			childRSS(tb, "apply", tarball, dir)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+op+":"+tarball+":"+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("child %s: %v\n%s", op, err, out)
	}
	// rusage's Maxrss of a child started by os/exec is useless here: Go
	// starts children with vfork semantics, so the kernel carries the
	// parent's high-water mark into the child at exec. The child reports
	// its own mm's VmHWM instead.
	_, rest, ok := strings.Cut(string(out), peakPrefix)
	if !ok {
		tb.Fatalf("child %s did not report its peak RSS:\n%s", op, out)
	}
	kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
	must(tb, err)
	return kb << 10
}

const peakPrefix = "STRATA_PEAK_RSS_KB="

// vmHWM reads this process's peak RSS in KiB.
func vmHWM(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	must(t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			must(t, err)
			return kb
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// TestMemoryChild is the child's body; it does nothing in a normal run.
func TestMemoryChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("runs only as the child of a memory measurement")
	}
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) != 3 {
		t.Fatalf("bad %s=%q", childEnv, spec)
	}
	op, tarball, dir := parts[0], parts[1], parts[2]
	switch op {
	case "apply":
		f, err := os.Open(tarball)
		must(t, err)
		defer f.Close()
		_, err = Apply(context.Background(), dir, f, ApplyOptions{})
		must(t, err)
	case "writedir":
		must(t, WriteDir(context.Background(), io.Discard, dir, DiffOptions{}))
	default:
		t.Fatalf("unknown op %q", op)
	}
	fmt.Printf("%s%d\n", peakPrefix, vmHWM(t))
}

// TestMemoryFlat: what Apply and WriteDir allocate depends on the number
// of entries, not on how many bytes they hold (no file is buffered whole).
func TestMemoryFlat(t *testing.T) {
	requireRoot(t)
	alloc := func(total int64) (applied, written uint64) {
		tb := baseTar(t, lg.Spec{Files: 200, TotalBytes: total, Seed: 9})
		_, dir := target(t)
		var m0, m1, m2 runtime.MemStats
		runtime.ReadMemStats(&m0)
		apply(t, dir, tb, ApplyOptions{})
		runtime.ReadMemStats(&m1)
		must(t, WriteDir(context.Background(), io.Discard, dir, DiffOptions{}))
		runtime.ReadMemStats(&m2)
		return m1.TotalAlloc - m0.TotalAlloc, m2.TotalAlloc - m1.TotalAlloc
	}
	smallA, smallW := alloc(4 << 20)
	bigA, bigW := alloc(64 << 20)
	t.Logf("allocated: apply %d KiB (4 MiB layer) vs %d KiB (64 MiB), writedir %d vs %d KiB",
		smallA>>10, bigA>>10, smallW>>10, bigW>>10)
	// 16x the content may not cost more than a few MiB more: the copy
	// buffers are fixed, the rest is per entry.
	if bigA > smallA+4<<20 || bigW > smallW+4<<20 {
		t.Errorf("allocation grows with layer size: apply %d -> %d, writedir %d -> %d", smallA, bigA, smallW, bigW)
	}
}
