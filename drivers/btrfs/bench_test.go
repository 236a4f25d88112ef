//go:build linux && cgo

package btrfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/driver"
)

// fillLayer writes n small files (100 per directory) into a new writable
// layer id.
func fillLayer(b *testing.B, d *Driver, id string, n int) {
	ctx := context.Background()
	must(b, d.Create(ctx, id, "", &driver.CreateOpts{Writable: true}))
	dir, err := d.Get(ctx, id, nil)
	must(b, err)
	defer d.Put(ctx, id)
	body := make([]byte, 512)
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%04d", i/100))
		if i%100 == 0 {
			must(b, os.Mkdir(sub, 0o755))
		}
		body[0], body[1], body[2] = byte(i), byte(i>>8), byte(i>>16)
		must(b, os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%06d", i)), body, 0o644))
	}
	// Flush now, or the first timed Create pays for writing all of it.
	f, err := openDir(dir)
	must(b, err)
	defer f.Close()
	must(b, syncFS(f))
}

// BenchmarkSnapshotCreate creates children of a 1,000-file and a
// 50,000-file parent side by side: a snapshot's cost must not depend on the
// parent's size.
func BenchmarkSnapshotCreate(b *testing.B) {
	d, _ := newTestDriver(b, 2<<30, Options{})
	ctx := context.Background()
	for _, n := range []int{1000, 50000} {
		fillLayer(b, d, fmt.Sprintf("p%d", n), n)
	}
	for _, n := range []int{1000, 50000} {
		parent := fmt.Sprintf("p%d", n)
		b.Run(fmt.Sprintf("parent=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("c%d-%d", n, i)
				must(b, d.Create(ctx, id, parent, &driver.CreateOpts{Writable: true}))
				b.StopTimer()
				must(b, d.Remove(ctx, id))
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDiff20Changes diffs a child with 20 changes (8 modified, 6
// added, 6 deleted files) of a 50,000-file layer, with the generation
// scan and with the naive full comparison.
func BenchmarkDiff20Changes(b *testing.B) {
	d, _ := newTestDriver(b, 2<<30, Options{})
	ctx := context.Background()
	fillLayer(b, d, "big", 50000)
	// Freeze it as an image layer is: a read-only subvolume.
	must(b, setReadOnly(d.layerPath("big"), true))
	must(b, d.Create(ctx, "ctr", "big", &driver.CreateOpts{Writable: true}))
	dir, err := d.Get(ctx, "ctr", nil)
	must(b, err)
	for i := 0; i < 20; i++ {
		f := filepath.Join(dir, fmt.Sprintf("d%04d", i*23), fmt.Sprintf("f%06d", i*2300))
		switch {
		case i < 8:
			must(b, appendTo(f, "changed"))
		case i < 14:
			must(b, os.WriteFile(f+".new", []byte("new"), 0o644))
		default:
			must(b, os.Remove(f))
		}
	}
	must(b, d.Put(ctx, "ctr"))
	diff := func(b *testing.B, fn func(context.Context, string) (io.ReadCloser, error)) {
		for i := 0; i < b.N; i++ {
			rc, err := fn(ctx, "ctr")
			must(b, err)
			n, err := io.Copy(io.Discard, rc)
			must(b, err)
			must(b, rc.Close())
			b.SetBytes(n)
		}
	}
	b.Run("fast", func(b *testing.B) { diff(b, d.Diff) })
	b.Run("naive", func(b *testing.B) { diff(b, d.naive.Diff) })
}
