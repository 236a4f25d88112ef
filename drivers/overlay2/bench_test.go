package overlay2

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/mount"
)

// Benchmarks that compare two sides in one run. Each parent benchmark
// builds its fixtures once, then runs its sides as sub-benchmarks:
//
//	go test -run '^$' -bench . -benchtime 20x ./drivers/overlay2

// genBaseTar writes a layer tar of n files (100 per directory, sizes
// from 1 to 16 KiB) and returns its path.
func genBaseTar(b *testing.B, dir string, n int) string {
	b.Helper()
	p := filepath.Join(dir, fmt.Sprintf("base-%d.tar", n))
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	mt := time.Date(2022, 1, 2, 3, 4, 5, 0, time.UTC)
	content := make([]byte, 16<<10)
	for i := range content {
		content[i] = byte(i*7 + i/13)
	}
	for i := 0; i < n; i++ {
		if i%100 == 0 {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%04d/", i/100), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
		}
		size := 1024 + (i*997)%(15<<10)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%04d/f%05d", i/100, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size), ModTime: mt}); err != nil {
			b.Fatal(err)
		}
		tw.Write(content[:size])
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	return p
}

func applyFile(b *testing.B, d driver.Driver, id, parent, tarPath string) {
	b.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	mustCreate(b, d, id, parent, false)
	if _, err := d.ApplyDiff(context.Background(), id, f); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDiff20Changes: Diff of a writable layer with 20 changed files
// (10 modified lower files, 10 new) on a 10,000-file and a 50,000-file
// base. The native diff reads only diff/, so the two should cost about the
// same; naive/base=10000 shows what walking the image costs instead.
func BenchmarkDiff20Changes(b *testing.B) {
	root := testRoot(b)
	d := open(b, root, Options{})
	for _, n := range []int{10000, 50000} {
		base := fmt.Sprintf("base%d", n)
		applyFile(b, d, base, "", genBaseTar(b, root, n))
		ctr := fmt.Sprintf("ctr%d", n)
		mustCreate(b, d, ctr, base, true)
		m := mustGet(b, d, ctr, nil)
		for i := 0; i < 10; i++ {
			k := i * (n / 10)
			writeFile(b, filepath.Join(m, fmt.Sprintf("d%04d/f%05d", k/100, k)), "modified")
			writeFile(b, filepath.Join(m, fmt.Sprintf("new/n%02d", i)), "new")
		}
		mustPut(b, d, ctr)
	}
	// A second driver on the same root, opened once the layers exist.
	naive := open(b, root, Options{ForceNaiveDiff: true, SkipMountCheck: true})
	diffOnce := func(d driver.Driver, id string) error {
		rc, err := d.Diff(context.Background(), id)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(io.Discard, rc)
		return err
	}
	diff := func(d driver.Driver, id string) func(b *testing.B) {
		return func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := diffOnce(d, id); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("native/base=10000", diff(d, "ctr10000"))
	b.Run("native/base=50000", diff(d, "ctr50000"))
	// Both sizes in one loop, alternating, so that the machine's load
	// hits them alike: medians and their ratio.
	b.Run("native/interleaved", func(b *testing.B) {
		var small, large []time.Duration
		one := func(id string, into *[]time.Duration) {
			t0 := time.Now()
			if err := diffOnce(d, id); err != nil {
				b.Fatal(err)
			}
			*into = append(*into, time.Since(t0))
		}
		for i := 0; i < b.N; i++ {
			if i%2 == 0 {
				one("ctr10000", &small)
				one("ctr50000", &large)
			} else {
				one("ctr50000", &large)
				one("ctr10000", &small)
			}
		}
		s, l := median(small), median(large)
		b.ReportMetric(float64(s)/1e6, "base10k-ms")
		b.ReportMetric(float64(l)/1e6, "base50k-ms")
		b.ReportMetric(float64(l)/float64(s), "50k/10k")
	})
	b.Run("naive/base=10000", diff(naive, "ctr10000"))
}

// BenchmarkGetDepth: Get of a writable layer on a chain, 1 layer deep vs
// 128 deep (each iteration's Put is not timed).
func BenchmarkGetDepth(b *testing.B) {
	root := testRoot(b)
	d := open(b, root, Options{})
	parent := ""
	for i := 0; i < 127; i++ {
		id := fmt.Sprintf("l%03d", i)
		if i%16 == 0 {
			mustLayer(b, d, id, parent, mkTar(b, file(fmt.Sprintf("f%03d", i), "x")))
		} else {
			mustCreate(b, d, id, parent, false)
		}
		parent = id
	}
	mustCreate(b, d, "top128", parent, true)
	mustCreate(b, d, "top1", "", true)
	get := func(id string) func(b *testing.B) {
		return func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := d.Get(context.Background(), id, nil); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				mustPut(b, d, id)
				b.StartTimer()
			}
		}
	}
	b.Run("depth=1", get("top1"))
	b.Run("depth=128", get("top128"))
	// Alternating, with medians and their ratio (see BenchmarkPut).
	b.Run("interleaved", func(b *testing.B) {
		var one, deep []time.Duration
		get1 := func(id string, into *[]time.Duration) {
			t0 := time.Now()
			if _, err := d.Get(context.Background(), id, nil); err != nil {
				b.Fatal(err)
			}
			*into = append(*into, time.Since(t0))
			mustPut(b, d, id)
		}
		for i := 0; i < b.N; i++ {
			if i%2 == 0 {
				get1("top1", &one)
				get1("top128", &deep)
			} else {
				get1("top128", &deep)
				get1("top1", &one)
			}
		}
		o, p := median(one), median(deep)
		b.ReportMetric(float64(o)/1e6, "depth1-ms")
		b.ReportMetric(float64(p)/1e6, "depth128-ms")
		b.ReportMetric(float64(p)/float64(o), "128/1")
	})
}

// BenchmarkPut: Put of a writable layer after 10 files of 256 KiB were
// copied up through it (2.5 MiB written), default and volatile, against a
// bare unmount of an identical overlay made by hand (same lower layer,
// same options, same writes). Each iteration prepares both, then times
// the Put and the unmount back to back in alternating order, so that the
// load of the machine hits both sides alike; the medians and their ratio
// are reported as put-ms, umount-ms and put/umount.
func BenchmarkPut(b *testing.B) {
	root := testRoot(b)
	d := open(b, root, Options{})
	big := make([]byte, 256<<10)
	var ents []entry
	for i := 0; i < 10; i++ {
		ents = append(ents, file(fmt.Sprintf("f%d", i), string(big)))
	}
	mustLayer(b, d, "base", "", mkTar(b, ents...))
	chunk := []byte(strings.Repeat("y", 4096))
	touch := func(m string) {
		for i := 0; i < 10; i++ {
			f, err := os.OpenFile(filepath.Join(m, fmt.Sprintf("f%d", i)), os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			f.WriteAt(chunk, 0) // copies the whole 256 KiB file up
			f.Close()
		}
	}
	lower := filepath.Join(root, layersDir, "base", "diff")
	bareMount := func(volatile bool) (string, string) {
		dir, err := os.MkdirTemp(root, "bare-")
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range []string{"upper", "work", "merged"} {
			os.Mkdir(filepath.Join(dir, s), 0o755)
		}
		opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s/upper,workdir=%s/work,%s", lower, filepath.Join(root, emptyDir), dir, dir,
			strings.Join(d.host.safeOpts, ","))
		if volatile {
			opts += ",volatile"
		}
		m := filepath.Join(dir, "merged")
		if err := mount.Mount("overlay", m, "overlay", 0, opts); err != nil {
			b.Fatal(err)
		}
		return dir, m
	}
	for _, volatile := range []bool{false, true} {
		name := "default"
		if volatile {
			name = "volatile"
		}
		b.Run(name, func(b *testing.B) {
			var puts, umounts []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				id := fmt.Sprintf("ctr-%s-%d", name, i)
				mustCreate(b, d, id, "base", true)
				touch(mustGet(b, d, id, &driver.MountOpts{Volatile: volatile}))
				dir, m := bareMount(volatile)
				touch(m)
				put := func() {
					t0 := time.Now()
					if err := d.Put(context.Background(), id); err != nil {
						b.Fatal(err)
					}
					puts = append(puts, time.Since(t0))
				}
				umount := func() {
					t0 := time.Now()
					if err := unix.Unmount(m, 0); err != nil {
						b.Fatal(err)
					}
					umounts = append(umounts, time.Since(t0))
				}
				b.StartTimer()
				if i%2 == 0 {
					put()
					umount()
				} else {
					umount()
					put()
				}
				b.StopTimer()
				if err := d.Remove(context.Background(), id); err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(dir)
				b.StartTimer()
			}
			p, u := median(puts), median(umounts)
			b.ReportMetric(float64(p)/1e6, "put-ms")
			b.ReportMetric(float64(u)/1e6, "umount-ms")
			b.ReportMetric(float64(p)/float64(u), "put/umount")
		})
	}
}

// interleave runs each side n times, rotating the order every iteration
// so the machine's load hits all alike, and returns each side's samples:
// exactly n each, from this call only.
func interleave(n int, sides ...func() time.Duration) [][]time.Duration {
	out := make([][]time.Duration, len(sides))
	for i := 0; i < n; i++ {
		for k := range sides {
			j := (i + k) % len(sides)
			out[j] = append(out[j], sides[j]())
		}
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// BenchmarkApplyDiffVsTar: ApplyDiff of a generated 10,000-file base
// (~85 MB) against GNU tar -xf of the same tar into the same filesystem,
// with and without the syncfs that ApplyDiff does before it publishes a
// layer. The three run interleaved in each iteration (the order rotates);
// medians and ratios are reported.
func BenchmarkApplyDiffVsTar(b *testing.B) {
	if _, err := exec.LookPath("tar"); err != nil {
		b.Skipf("no tar: %v", err)
	}
	root := testRoot(b)
	d := open(b, root, Options{})
	tarPath := genBaseTar(b, root, 10000)
	// IDs stay unique across the repeated runs of the sub-benchmark; the
	// samples do not outlive one run (b.Run calls it again with a larger
	// b.N, and medians must not mix runs).
	next := 0
	apply := func() time.Duration {
		id := fmt.Sprintf("a%d", next)
		next++
		t0 := time.Now()
		applyFile(b, d, id, "", tarPath)
		el := time.Since(t0)
		d.Remove(context.Background(), id)
		return el
	}
	tarx := func(sync bool) func() time.Duration {
		return func() time.Duration {
			dir, _ := os.MkdirTemp(root, "tar-")
			defer os.RemoveAll(dir)
			t0 := time.Now()
			if out, err := exec.Command("tar", "-xf", tarPath, "-C", dir).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v %s", err, out)
			}
			if sync {
				fsutil.Syncfs(dir)
			}
			return time.Since(t0)
		}
	}
	b.Run("interleaved", func(b *testing.B) {
		got := interleave(b.N, apply, tarx(false), tarx(true))
		a, t, s := median(got[0]), median(got[1]), median(got[2])
		b.ReportMetric(a.Seconds(), "applydiff-s")
		b.ReportMetric(t.Seconds(), "tar-s")
		b.ReportMetric(s.Seconds(), "tar+syncfs-s")
		b.ReportMetric(a.Seconds()/t.Seconds(), "applydiff/tar")
		b.ReportMetric(a.Seconds()/s.Seconds(), "applydiff/tar+syncfs")
	})
}

// TestInterleaveKeepsRunsApart: the benchmark framework calls a
// sub-benchmark again with a larger b.N; each call's medians must come
// from its own b.N samples (BenchmarkApplyDiffVsTar once shared its loop
// counter and sample slices across calls, so the second call ran
// b.N-previous iterations and mixed both runs into its medians).
func TestInterleaveKeepsRunsApart(t *testing.T) {
	call := 0
	side := func(tag int) func() time.Duration {
		return func() time.Duration { return time.Duration(call*100 + tag) }
	}
	var got [][]time.Duration
	for _, n := range []int{1, 3, 7} {
		call++
		got = interleave(n, side(1), side(2))
		for k, s := range got {
			if len(s) != n {
				t.Fatalf("run with b.N=%d: side %d has %d samples", n, k, len(s))
			}
			for _, d := range s {
				if d/100 != time.Duration(call) {
					t.Fatalf("run %d: side %d holds a sample of run %d", call, k, d/100)
				}
			}
		}
	}
}
