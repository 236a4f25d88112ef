package vfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stratafs/strata/driver"
)

func TestCreateCopiesParentTree(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	base := filledBase(t, d)
	must(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true, Labels: map[string]string{"k": "v"}}))
	dir, err := d.Get(ctx, "ctr", nil)
	must(t, err)
	defer d.Put(ctx, "ctr")
	if dir == base {
		t.Fatalf("child shares the parent's directory %s", dir)
	}
	requireSameTree(t, base, dir)
	// The copy is independent: writing the child leaves the parent alone.
	must(t, os.WriteFile(filepath.Join(dir, "etc/hostname"), []byte("changed"), 0o644))
	if b, _ := os.ReadFile(filepath.Join(base, "etc/hostname")); string(b) != "strata\n" {
		t.Errorf("parent changed through child: %q", b)
	}
	// Hardlinks stay links inside the copy, not across layers.
	var a, b, c = stat(t, filepath.Join(dir, "usr/bin/su")), stat(t, filepath.Join(dir, "usr/bin/sudo")), stat(t, filepath.Join(base, "usr/bin/su"))
	if !os.SameFile(a, b) || os.SameFile(a, c) {
		t.Errorf("hardlinks: su~sudo %v (want true), child~parent %v (want false)", os.SameFile(a, b), os.SameFile(a, c))
	}
	cu, err := d.CopyUp(ctx, "ctr")
	must(t, err)
	// hostname, key, su (3 names, 1 inode), ping, sparse
	if cu.CopiedFiles != 5 || cu.CopiedBytes != int64(len("strata\n")+5000+len("setuid")+len("ping binary")+16<<20) {
		t.Errorf("CopyUp = %+v, want 5 files", cu)
	}
	if cu.NewFiles != 0 || cu.NewBytes != 0 {
		t.Errorf("CopyUp New* = %+v, documented as 0", cu)
	}
	infos, err := d.Layers(ctx)
	must(t, err)
	if len(infos) != 2 || infos[1].ID != "ctr" || infos[1].Parent != "base" || !infos[1].Writable || infos[1].Labels["k"] != "v" {
		t.Errorf("Layers = %+v", infos)
	}
}

func stat(t testing.TB, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Lstat(p)
	must(t, err)
	return fi
}

func TestBaseLayerIsEmptyDir(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	must(t, d.Create(ctx, "b", "", nil))
	dir, err := d.Get(ctx, "b", nil)
	must(t, err)
	ents, err := os.ReadDir(dir)
	must(t, err)
	if len(ents) != 0 {
		t.Errorf("new base layer holds %v", ents)
	}
	if fi := stat(t, dir); fi.Mode().Perm() != 0o755 {
		t.Errorf("base layer mode %v, want 0755", fi.Mode())
	}
	cu, err := d.CopyUp(ctx, "b")
	must(t, err)
	if cu != (driver.CopyUpStats{}) {
		t.Errorf("CopyUp of a base layer = %+v, want zeros", cu)
	}
	must(t, d.Put(ctx, "b"))
}

func TestBadInputChangesNothing(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	d := openDriver(t, root, Options{})
	must(t, d.Create(ctx, "base", "", nil))
	must(t, d.Create(ctx, "child", "base", nil))
	cases := []struct {
		name, id, parent string
		opts             *driver.CreateOpts
		want             []error
	}{
		{"empty id", "", "", nil, []error{driver.ErrInvalidID}},
		{"dotdot id", "..", "", nil, []error{driver.ErrInvalidID}},
		{"slash id", "a/b", "base", nil, []error{driver.ErrInvalidID}},
		{"long id", strings.Repeat("x", driver.MaxIDLength+1), "", nil, []error{driver.ErrInvalidID}},
		{"taken id", "base", "", nil, []error{driver.ErrLayerExists}},
		{"missing parent", "new", "nope", nil, []error{driver.ErrLayerNotFound}},
		{"invalid parent", "new", "../base", nil, []error{driver.ErrLayerNotFound, driver.ErrInvalidID}},
		{"size limit", "new", "base", &driver.CreateOpts{SizeLimit: 1 << 20}, []error{driver.ErrNotSupported}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			requireUnchanged(t, root, func() {
				err := d.Create(ctx, c.id, c.parent, c.opts)
				for _, w := range c.want {
					if !errors.Is(err, w) {
						t.Errorf("Create(%q, %q) = %v, want %v", c.id, c.parent, err, w)
					}
				}
				var le *driver.LayerError
				if !errors.As(err, &le) || le.Op != "create" {
					t.Errorf("error %v is not a create *LayerError", err)
				}
			})
		})
	}
	requireUnchanged(t, root, func() {
		for _, err := range []error{d.Remove(ctx, "nope"), d.Remove(ctx, "../x"), d.Put(ctx, "nope")} {
			if !errors.Is(err, driver.ErrLayerNotFound) && !errors.Is(err, driver.ErrInvalidID) {
				t.Errorf("got %v, want not found or invalid", err)
			}
		}
		if _, err := d.Get(ctx, "nope", nil); !errors.Is(err, driver.ErrLayerNotFound) {
			t.Errorf("Get(nope) = %v", err)
		}
		if err := d.Remove(ctx, "base"); !errors.Is(err, driver.ErrHasChildren) {
			t.Errorf("Remove(base) with a child = %v, want ErrHasChildren", err)
		}
		if _, err := d.ApplyDiff(ctx, "base", strings.NewReader("")); !errors.Is(err, driver.ErrHasChildren) {
			t.Errorf("ApplyDiff(base) with a child = %v, want ErrHasChildren", err)
		}
		if err := d.Put(ctx, "child"); err == nil {
			t.Error("Put without Get succeeded")
		}
	})
}

func TestGetPutRefcount(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	must(t, d.Create(ctx, "l", "", nil))
	p1, err := d.Get(ctx, "l", nil)
	must(t, err)
	p2, err := d.Get(ctx, "l", &driver.MountOpts{ReadOnly: true})
	must(t, err)
	if p1 != p2 {
		t.Errorf("two Gets gave %s and %s", p1, p2)
	}
	for i := 0; i < 2; i++ {
		if err := d.Remove(ctx, "l"); !errors.Is(err, driver.ErrLayerInUse) {
			t.Fatalf("Remove while mounted = %v, want ErrLayerInUse", err)
		}
		if _, err := d.ApplyDiff(ctx, "l", strings.NewReader("")); !errors.Is(err, driver.ErrLayerInUse) {
			t.Fatalf("ApplyDiff while mounted = %v, want ErrLayerInUse", err)
		}
		must(t, d.Put(ctx, "l"))
	}
	if err := d.Put(ctx, "l"); err == nil {
		t.Fatal("third Put after two Gets succeeded")
	}
	must(t, d.Remove(ctx, "l"))
	if d.Exists("l") {
		t.Error("removed layer exists")
	}
	if _, err := os.Lstat(p1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed layer's dir: %v", err)
	}
}

func TestReopenSeesEveryLayer(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	d := openDriver(t, root, Options{})
	base := filledBase(t, d)
	parent := "base"
	for i := 0; i < 5; i++ {
		id := "l" + strconv.Itoa(i)
		must(t, d.Create(ctx, id, parent, &driver.CreateOpts{Writable: i == 4}))
		parent = id
	}
	before, err := d.Layers(ctx)
	must(t, err)
	must(t, d.Close())
	d2 := openDriver(t, root, Options{})
	after, err := d2.Layers(ctx)
	must(t, err)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("after reopen:\n%v\nwant\n%v", after, before)
	}
	if got := d2.Status(ctx).Get("Recovered On Open"); got != "nothing to recover" {
		t.Errorf("clean reopen recovered %q", got)
	}
	dir, err := d2.Get(ctx, "l4", nil)
	must(t, err)
	requireSameTree(t, base, dir)
	must(t, d2.Put(ctx, "l4"))
	cu, err := d2.CopyUp(ctx, "l4")
	must(t, err)
	if cu.CopiedFiles != 5 {
		t.Errorf("CopyUp after reopen = %+v", cu)
	}
}

func TestCloseIsFinal(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	must(t, d.Create(ctx, "l", "", nil))
	must(t, d.Close())
	must(t, d.Close())
	if d.Exists("l") {
		t.Error("Exists after Close")
	}
	_, gerr := d.Get(ctx, "l", nil)
	_, aerr := d.ApplyDiff(ctx, "l", strings.NewReader(""))
	_, serr := d.DiffSize(ctx, "l")
	_, lerr := d.Layers(ctx)
	for i, err := range []error{d.Create(ctx, "m", "", nil), d.Remove(ctx, "l"), gerr, d.Put(ctx, "l"), aerr, serr, lerr} {
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("call %d after Close = %v, want ErrClosed", i, err)
		}
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	d := openDriver(t, root, Options{})
	must(t, d.Create(ctx, "a", "", nil))
	s := d.Status(ctx)
	if s.Driver != "vfs" || s.Root != root || s.Layers != 1 || s.NativeDiff {
		t.Errorf("Status = %+v", s)
	}
	if s.BackingFS != backingFS("/var/tmp") || strings.HasPrefix(s.BackingFS, "unknown") {
		t.Errorf("BackingFS = %q", s.BackingFS)
	}
	for _, k := range []string{"Backing Filesystem", "Layers", "Copy Mode", "Reflink", "Recovered On Open"} {
		if s.Get(k) == "" {
			t.Errorf("Status has no %q: %v", k, s.Info)
		}
	}
}

func TestConcurrentLayers(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	must(t, d.Create(ctx, "base", "", nil))
	dir, err := d.Get(ctx, "base", nil)
	must(t, err)
	for i := 0; i < 50; i++ {
		must(t, os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), []byte("x"), 0o644))
	}
	must(t, d.Put(ctx, "base"))
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				steps := []func() error{
					func() error { return d.Create(ctx, id, "base", &driver.CreateOpts{Writable: true}) },
					func() error { _, err := d.Get(ctx, id, nil); return err },
					func() error { _, err := d.Get(ctx, "base", nil); return err },
					func() error { return d.Put(ctx, "base") },
					func() error { return d.Put(ctx, id) },
					func() error { return d.Remove(ctx, id) },
				}
				for _, s := range steps {
					if err := s(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := d.store.Len(); n != 1 {
		t.Errorf("%d records left, want only base", n)
	}
	for _, sub := range []string{layersDir, stagingDir, trashDir} {
		ents, _ := os.ReadDir(filepath.Join(d.root, sub))
		if want := map[string]int{layersDir: 1}[sub]; len(ents) != want {
			t.Errorf("%s holds %d entries, want %d", sub, len(ents), want)
		}
	}
}

func TestRemoveLeavesNoTrash(t *testing.T) {
	ctx := context.Background()
	d := openDriver(t, tempRoot(t), Options{})
	filledBase(t, d)
	must(t, d.Create(ctx, "c", "base", nil))
	must(t, d.Remove(ctx, "c"))
	must(t, d.Remove(ctx, "base"))
	for _, sub := range []string{layersDir, stagingDir, trashDir} {
		if ents, _ := os.ReadDir(filepath.Join(d.root, sub)); len(ents) != 0 {
			t.Errorf("%s not empty after removing every layer: %v", sub, ents)
		}
	}
	if _, ok := d.store.Get("c"); ok {
		t.Error("record of removed layer left")
	}
}
