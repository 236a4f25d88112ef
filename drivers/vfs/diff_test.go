package vfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fstree"
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

// TestBadTarChangesNothing applies bad tars to a layer fresh from Create
// (unpacked in place, rebuilt on failure), to one whose path was handed out
// (unpacked on a staged copy), and to base and child layers of each: every
// time the layer must be left exactly as it was, still usable.
func TestBadTarChangesNothing(t *testing.T) {
	ctx := context.Background()
	bad := map[string][]byte{
		"truncated": layergen.Tar(layergen.File("a", "whole"), layergen.Entry{Name: "b", Content: []byte("short"), Size: 1 << 20}),
		"escape":    layergen.Tar(layergen.File("etc/hostname", "overwritten"), layergen.Whiteout("usr"), layergen.File("../../escaped", "x")),
		"garbage":   []byte("not a tar at all, not even close to 512 bytes"),
	}
	root := tempRoot(t)
	d := openDriver(t, root, Options{})
	filledBase(t, d)
	for name, tarball := range bad {
		for _, parent := range []string{"", "base"} {
			for _, used := range []bool{false, true} {
				id := fmt.Sprintf("%s-%v-%v", name, parent != "", used)
				t.Run(id, func(t *testing.T) {
					must(t, d.Create(ctx, id, parent, nil))
					if used {
						_, err := d.Get(ctx, id, nil)
						must(t, err)
						must(t, d.Put(ctx, id))
					}
					before := snapshot(t, d.layerDir(id))
					if _, err := d.ApplyDiff(ctx, id, bytes.NewReader(tarball)); err == nil {
						t.Fatal("ApplyDiff of a bad tar succeeded")
					}
					if _, err := os.Lstat(filepath.Join(root, "escaped")); err == nil {
						t.Fatal("a tar entry escaped the layer")
					}
					if diff := fstree.Diff(before, snapshot(t, d.layerDir(id)), fstree.Options{}); diff != nil {
						t.Errorf("layer changed by a failed ApplyDiff:\n%s", strings.Join(diff, "\n"))
					}
					if !d.Exists(id) {
						t.Error("layer gone after a failed ApplyDiff")
					}
					if ents := listDir(t, filepath.Join(root, stagingDir)); len(ents) != 0 {
						t.Errorf("staging/ holds %v", ents)
					}
					// Still usable: a good tar applies.
					_, err := d.ApplyDiff(ctx, id, bytes.NewReader(layergen.Tar(layergen.File("good", "yes"))))
					must(t, err)
				})
			}
		}
	}
	must(t, d.Close())
	d = openDriver(t, root, Options{})
	if got := d.Status(ctx).Get("Recovered On Open"); got != "nothing to recover" {
		t.Errorf("reopen after failed applies recovered %q", got)
	}
}

// TestApplyOnUsedLayer applies to a layer written through its path: the
// staged path must give the same result as applying in place would.
func TestApplyOnUsedLayer(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	filledBase(t, d)
	tarball := layergen.Tar(layergen.Whiteout("usr/bin/su"), layergen.File("etc/new", "new"), layergen.Opaque("tmp"))
	must(t, d.Create(ctx, "fresh", "base", nil))
	must(t, d.Create(ctx, "used", "base", &driver.CreateOpts{Writable: true}))
	_, err := d.Get(ctx, "used", nil)
	must(t, err)
	must(t, d.Put(ctx, "used"))
	n1, err := d.ApplyDiff(ctx, "fresh", bytes.NewReader(tarball))
	must(t, err)
	n2, err := d.ApplyDiff(ctx, "used", bytes.NewReader(tarball))
	must(t, err)
	if n1 != n2 || n1 != 3 {
		t.Errorf("ApplyDiff sizes %d (in place) and %d (staged), want 3", n1, n2)
	}
	// Directories the tar changes without naming get the time of the apply.
	requireSameTreeOpts(t, d.layerDir("fresh"), d.layerDir("used"), fstree.Options{IgnoreRoot: true, IgnoreDirMtimes: true})
	if _, err := os.Lstat(filepath.Join(d.layerDir("used"), "usr/bin/sudo")); err != nil {
		t.Errorf("whiteout of one hardlink name removed another: %v", err)
	}
}
