package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	lg "github.com/stratafs/strata/internal/layergen"
)

func TestApplyEveryKind(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	mt := time.Date(2021, 5, 6, 7, 8, 9, 987654321, time.UTC)
	cp := string([]byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	tb := lg.Tar(
		lg.Entry{Name: "d/", Type: tar.TypeDir, Mode: 0o1777, UID: 7, GID: 8, ModTime: mt},
		lg.Entry{Name: "d/f", Content: []byte("hello"), Mode: 0o4755, UID: 1000, GID: 1001, ModTime: mt,
			Xattrs: map[string]string{"user.a": "1", "security.capability": cp, "trusted.overlay.opaque": "y"}},
		lg.Entry{Name: "d/sym", Type: tar.TypeSymlink, Link: "/d/f", UID: 5, GID: 6, ModTime: mt,
			Xattrs: map[string]string{"trusted.sym": "s"}},
		lg.Entry{Name: "d/hard", Type: tar.TypeLink, Link: "/d/f"},
		lg.Entry{Name: "d/null", Type: tar.TypeChar, Major: 1, Minor: 3, Mode: 0o666, ModTime: mt},
		lg.Entry{Name: "d/blk", Type: tar.TypeBlock, Major: 7, Minor: 200, Mode: 0o660, ModTime: mt},
		lg.Entry{Name: "d/fifo", Type: tar.TypeFifo, Mode: 0o640, ModTime: mt, Xattrs: map[string]string{"trusted.fifo": "f"}},
		lg.Entry{Name: "implicit/parent/f", Content: []byte("x")},
	)
	n, err := Apply(context.Background(), root, bytes.NewReader(tb), ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("Apply returned %d bytes, want 6", n)
	}
	var st unix.Stat_t
	check := func(p string, mode uint32, uid, gid uint32) {
		t.Helper()
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %#o owner %d:%d, want %#o %d:%d", p, st.Mode, st.Uid, st.Gid, mode, uid, gid)
		}
		if p != "d" && p != "d/hard" && p != "implicit/parent" && (st.Mtim.Sec != mt.Unix() || st.Mtim.Nsec != int64(mt.Nanosecond())) {
			t.Errorf("%s: mtime %v, want %v", p, time.Unix(st.Mtim.Unix()), mt)
		}
	}
	check("d", unix.S_IFDIR|0o1777, 7, 8)
	check("d/f", unix.S_IFREG|0o4755, 1000, 1001)
	check("d/sym", unix.S_IFLNK|0o777, 5, 6)
	check("d/null", unix.S_IFCHR|0o666, 0, 0)
	if st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("d/null rdev %d", st.Rdev)
	}
	check("d/blk", unix.S_IFBLK|0o660, 0, 0)
	check("d/fifo", unix.S_IFIFO|0o640, 0, 0)
	check("implicit/parent", unix.S_IFDIR|0o755, 0, 0)
	// Directory times are set last, so the children did not move them.
	if err := unix.Lstat(filepath.Join(root, "d"), &st); err != nil || st.Mtim.Sec != mt.Unix() || st.Mtim.Nsec != int64(mt.Nanosecond()) {
		t.Errorf("d: mtime %v, want %v", time.Unix(st.Mtim.Unix()), mt)
	}
	if l, _ := os.Readlink(filepath.Join(root, "d/sym")); l != "/d/f" {
		t.Errorf("symlink target %q", l)
	}
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(root, "d/f"), &a)
	unix.Lstat(filepath.Join(root, "d/hard"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlink: inodes %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(root, "d/f"), "security.capability", buf); err != nil || string(buf[:n]) != cp {
		t.Errorf("security.capability: %q %v (chown after setxattr would drop it)", buf[:n], err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(root, "d/f"), "user.a", buf); err != nil || string(buf[:n]) != "1" {
		t.Errorf("user.a: %q %v", buf[:n], err)
	}
	for p, want := range map[string]string{"d/sym": "trusted.sym", "d/fifo": "trusted.fifo"} {
		if n, err := unix.Lgetxattr(filepath.Join(root, p), want, buf); err != nil || n != 1 {
			t.Errorf("%s: %s: %v", p, want, err)
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "d/f"), "trusted.overlay.opaque", buf); err != unix.ENODATA {
		t.Errorf("overlay xattr from the tar was stored: %v", err)
	}
}

func TestApplyReplaces(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	apply(t, root, lg.Tar(lg.Dir("dir"), lg.File("dir/old", "o"), lg.File("file", "f"), lg.Symlink("link", "dir"),
		lg.Entry{Name: "keep", Type: tar.TypeDir, Mode: 0o700}, lg.File("keep/child", "c")), ApplyOptions{})
	apply(t, root, lg.Tar(
		lg.File("dir", "now a file"),           // a dir is replaced by a non-dir
		lg.Dir("file"), lg.File("file/x", "x"), // a file by a dir
		lg.Dir("link"), lg.File("link/y", "y"), // a symlink by a dir, not followed
		lg.Entry{Name: "keep", Type: tar.TypeDir, Mode: 0o750}, // dir + dir: metadata only
	), ApplyOptions{})
	if got := readFile(t, filepath.Join(root, "dir")); got != "now a file" {
		t.Errorf("dir: %q", got)
	}
	if got := readFile(t, filepath.Join(root, "file/x")); got != "x" {
		t.Errorf("file/x: %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(root, "link")); err != nil || !fi.IsDir() {
		t.Errorf("link not replaced by a dir: %v", err)
	}
	if exists(filepath.Join(root, "dir/old")) || exists(filepath.Join(root, "link/old")) {
		t.Error("old content survived")
	}
	if got := readFile(t, filepath.Join(root, "keep/child")); got != "c" {
		t.Errorf("keep/child: %q (an existing dir must only get new metadata)", got)
	}
	if fi, _ := os.Stat(filepath.Join(root, "keep")); fi.Mode().Perm() != 0o750 {
		t.Errorf("keep mode %v", fi.Mode())
	}
}

func TestApplyOptionsNoDevicesNoSetuid(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	dev := lg.Tar(lg.Entry{Name: "null", Type: tar.TypeChar, Major: 1, Minor: 3})
	_, err := Apply(context.Background(), root, bytes.NewReader(dev), ApplyOptions{NoDevices: true})
	var ee *EntryError
	if !errors.Is(err, ErrNotAllowed) || !errors.As(err, &ee) || ee.Name != "null" {
		t.Fatalf("device with NoDevices: %v", err)
	}
	if exists(filepath.Join(root, "null")) {
		t.Error("device created despite NoDevices")
	}
	apply(t, root, lg.Tar(lg.Entry{Name: "fifo", Type: tar.TypeFifo}), ApplyOptions{NoDevices: true})
	apply(t, root, lg.Tar(lg.Entry{Name: "suid", Mode: 0o6755, Content: []byte("x")},
		lg.Entry{Name: "sgid-dir", Type: tar.TypeDir, Mode: 0o2775}), ApplyOptions{NoSetuid: true})
	if fi, _ := os.Stat(filepath.Join(root, "suid")); fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("suid: %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(root, "sgid-dir")); fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("sgid-dir lost setgid: %v", fi.Mode())
	}
}

// TestApplyWhiteoutsOCI: whiteouts remove what lower layers had, never
// what the same tar writes, whatever the order.
func TestApplyWhiteoutsOCI(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	apply(t, root, lg.Tar(lg.Dir("a"), lg.File("a/gone", "1"), lg.Dir("a/sub"), lg.File("a/sub/deep", "2"),
		lg.Dir("o"), lg.File("o/old", "3"), lg.Dir("o/s"), lg.File("o/s/old", "4"), lg.File("o/s/kept-name", "5"),
		lg.Dir("p"), lg.File("p/old", "6")), ApplyOptions{})
	apply(t, root, lg.Tar(
		lg.Whiteout("a/gone"), lg.Whiteout("a/sub"), lg.Whiteout("a/never-existed"),
		lg.File("a/new", "n"), lg.Whiteout("a/new"), // same layer: kept
		lg.File("o/s/kept-name", "new"), lg.Opaque("o"), lg.File("o/after", "a"), // opaque after some entries
		lg.Opaque("p"), lg.File("p/new", "n"), // the usual order: marker first
	), ApplyOptions{})
	for _, p := range []string{"a/gone", "a/sub", "o/old", "o/s/old", "p/old"} {
		if exists(filepath.Join(root, p)) {
			t.Errorf("%s survived its whiteout", p)
		}
	}
	for p, want := range map[string]string{"a/new": "n", "o/s/kept-name": "new", "o/after": "a", "p/new": "n"} {
		if got := readFile(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{".wh.gone", "a/.wh.gone", "o/.wh..wh..opq"} {
		if exists(filepath.Join(root, p)) {
			t.Errorf("marker %s was stored", p)
		}
	}
}

func TestApplyWhiteoutsOverlay(t *testing.T) {
	requireRoot(t)
	for _, f := range []WhiteoutFormat{OverlayWhiteouts, OverlayUserWhiteouts} {
		t.Run(f.String(), func(t *testing.T) {
			_, root := target(t)
			apply(t, root, lg.Tar(lg.Dir("d"), lg.Whiteout("d/x"), lg.Opaque("d"), lg.File("d/y", "y"),
				lg.File("z", "z"), lg.Whiteout("z")), ApplyOptions{Whiteouts: f})
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, "d/x"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
				t.Errorf("d/x is not a 0/0 char device: %v %#o", err, st.Mode)
			}
			buf := make([]byte, 8)
			n, err := unix.Lgetxattr(filepath.Join(root, "d"), f.OpaqueXattr(), buf)
			if err != nil || string(buf[:n]) != "y" {
				t.Errorf("%s on d: %q %v", f.OpaqueXattr(), buf[:n], err)
			}
			if got := readFile(t, filepath.Join(root, "z")); got != "z" {
				t.Errorf("z = %q: a whiteout hid its own layer's file", got)
			}
			// WriteDir turns them back into OCI markers, right after the dir.
			names := tarNames(t, writeDir(t, root, DiffOptions{Whiteouts: f}))
			want := []string{"d/", "d/.wh..wh..opq", "d/.wh.x", "d/y", "z"}
			if !slicesEqual(names, want) {
				t.Errorf("WriteDir names %q, want %q", names, want)
			}
		})
	}
}

func TestApplyCompressed(t *testing.T) {
	requireRoot(t)
	raw := baseTar(t, lg.Spec{Files: 300, TotalBytes: 4 << 20, Seed: 3})
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(raw)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(raw)
	zw.Close()
	_, plain := target(t)
	apply(t, plain, raw, ApplyOptions{})
	for name, b := range map[string][]byte{"gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		t.Run(name, func(t *testing.T) {
			_, root := target(t)
			apply(t, root, b, ApplyOptions{})
			sameTree(t, plain, root, fstreeOpts())
			// A corrupt stream is an error, not a short tree.
			bad := bytes.Clone(b)
			bad[len(bad)/2] ^= 0xff
			_, root2 := target(t)
			if _, err := Apply(context.Background(), root2, bytes.NewReader(bad), ApplyOptions{}); !errors.Is(err, ErrInvalidTar) {
				t.Errorf("corrupt %s: %v", name, err)
			}
			// So is a bad checksum in the trailer, after the tar's end.
			bad = bytes.Clone(b)
			bad[len(bad)-6] ^= 0xff
			_, root3 := target(t)
			if _, err := Apply(context.Background(), root3, bytes.NewReader(bad), ApplyOptions{}); !errors.Is(err, ErrInvalidTar) {
				t.Errorf("%s with a bad trailing checksum: %v", name, err)
			}
		})
	}
	if _, err := Decompress(bytes.NewReader([]byte("BZh91AY&SY"))); !errors.Is(err, ErrInvalidTar) {
		t.Errorf("bzip2: %v", err)
	}
}

func TestApplyZerosBecomeHoles(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	content := make([]byte, 8<<20)
	copy(content[3<<20:], "data in the middle")
	apply(t, root, lg.Tar(lg.Entry{Name: "sparse", Content: content}), ApplyOptions{})
	if got := readFile(t, filepath.Join(root, "sparse")); got != string(content) {
		t.Fatal("content differs")
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(root, "sparse"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Errorf("8 MiB of zeros use %d bytes of disk", st.Blocks*512)
	}
}

func TestApplyCanceled(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Apply(ctx, root, bytes.NewReader(lg.Tar(lg.File("a", "b"))), ApplyOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a canceled ctx: %v", err)
	}
}

func tarNames(t testing.TB, b []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return names
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestApplyWhiteoutsThroughSymlinks: "written by this tar" is tracked by
// where a path really lands, so bin/sh via bin -> usr/bin is usr/bin/sh.
func TestApplyWhiteoutsThroughSymlinks(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	apply(t, root, lg.Tar(lg.Dir("usr"), lg.Dir("usr/bin"), lg.File("usr/bin/old", "o"), lg.Symlink("bin", "usr/bin")), ApplyOptions{})
	apply(t, root, lg.Tar(lg.File("bin/sh", "sh"), lg.Opaque("usr/bin"), lg.Whiteout("usr/bin/sh")), ApplyOptions{})
	if got := readFile(t, filepath.Join(root, "usr/bin/sh")); got != "sh" {
		t.Errorf("usr/bin/sh = %q", got)
	}
	if exists(filepath.Join(root, "usr/bin/old")) {
		t.Error("usr/bin/old survived the opaque marker")
	}
}

// TestApplyParentCacheFollowsReplacements: the cached parent fd must not
// outlive a replacement of a directory on its path.
func TestApplyParentCacheFollowsReplacements(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	apply(t, root, lg.Tar(
		lg.Dir("c"), lg.Dir("c/b"),
		lg.Dir("a"), lg.Dir("a/b"), lg.File("a/b/one", "1"), // a/b is now the cached parent
		lg.Symlink("a", "c"), // a replaced: a/b now means c/b
		lg.File("a/b/two", "2"),
		lg.File("a/b/check", "two is here"),
		lg.File("c/b", "x"), lg.Dir("c/b"), // replaced twice: a new inode
		lg.File("a/b/three", "3"),
	), ApplyOptions{})
	if got := readFile(t, filepath.Join(root, "c/b/three")); got != "3" {
		t.Errorf("c/b/three = %q", got)
	}
	for _, p := range []string{"c/b/one", "c/b/two", "c/b/check"} {
		if exists(filepath.Join(root, p)) {
			t.Errorf("%s: written through a stale parent or survived the replacement", p)
		}
	}
}
