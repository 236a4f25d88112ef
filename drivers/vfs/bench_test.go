package vfs

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/layergen"
)

// benchSpec is the generated base layer of the issue: ~10,000 files,
// ~200 MB.
var benchSpec = layergen.Spec{Files: 10_000, TotalBytes: 200 << 20, Seed: 1}

// applyBase fills layer id from a freshly generated base tar, streamed
// (the tar is never on disk or in memory as a whole).
func applyBase(b testing.TB, d *Driver, id string) int64 {
	b.Helper()
	ctx := context.Background()
	must(b, d.Create(ctx, id, "", nil))
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(layergen.Base(pw, benchSpec)) }()
	n, err := d.ApplyDiff(ctx, id, pr)
	pr.Close()
	must(b, err)
	return n
}

// BenchmarkCreateChild measures Create of a child of the generated base:
// vfs copies the whole parent, so this is the cost of starting a
// container (or of each image layer) on vfs. SetBytes is the base's
// content, so MB/s is copy throughput. Sub-benchmarks: the filesystem
// (ext4 under /var/tmp on this machine; xfs with reflink on a loop
// device) and the copy mode, with cp -a on the same tree as the yardstick.
func BenchmarkCreateChild(b *testing.B) {
	for _, fs := range []string{"var-tmp", "xfs-reflink"} {
		b.Run(fs, func(b *testing.B) {
			var root string
			if fs == "var-tmp" {
				root = tempRoot(b)
			} else {
				root = filepath.Join(loopFS(b, 2<<30, "mkfs.xfs", "-q", "-m", "reflink=1"), "root")
			}
			d := openDriver(b, root, Options{})
			size := applyBase(b, d, "base")
			must(b, d.Close())
			for _, mode := range []CopyMode{CopyAuto, CopyPlain} {
				b.Run(string(mode), func(b *testing.B) {
					benchCreate(b, root, mode, size)
				})
			}
			// The peer on the same tree and filesystem, for a figure that
			// means something on a busy machine: GNU cp -a (which clones
			// where it can, like copymode=auto) followed by sync -f.
			b.Run("cp-a", func(b *testing.B) {
				b.SetBytes(size)
				src := filepath.Join(root, layersDir, "base")
				for i := 0; b.Loop(); i++ {
					dst := filepath.Join(root, stagingDir, fmt.Sprint("cp-", i))
					if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
						b.Fatalf("cp -a: %v: %s", err, out)
					}
					must(b, fsutil.Syncfs(dst))
					b.StopTimer()
					must(b, removeTree(dst))
					b.StartTimer()
				}
			})
		})
	}
}

func benchCreate(b *testing.B, root string, mode CopyMode, size int64) {
	ctx := context.Background()
	d := openDriver(b, root, Options{CopyMode: mode})
	defer d.Close()
	b.SetBytes(size)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("child-%d", i)
		i++
		must(b, d.Create(ctx, id, "base", &driver.CreateOpts{Writable: true}))
		b.StopTimer()
		must(b, d.Remove(ctx, id))
		b.StartTimer()
	}
}
