package conformance

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/conformance/fixtures"
	"github.com/stratafs/strata/driver"
)

// noisyTar streams a tar of files of incompressible bytes (holes would
// cost no disk), total bytes in all, without holding it in memory.
func noisyTar(total int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		rng := rand.NewChaCha8([32]byte{12})
		const per = 4 << 20
		var err error
		for i := 0; int64(i)*per < total && err == nil; i++ {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("fill%04d", i), Mode: 0o644, Size: per, ModTime: epoch()})
			if err == nil {
				_, err = io.CopyN(tw, rng, per)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// testNoSpace: an ApplyDiff that fills the filesystem fails with an error
// wrapping driver.ErrNoSpace (so callers and metrics can tell a full disk
// from a bad tar), leaves no half layer behind, and once the layer is
// removed the driver works again. The backend gets its own small
// filesystem: the first of ext4 and btrfs it can run on.
func testNoSpace(t *testing.T, e *env) {
	var root string
	var d driver.Driver
	for _, fs := range []struct {
		typ  string
		size int64
	}{{"ext4", 64 << 20}, {"btrfs", fixtures.MinBtrfsSize}} {
		root = filepath.Join(fixtures.Filesystem(t, fs.typ, fs.size), "root")
		var err error
		d, err = e.b.New(e.ctx, root)
		if err == nil {
			t.Logf("on a %d MiB %s", fs.size>>20, fs.typ)
			fill := fs.size * 3 / 2
			defer d.Close()
			noSpaceOn(t, e, d, fill)
			return
		}
		if !errors.Is(err, driver.ErrNotSupported) {
			t.Fatalf("New on a small %s: %v", fs.typ, err)
		}
		t.Logf("not on %s: %v", fs.typ, err)
	}
	t.Skipf("%s runs on neither a small ext4 nor a small btrfs", e.b.Name)
}

func noSpaceOn(t *testing.T, e *env, d driver.Driver, fill int64) {
	if err := d.Create(e.ctx, "big", "", nil); err != nil {
		t.Fatal(err)
	}
	_, err := d.ApplyDiff(e.ctx, "big", noisyTar(fill))
	if err == nil {
		t.Fatalf("ApplyDiff of %d MiB onto a smaller filesystem succeeded", fill>>20)
	}
	if !errors.Is(err, driver.ErrNoSpace) {
		t.Errorf("ApplyDiff on a full filesystem = %v; want an error wrapping driver.ErrNoSpace", err)
	} else {
		t.Logf("full: %v", err)
	}
	if d.Exists("big") {
		if err := d.Remove(e.ctx, "big"); err != nil {
			t.Errorf("Remove after a full ApplyDiff: %v", err)
		}
	}
	// The space is back: a layer applies again. btrfs gives a removed
	// subvolume's space back asynchronously, so a call may still find the
	// disk full; then it must say so with ErrNoSpace.
	small := smallLayer(t, "after", 3)
	err = d.Create(e.ctx, "after", "", nil)
	if err == nil {
		_, err = d.ApplyDiff(e.ctx, "after", bytes.NewReader(small))
	}
	switch {
	case err == nil:
		if err := d.Remove(e.ctx, "after"); err != nil {
			t.Errorf("Remove: %v", err)
		}
	case errors.Is(err, driver.ErrNoSpace):
		t.Logf("space not back yet after Remove: %v", err)
	default:
		t.Errorf("Create+ApplyDiff after the full layer was removed: %v", err)
	}
}
