package conformance

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/layergen"
)

// benchDir caches generated layer tars between runs: generating 200 MB
// of deterministic content costs more than some of what is measured.
const benchDir = "/var/tmp/strata-bench"

// benchSpec is the generated base layer: ~10,000 files, ~200 MB, as an
// image's base layer is. -short shrinks it tenfold for a quick look.
func benchSpec() layergen.Spec {
	if testing.Short() {
		return layergen.Spec{Files: 1000, TotalBytes: 20 << 20, Seed: 1}
	}
	return layergen.Spec{Files: 10000, TotalBytes: 200 << 20, Seed: 1}
}

// baseTar returns the path of the generated base layer tar, writing it
// once (through a temporary name, so an interrupted run leaves no half
// file under the final name).
func baseTar(tb testing.TB) (string, int64) {
	tb.Helper()
	spec := benchSpec()
	p := filepath.Join(benchDir, fmt.Sprintf("base-%d-files-%d-bytes-seed%d.tar", spec.Files, spec.TotalBytes, spec.Seed))
	if fi, err := os.Stat(p); err == nil {
		return p, fi.Size()
	}
	if err := os.MkdirAll(benchDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.CreateTemp(benchDir, ".base-*.tar")
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = layergen.Base(w, spec)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		tb.Fatalf("generating the base layer: %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		tb.Fatal(err)
	}
	return p, fi.Size()
}

// Bench runs the suite's benchmarks against be: ApplyDiff and Diff of the
// generated base layer, Create of a child (read-only and writable) of it,
// and Get/Put of a layer. Each sub-benchmark has its own root.
func Bench(b *testing.B, be Backend) {
	if !usable(b, be) {
		return
	}
	tarPath, tarSize := baseTar(b)
	b.Logf("base layer: %s (%d bytes)", tarPath, tarSize)
	applyBase := func(tb testing.TB, e *env, id string) int64 {
		tb.Helper()
		f, err := os.Open(tarPath)
		if err != nil {
			tb.Fatal(err)
		}
		defer f.Close()
		if err := e.d.Create(e.ctx, id, "", nil); err != nil {
			tb.Fatalf("Create(%s): %v", id, err)
		}
		n, err := e.d.ApplyDiff(e.ctx, id, bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			tb.Fatalf("ApplyDiff(%s): %v", id, err)
		}
		return n
	}
	// One root with the base applied once serves every sub-benchmark:
	// the testing package calls each one several times while it sizes
	// b.N, and applying 200 MB each time would dominate the run. Each
	// sub-benchmark reports through its own view of the env.
	shared := newEnv(b, be)
	sharedEnv := func(b *testing.B) *env {
		e := shared.sub(b)
		if !e.d.Exists("base") {
			applyBase(b, e, "base")
		}
		return e
	}

	b.Run("ApplyDiff", func(b *testing.B) {
		e := sharedEnv(b)
		b.SetBytes(tarSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("applied%d", i)
			applyBase(b, e, id)
			b.StopTimer()
			if err := e.d.Remove(e.ctx, id); err != nil {
				b.Fatalf("Remove: %v", err)
			}
			b.StartTimer()
		}
	})

	b.Run("Diff", func(b *testing.B) {
		e := sharedEnv(b)
		b.SetBytes(tarSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rc, err := e.d.Diff(e.ctx, "base")
			if err != nil {
				b.Fatalf("Diff: %v", err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				b.Fatalf("reading Diff: %v", err)
			}
			rc.Close()
		}
	})

	for _, writable := range []bool{false, true} {
		name := "CreateChild"
		if writable {
			name = "CreateWritableChild"
		}
		b.Run(name, func(b *testing.B) {
			e := sharedEnv(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("%s%d", name, i)
				if err := e.d.Create(e.ctx, id, "base", &driver.CreateOpts{Writable: writable}); err != nil {
					b.Fatalf("Create: %v", err)
				}
				b.StopTimer()
				if err := e.d.Remove(e.ctx, id); err != nil {
					b.Fatalf("Remove: %v", err)
				}
				b.StartTimer()
			}
		})
	}

	b.Run("GetPut", func(b *testing.B) {
		e := sharedEnv(b)
		if !e.d.Exists("ctr") {
			e.create("ctr", "base", &driver.CreateOpts{Writable: true})
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := e.d.Get(e.ctx, "ctr", nil); err != nil {
				b.Fatalf("Get: %v", err)
			}
			if err := e.d.Put(e.ctx, "ctr"); err != nil {
				b.Fatalf("Put: %v", err)
			}
		}
	})

	// A Get of a layer that is already mounted only counts: what every
	// extra user of a running container pays.
	b.Run("GetPutNested", func(b *testing.B) {
		e := sharedEnv(b)
		if !e.d.Exists("ctr") {
			e.create("ctr", "base", &driver.CreateOpts{Writable: true})
		}
		if _, err := e.d.Get(e.ctx, "ctr", nil); err != nil {
			b.Fatalf("Get: %v", err)
		}
		defer e.d.Put(e.ctx, "ctr")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := e.d.Get(e.ctx, "ctr", nil); err != nil {
				b.Fatalf("Get: %v", err)
			}
			if err := e.d.Put(e.ctx, "ctr"); err != nil {
				b.Fatalf("Put: %v", err)
			}
		}
	})
}
