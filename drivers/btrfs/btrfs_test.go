//go:build linux && cgo

package btrfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/conformance/fixtures"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/store"
)

// newTestDriver opens a driver on a fresh loop-backed btrfs of size bytes.
func newTestDriver(t testing.TB, size int64, opts Options) (*Driver, string) {
	t.Helper()
	mnt := fixtures.Btrfs(t, size)
	root := filepath.Join(mnt, "strata", "btrfs")
	d, err := New(context.Background(), root, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d.(*Driver), root
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// layerTar builds a tar of regular files name -> content.
func layerTar(t testing.TB, files map[string]string) io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}))
		_, err := tw.Write([]byte(body))
		must(t, err)
	}
	must(t, tw.Close())
	return &buf
}

func TestProbe(t *testing.T) {
	ctx := context.Background()
	var st unix.Statfs_t
	must(t, unix.Statfs("/var/tmp", &st))
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		if err := Probe(ctx, "/var/tmp/does/not/exist"); !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "not btrfs") {
			t.Errorf("Probe on non-btrfs = %v, want ErrNotSupported saying why", err)
		}
		if _, err := New(ctx, "/var/tmp/strata-btrfs-probe", Options{}); !errors.Is(err, driver.ErrNotSupported) {
			t.Errorf("New on non-btrfs = %v, want ErrNotSupported", err)
		}
	}
	mnt := fixtures.Btrfs(t, 0)
	if err := Probe(ctx, filepath.Join(mnt, "not", "yet")); err != nil {
		t.Errorf("Probe on btrfs = %v", err)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions([]string{"quota=always", "size=1.5G"})
	if err == nil {
		t.Errorf("size=1.5G parsed as %+v, want an error", o)
	}
	o, err = ParseOptions([]string{"btrfs.quota=simple", "size=512Mi", "async_remove=true", "fast_diff=false"})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Quota: QuotaSimple, DefaultSizeLimit: 512 << 20, AsyncRemove: true, NoFastDiff: true}
	if o != want {
		t.Errorf("ParseOptions = %+v, want %+v", o, want)
	}
	for _, bad := range []string{"quota=maybe", "size=-1", "size=10X", "async_remove=perhaps", "colour=blue", "novalue"} {
		if _, err := ParseOptions([]string{bad}); err == nil || !strings.Contains(err.Error(), "btrfs") {
			t.Errorf("ParseOptions(%q) = %v, want a clear error", bad, err)
		}
	}
}

func TestLifecycle(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async_remove=%v", async), func(t *testing.T) { testLifecycle(t, Options{AsyncRemove: async}) })
	}
}

// testLifecycle ends with Close: background deletes must be done by then.
func testLifecycle(t *testing.T, opts Options) {
	d, root := newTestDriver(t, 0, opts)
	ctx := context.Background()
	must(t, d.Create(ctx, "base", "", nil))
	n, err := d.ApplyDiff(ctx, "base", layerTar(t, map[string]string{"etc/hello": "hi\n"}))
	must(t, err)
	if n != 3 {
		t.Errorf("ApplyDiff = %d bytes, want 3", n)
	}
	must(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true}))
	dir, err := d.Get(ctx, "ctr", nil)
	must(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "etc/hello"))
	if err != nil || string(b) != "hi\n" {
		t.Fatalf("child sees %q, %v", b, err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o644))
	// A read-only layer is a read-only subvolume.
	bdir, err := d.Get(ctx, "base", nil)
	must(t, err)
	if err := os.WriteFile(filepath.Join(bdir, "nope"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write into read-only layer = %v, want EROFS", err)
	}
	must(t, d.Put(ctx, "base"))
	if err := d.Remove(ctx, "ctr"); !errors.Is(err, driver.ErrLayerInUse) {
		t.Errorf("Remove of a layer in use = %v, want ErrLayerInUse", err)
	}
	must(t, d.Put(ctx, "ctr"))
	if err := d.Remove(ctx, "base"); !errors.Is(err, driver.ErrHasChildren) {
		t.Errorf("Remove of a parent = %v, want ErrHasChildren", err)
	}
	ch, err := d.Changes(ctx, "ctr")
	must(t, err)
	if fmt.Sprint(ch) != "[A /new]" {
		t.Errorf("Changes = %v, want [A /new]", ch)
	}
	must(t, d.Remove(ctx, "ctr"))
	must(t, d.Remove(ctx, "base"))
	must(t, d.Close())
	if left := subvolsUnder(t, root); len(left) != 0 {
		t.Errorf("subvolumes left after removing every layer: %v", left)
	}
}

// subvolsUnder lists the subvolumes below dir (by walking: tests only).
func subvolsUnder(t testing.TB, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() || p == dir {
			return nil
		}
		if cbtrfs.IsSubvolume(p) == nil {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestApplyDiffBadTarChangesNothing(t *testing.T) {
	d, _ := newTestDriver(t, 0, Options{})
	ctx := context.Background()
	must(t, d.Create(ctx, "base", "", nil))
	_, err := d.ApplyDiff(ctx, "base", layerTar(t, map[string]string{"a": "1"}))
	must(t, err)
	must(t, d.Create(ctx, "l2", "base", &driver.CreateOpts{Writable: true}))
	full := layerTar(t, map[string]string{"b": strings.Repeat("b", 5000), "c": "3"}).(*bytes.Buffer).Bytes()
	if _, err := d.ApplyDiff(ctx, "l2", bytes.NewReader(full[:len(full)/2])); err == nil {
		t.Fatal("ApplyDiff of a truncated tar succeeded")
	}
	dir, err := d.Get(ctx, "l2", nil)
	must(t, err)
	defer d.Put(ctx, "l2")
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "a" {
		t.Errorf("after a failed ApplyDiff the layer holds %v, want just a", ents)
	}
	if !d.Exists("l2") {
		t.Error("layer gone after a failed ApplyDiff")
	}
}

func TestRecoverAfterCrash(t *testing.T) {
	d, root := newTestDriver(t, 0, Options{})
	ctx := context.Background()
	must(t, d.Create(ctx, "keep", "", nil))
	must(t, d.Create(ctx, "half", "", &driver.CreateOpts{Writable: true}))
	must(t, d.Close())
	// What a kill leaves: a subvolume without record (Create cut short), a
	// layer whose ApplyDiff was mid-swap, staging and trash leftovers.
	must(t, cbtrfs.SubvolCreate(filepath.Join(root, "layers", "orphan")))
	must(t, cbtrfs.SubvolCreate(filepath.Join(root, "staging", "keep.x")))
	must(t, cbtrfs.SubvolCreate(filepath.Join(root, "trash", "gone.y")))
	must(t, os.Mkdir(filepath.Join(root, "layers", "plaindir"), 0o755))
	st, err := store.Open(filepath.Join(root, "records"))
	must(t, err)
	must(t, st.Update("half", func(r *store.Record) { r.State = store.Applying }))

	d2, err := New(ctx, root, Options{})
	must(t, err)
	defer d2.Close()
	if !d2.Exists("keep") || d2.Exists("half") {
		t.Errorf("after recovery: keep=%v half=%v, want true false", d2.Exists("keep"), d2.Exists("half"))
	}
	left := subvolsUnder(t, root)
	if len(left) != 1 || filepath.Base(left[0]) != "keep" {
		t.Errorf("subvolumes after recovery: %v, want only layers/keep", left)
	}
	if _, err := os.Stat(filepath.Join(root, "layers", "plaindir")); !os.IsNotExist(err) {
		t.Errorf("plain leftover dir not swept: %v", err)
	}
}

func TestRemoveNestedSubvolumes(t *testing.T) {
	d, root := newTestDriver(t, 0, Options{})
	ctx := context.Background()
	must(t, d.Create(ctx, "ctr", "", &driver.CreateOpts{Writable: true}))
	dir, err := d.Get(ctx, "ctr", nil)
	must(t, err)
	// A container that makes subvolumes of its own, one of them read-only
	// with another inside it.
	must(t, os.MkdirAll(filepath.Join(dir, "var/lib"), 0o755))
	must(t, cbtrfs.SubvolCreate(filepath.Join(dir, "var/lib/sv1")))
	must(t, cbtrfs.SubvolCreate(filepath.Join(dir, "var/lib/sv1/sv2")))
	must(t, os.WriteFile(filepath.Join(dir, "var/lib/sv1/sv2/f"), []byte("x"), 0o644))
	must(t, setReadOnly(filepath.Join(dir, "var/lib/sv1"), true))
	must(t, cbtrfs.SubvolCreate(filepath.Join(dir, "sv3")))
	must(t, d.Put(ctx, "ctr"))
	must(t, d.Remove(ctx, "ctr"))
	if left := subvolsUnder(t, root); len(left) != 0 {
		t.Errorf("subvolumes left: %v", left)
	}
}

func TestStatus(t *testing.T) {
	d, _ := newTestDriver(t, 0, Options{})
	ctx := context.Background()
	must(t, d.Create(ctx, "a", "", nil))
	s := d.Status(ctx)
	if s.Driver != "btrfs" || s.Layers != 1 || s.BackingFS != "btrfs" {
		t.Errorf("Status = %+v", s)
	}
	if dev := s.Get("Backing device"); !strings.HasPrefix(dev, "/dev/loop") {
		t.Errorf("Backing device = %q, want the loop device", dev)
	}
	if q := s.Get("Quota"); q != "off" {
		t.Errorf("Quota = %q before any limit, want off", q)
	}
	must(t, d.Create(ctx, "b", "", &driver.CreateOpts{SizeLimit: 1 << 20}))
	if q := d.Status(ctx).Get("Quota"); q != "on" {
		t.Errorf("Quota = %q after a limited layer, want on", q)
	}
}
