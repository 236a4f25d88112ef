//go:build linux && cgo

package btrfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
)

// baseTree is the parent every scenario changes: files, dirs, symlinks,
// a hardlink pair, a fifo and xattrs.
func baseTree(t testing.TB) io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2022, 1, 2, 3, 4, 5, 6789, time.UTC)
	add := func(h tar.Header, body string) {
		h.ModTime = mt
		h.Format = tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		must(t, tw.WriteHeader(&h))
		_, err := tw.Write([]byte(body))
		must(t, err)
	}
	for _, d := range []string{"d1", "d1/sub", "d1/sub/deep", "d2", "d3", "d3/x", "keep", "empty"} {
		add(tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}, "")
	}
	for i := 0; i < 40; i++ {
		dir := []string{"d1", "d1/sub", "d1/sub/deep", "d2", "d3", "d3/x", "keep", ""}[i%8]
		add(tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(dir, fmt.Sprintf("f%02d", i))}, fmt.Sprintf("content %d\n", i))
	}
	add(tar.Header{Typeflag: tar.TypeReg, Name: "d2/xattr", PAXRecords: map[string]string{"SCHILY.xattr.user.color": "blue"}}, "x")
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "d2/link", Linkname: "../d1/f00", Mode: 0o777}, "")
	add(tar.Header{Typeflag: tar.TypeReg, Name: "d2/hl-a"}, "shared\n")
	add(tar.Header{Typeflag: tar.TypeLink, Name: "d3/hl-b", Linkname: "d2/hl-a"}, "")
	add(tar.Header{Typeflag: tar.TypeFifo, Name: "d3/fifo"}, "")
	// Two directories with the same names inside, for swaps.
	for i, twin := range []string{"twin1", "twin2"} {
		add(tar.Header{Typeflag: tar.TypeDir, Name: twin + "/", Mode: 0o755}, "")
		add(tar.Header{Typeflag: tar.TypeReg, Name: twin + "/same"}, strings.Repeat("t", i+1))
	}
	must(t, tw.Close())
	return &buf
}

// mutation is one generated change made through a writable layer's path.
type mutation struct {
	name string
	fn   func(dir string) error
}

func p(dir string, rel ...string) string { return filepath.Join(append([]string{dir}, rel...)...) }

func mutations() []mutation {
	old := time.Date(2022, 1, 2, 3, 4, 5, 6789, time.UTC)
	return []mutation{
		{"add file", func(d string) error { return os.WriteFile(p(d, "d1/new"), []byte("new"), 0o600) }},
		{"add dir tree", func(d string) error {
			if err := os.MkdirAll(p(d, "n1/n2"), 0o750); err != nil {
				return err
			}
			return os.WriteFile(p(d, "n1/n2/f"), []byte("f"), 0o644)
		}},
		{"add symlink", func(d string) error { return os.Symlink("/etc/passwd", p(d, "keep/sl")) }},
		{"add fifo", func(d string) error { return unix.Mkfifo(p(d, "d1/sub/ff"), 0o600) }},
		{"modify content", func(d string) error { return appendTo(p(d, "d1/f00"), "more") }},
		{"rewrite same size, old mtime", func(d string) error {
			if err := os.WriteFile(p(d, "d2/f03"), []byte("CONTENT 3\n"), 0o644); err != nil {
				return err
			}
			return os.Chtimes(p(d, "d2/f03"), old, old)
		}},
		{"touch mtime only", func(d string) error { return os.Chtimes(p(d, "keep/f06"), old, time.Unix(1e9, 5)) }},
		{"read only (atime)", func(d string) error {
			_, err := os.ReadFile(p(d, "d1/sub/f01"))
			if err == nil {
				err = os.Chtimes(p(d, "d1/sub/f01"), time.Unix(2e9, 0), old)
			}
			return err
		}},
		{"delete file", func(d string) error { return os.Remove(p(d, "d3/f04")) }},
		{"delete dir", func(d string) error { return os.RemoveAll(p(d, "d1/sub")) }},
		{"delete one hardlink", func(d string) error { return os.Remove(p(d, "d3/hl-b")) }},
		{"rename file in dir", func(d string) error { return os.Rename(p(d, "d2/f11"), p(d, "d2/f11.renamed")) }},
		{"rename file across dirs", func(d string) error { return os.Rename(p(d, "d3/x/f05"), p(d, "keep/moved")) }},
		{"rename dir", func(d string) error { return os.Rename(p(d, "d3"), p(d, "d3-renamed")) }},
		{"move dir into new dir", func(d string) error {
			if err := os.Mkdir(p(d, "box"), 0o755); err != nil {
				return err
			}
			return os.Rename(p(d, "d1/sub"), p(d, "box/sub"))
		}},
		{"rename over file", func(d string) error { return os.Rename(p(d, "f07"), p(d, "keep/f14")) }},
		{"swap names", func(d string) error {
			if err := os.Rename(p(d, "d2/f03"), p(d, "d2/tmp")); err != nil {
				return err
			}
			if err := os.Rename(p(d, "d2/f19"), p(d, "d2/f03")); err != nil {
				return err
			}
			return os.Rename(p(d, "d2/tmp"), p(d, "d2/f19"))
		}},
		{"chmod file", func(d string) error { return os.Chmod(p(d, "d1/f08"), 0o600) }},
		{"chmod dir", func(d string) error { return os.Chmod(p(d, "d2"), 0o700) }},
		{"chown", func(d string) error { return os.Lchown(p(d, "keep/f22"), 1000, 1000) }},
		{"set xattr", func(d string) error { return unix.Lsetxattr(p(d, "d1/f16"), "user.k", []byte("v"), 0) }},
		{"change xattr", func(d string) error { return unix.Lsetxattr(p(d, "d2/xattr"), "user.color", []byte("red"), 0) }},
		{"remove xattr", func(d string) error { return unix.Lremovexattr(p(d, "d2/xattr"), "user.color") }},
		{"xattr on dir", func(d string) error { return unix.Lsetxattr(p(d, "empty"), "user.dir", []byte("1"), 0) }},
		{"hardlink to old file", func(d string) error { return os.Link(p(d, "d1/f24"), p(d, "keep/hl-new")) }},
		{"many long hardlinks (big INODE_REF, EXTREF items)", func(d string) error {
			for i := 0; i < 100; i++ {
				name := fmt.Sprintf("%03d-%s", i, strings.Repeat("l", 200))
				if err := os.Link(p(d, "d1/f32"), p(d, "keep", name)); err != nil {
					return err
				}
			}
			return nil
		}},
		{"modify through hardlink", func(d string) error { return appendTo(p(d, "d3/hl-b"), "x") }},
		{"file becomes dir", func(d string) error {
			if err := os.Remove(p(d, "d2/f27")); err != nil {
				return err
			}
			if err := os.Mkdir(p(d, "d2/f27"), 0o755); err != nil {
				return err
			}
			return os.WriteFile(p(d, "d2/f27/in"), nil, 0o644)
		}},
		{"dir becomes file", func(d string) error {
			if err := os.RemoveAll(p(d, "d3/x")); err != nil {
				return err
			}
			return os.WriteFile(p(d, "d3/x"), []byte("now a file"), 0o644)
		}},
		{"dir replaced by other dir", func(d string) error {
			if err := os.RemoveAll(p(d, "d1/sub")); err != nil {
				return err
			}
			return os.Rename(p(d, "keep"), p(d, "d1/sub"))
		}},
		{"swap dirs with same names inside", func(d string) error {
			if err := os.Rename(p(d, "twin1"), p(d, "tmp")); err != nil {
				return err
			}
			if err := os.Rename(p(d, "twin2"), p(d, "twin1")); err != nil {
				return err
			}
			return os.Rename(p(d, "tmp"), p(d, "twin2"))
		}},
		{"retarget symlink", func(d string) error {
			if err := os.Remove(p(d, "d2/link")); err != nil {
				return err
			}
			return os.Symlink("elsewhere", p(d, "d2/link"))
		}},
		{"truncate", func(d string) error { return os.Truncate(p(d, "d1/sub/deep/f02"), 0) }},
		{"delete and recreate same", func(d string) error {
			b, err := os.ReadFile(p(d, "f15"))
			if err == nil {
				err = os.Remove(p(d, "f15"))
			}
			if err == nil {
				err = os.WriteFile(p(d, "f15"), b, 0o644)
			}
			if err == nil {
				err = os.Chtimes(p(d, "f15"), old, old)
			}
			return err
		}},
	}
}

func appendTo(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkFastEqualsNaive compares the fast Changes and Diff of id with the
// naive ones, and fails if the fast path was not taken.
func checkFastEqualsNaive(t *testing.T, d *Driver, id string) {
	t.Helper()
	ctx := context.Background()
	rec, _ := d.store.Get(id)
	pdir, dir := d.layerPath(rec.Parent), d.layerPath(id)
	fast, err := fastChanges(ctx, pdir, dir, rec)
	if err != nil {
		t.Fatalf("fastChanges: %v", err)
	}
	naive, err := archive.Changes(ctx, pdir, dir)
	must(t, err)
	if !reflect.DeepEqual(fast, naive) && !(len(fast) == 0 && len(naive) == 0) {
		t.Fatalf("fast changes differ from naive:\nfast:  %v\nnaive: %v", fast, naive)
	}
	rc, err := d.Diff(ctx, id)
	ft := readAll(t, rc, err)
	rc, err = d.naive.Diff(ctx, id)
	nt := readAll(t, rc, err)
	if !bytes.Equal(ft, nt) {
		t.Fatalf("fast Diff tar (%d bytes) differs from naive (%d bytes)", len(ft), len(nt))
	}
}

func readAll(t testing.TB, rc io.ReadCloser, err error) []byte {
	t.Helper()
	must(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	must(t, err)
	return b
}

func TestFastDiffEqualsNaive(t *testing.T) {
	d, _ := newTestDriver(t, 0, Options{})
	ctx := context.Background()
	must(t, d.Create(ctx, "base", "", nil))
	_, err := d.ApplyDiff(ctx, "base", baseTree(t))
	must(t, err)
	muts := mutations()
	for i, m := range muts {
		t.Run(m.name, func(t *testing.T) {
			id := fmt.Sprintf("m%d", i)
			must(t, d.Create(ctx, id, "base", &driver.CreateOpts{Writable: true}))
			dir, err := d.Get(ctx, id, nil)
			must(t, err)
			must(t, m.fn(dir))
			must(t, d.Put(ctx, id))
			checkFastEqualsNaive(t, d, id)
		})
	}
	// Random sequences of the same kinds of change, on one layer each, and
	// on a child of an applied (not mounted) layer.
	for seed := int64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprintf("random-%d", seed), func(t *testing.T) {
			id := fmt.Sprintf("r%d", seed)
			must(t, d.Create(ctx, id, "base", &driver.CreateOpts{Writable: true}))
			dir, err := d.Get(ctx, id, nil)
			must(t, err)
			rnd := rand.New(rand.NewSource(seed))
			applied := 0
			for _, j := range rnd.Perm(len(muts)) {
				if applied == 8 {
					break
				}
				// Mutations whose paths an earlier one removed just fail.
				if muts[j].fn(dir) == nil {
					applied++
				}
			}
			must(t, d.Put(ctx, id))
			checkFastEqualsNaive(t, d, id)
		})
	}
	t.Run("applied layer", func(t *testing.T) {
		must(t, d.Create(ctx, "app", "base", nil))
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "d1/.wh.f00"}))
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "d2/added", Size: 1, Mode: 0o644}))
		_, err := tw.Write([]byte("a"))
		must(t, err)
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "d3/" + archive.WhiteoutOpaque}))
		must(t, tw.Close())
		_, err = d.ApplyDiff(ctx, "app", &buf)
		must(t, err)
		checkFastEqualsNaive(t, d, "app")
	})
}

// TestFastDiffFallsBack: where generation numbers cannot be trusted the
// driver uses the naive diff and still gives the right answer.
func TestFastDiffFallsBack(t *testing.T) {
	d, _ := newTestDriver(t, 0, Options{})
	ctx := context.Background()
	must(t, d.Create(ctx, "wbase", "", &driver.CreateOpts{Writable: true}))
	bdir, err := d.Get(ctx, "wbase", nil)
	must(t, err)
	must(t, os.WriteFile(p(bdir, "a"), []byte("1"), 0o644))
	must(t, d.Create(ctx, "child", "wbase", &driver.CreateOpts{Writable: true}))
	// The writable parent moves on after the snapshot.
	must(t, os.WriteFile(p(bdir, "b"), []byte("2"), 0o644))
	rec, _ := d.store.Get("child")
	if _, err := fastChanges(ctx, bdir, d.layerPath("child"), rec); !errors.Is(err, errNoFastDiff) {
		t.Fatalf("fastChanges with a changed parent = %v, want errNoFastDiff", err)
	}
	ch, err := d.Changes(ctx, "child")
	must(t, err)
	if fmt.Sprint(ch) != "[D /b]" {
		t.Errorf("Changes = %v, want [D /b]", ch)
	}
	must(t, d.Put(ctx, "wbase"))

	// A nested subvolume's files live in another tree, which the scan of
	// the layer's tree cannot see.
	must(t, d.Create(ctx, "nest", "wbase", &driver.CreateOpts{Writable: true}))
	ndir, err := d.Get(ctx, "nest", nil)
	must(t, err)
	must(t, cbtrfs.SubvolCreate(p(ndir, "sv")))
	must(t, os.WriteFile(p(ndir, "sv/inside"), []byte("x"), 0o644))
	must(t, d.Put(ctx, "nest"))
	rec, _ = d.store.Get("nest")
	if _, err := fastChanges(ctx, bdir, d.layerPath("nest"), rec); !errors.Is(err, errNoFastDiff) {
		t.Fatalf("fastChanges with a nested subvolume = %v, want errNoFastDiff", err)
	}
	ch, err = d.Changes(ctx, "nest")
	must(t, err)
	naive, err := archive.Changes(ctx, bdir, d.layerPath("nest"))
	must(t, err)
	if !reflect.DeepEqual(ch, naive) || fmt.Sprint(ch) != "[A /sv A /sv/inside]" {
		t.Errorf("Changes with a nested subvolume = %v, naive %v, want [A /sv A /sv/inside]", ch, naive)
	}

	// Diffing a child of a writable parent reads the parent's directories;
	// that must not count as a change of the parent (atime), or only the
	// first diff would be fast. Nor must reading the parent's files.
	must(t, d.Create(ctx, "wb2", "", &driver.CreateOpts{Writable: true}))
	b2, err := d.Get(ctx, "wb2", nil)
	must(t, err)
	must(t, os.MkdirAll(p(b2, "x/y"), 0o755))
	must(t, os.WriteFile(p(b2, "x/y/f"), nil, 0o644))
	must(t, os.WriteFile(p(b2, "x/g"), nil, 0o644))
	must(t, d.Put(ctx, "wb2"))
	must(t, d.Create(ctx, "c2", "wb2", &driver.CreateOpts{Writable: true}))
	c2, err := d.Get(ctx, "c2", nil)
	must(t, err)
	must(t, os.Remove(p(c2, "x/y/f")))
	must(t, d.Put(ctx, "c2"))
	rec, _ = d.store.Get("c2")
	for i := 0; i < 3; i++ {
		if _, err := fastChanges(ctx, b2, d.layerPath("c2"), rec); err != nil {
			t.Fatalf("fastChanges #%d on a child of a writable parent: %v", i+1, err)
		}
		_, err := os.ReadFile(p(b2, "x/g")) // updates its atime
		must(t, err)
	}
	checkFastEqualsNaive(t, d, "c2")
}
