package vfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/layergen"
	"github.com/stratafs/strata/internal/store"
)

func tarOfDir(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	must(t, archive.WriteDir(context.Background(), &buf, dir, archive.DiffOptions{}))
	return buf.Bytes()
}

func readDiff(t testing.TB, d *Driver, id string) []byte {
	t.Helper()
	rc, err := d.Diff(context.Background(), id)
	must(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	must(t, err)
	return b
}

func TestApplyDiffRoundTrip(t *testing.T) {
	ctx := context.Background()
	ref := filepath.Join(tempRoot(t), "ref")
	must(t, os.Mkdir(ref, 0o755))
	fillTree(t, ref)
	d := openDriver(t, tempRoot(t), Options{})
	must(t, d.Create(ctx, "base", "", nil))
	n, err := d.ApplyDiff(ctx, "base", bytes.NewReader(tarOfDir(t, ref)))
	must(t, err)
	requireSameContent(t, ref, d.layerDir("base"))
	size, err := d.DiffSize(ctx, "base")
	must(t, err)
	if n <= 0 || size != n {
		t.Errorf("ApplyDiff wrote %d, DiffSize says %d", n, size)
	}
	if rec, _ := d.store.Get("base"); rec.State != store.Ready || rec.Size != n {
		t.Errorf("record after apply: %+v", rec)
	}
	// Diff of a base layer is its whole tree: it rebuilds the same tree.
	must(t, d.Create(ctx, "again", "", nil))
	_, err = d.ApplyDiff(ctx, "again", bytes.NewReader(readDiff(t, d, "base")))
	must(t, err)
	requireSameContent(t, ref, d.layerDir("again"))
}

// TestChildDiffReplays changes a writable child through its path, and
// checks that its Diff applied on another copy of the parent gives the
// same tree, deletions (whiteouts) included.
func TestChildDiffReplays(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	filledBase(t, d)
	must(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true}))
	dir, err := d.Get(ctx, "ctr", nil)
	must(t, err)
	p := func(s string) string { return filepath.Join(dir, s) }
	must(t, os.WriteFile(p("etc/hostname"), []byte("container\n"), 0o644)) // 10 bytes
	must(t, os.Remove(p("etc/dangling")))
	must(t, os.RemoveAll(p("usr/bin")))
	must(t, os.MkdirAll(p("var/log"), 0o755))
	must(t, os.WriteFile(p("var/log/new"), []byte("12345"), 0o600))
	must(t, os.Link(p("var/log/new"), p("var/log/new-link")))
	must(t, os.Chmod(p("etc/ssl/key"), 0o400))
	must(t, d.Put(ctx, "ctr"))
	changes, err := d.Changes(ctx, "ctr")
	must(t, err)
	var got []string
	for _, c := range changes {
		got = append(got, c.String())
	}
	for _, want := range []string{"C /etc/hostname", "D /etc/dangling", "D /usr/bin", "A /var/log/new", "C /etc/ssl/key"} {
		if !strings.Contains(strings.Join(got, "\n")+"\n", want+"\n") {
			t.Errorf("Changes lack %q: %v", want, got)
		}
	}
	size, err := d.DiffSize(ctx, "ctr")
	must(t, err)
	// Measured from the changes: hostname (10) + key (5000, mode change) +
	// new (5, two names); never the parent's 16 MiB sparse file.
	if size != 10+5000+5 {
		t.Errorf("DiffSize of the writable layer = %d, want %d", size, 10+5000+5)
	}
	tarball := readDiff(t, d, "ctr")
	must(t, d.Create(ctx, "replay", "base", nil))
	_, err = d.ApplyDiff(ctx, "replay", bytes.NewReader(tarball))
	must(t, err)
	requireSameContent(t, d.layerDir("ctr"), d.layerDir("replay"))
	// A third layer deletes what the second added (whiteout through a chain).
	must(t, d.Create(ctx, "top", "replay", nil))
	_, err = d.ApplyDiff(ctx, "top", bytes.NewReader(layergen.Tar(layergen.Whiteout("var/log"), layergen.Opaque("etc"), layergen.File("etc/only", "x"))))
	must(t, err)
	ents, err := os.ReadDir(filepath.Join(d.layerDir("top"), "etc"))
	must(t, err)
	if len(ents) != 1 || ents[0].Name() != "only" {
		t.Errorf("opaque etc holds %v, want only \"only\"", ents)
	}
	if _, err := os.Lstat(filepath.Join(d.layerDir("top"), "var/log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout var/log: %v", err)
	}
}

func TestDiffHoldsLayer(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	must(t, d.Create(ctx, "l", "", nil))
	rc, err := d.Diff(ctx, "l")
	must(t, err)
	if err := d.Remove(ctx, "l"); !errors.Is(err, driver.ErrLayerInUse) {
		t.Errorf("Remove while a Diff streams = %v, want ErrLayerInUse", err)
	}
	must(t, rc.Close())
	must(t, rc.Close())
	must(t, d.Remove(ctx, "l"))
}

func TestFailedApplyLeavesHalfLayer(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		tarball []byte
	}{
		{"truncated", layergen.Tar(layergen.File("a", "whole"), layergen.Entry{Name: "b", Content: []byte("short"), Size: 1 << 20})},
		{"escape", layergen.Tar(layergen.File("a", "whole"), layergen.File("../../escaped", "x"))},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := tempRoot(t)
			d := openDriver(t, root, Options{})
			must(t, d.Create(ctx, "x", "", nil))
			must(t, d.Create(ctx, "y", "", nil))
			if _, err := d.ApplyDiff(ctx, "x", bytes.NewReader(c.tarball)); err == nil {
				t.Fatal("ApplyDiff of a bad tar succeeded")
			}
			if _, err := os.Lstat(filepath.Join(root, "escaped")); err == nil {
				t.Fatal("a tar entry escaped the layer")
			}
			if d.Exists("x") {
				t.Error("half-applied layer exists")
			}
			if _, err := d.Get(ctx, "x", nil); !errors.Is(err, driver.ErrLayerNotFound) {
				t.Errorf("Get of half-applied layer = %v", err)
			}
			if err := d.Create(ctx, "z", "x", nil); !errors.Is(err, driver.ErrLayerNotFound) {
				t.Errorf("Create on a half-applied parent = %v", err)
			}
			// The next driver on the root removes it and says so.
			must(t, d.Close())
			d = openDriver(t, root, Options{})
			if got := d.Status(ctx).Get("Recovered at open"); got != "removed 1 half-applied layer" {
				t.Errorf("recovered = %q", got)
			}
			if _, err := os.Lstat(d.layerDir("x")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("half-applied tree left: %v", err)
			}
			if !d.Exists("y") {
				t.Error("whole layer y lost in recovery")
			}
		})
	}
	t.Run("remove", func(t *testing.T) {
		d := openDriver(t, tempRoot(t), Options{})
		must(t, d.Create(ctx, "x", "", nil))
		if _, err := d.ApplyDiff(ctx, "x", strings.NewReader("not a tar at all, not even close to 512 bytes")); err == nil {
			t.Fatal("ApplyDiff of garbage succeeded")
		}
		must(t, d.Remove(ctx, "x"))
		must(t, d.Create(ctx, "x", "", nil))
	})
}
