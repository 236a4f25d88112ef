package vfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fstree"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tempRoot is an empty directory under /var/tmp (disk-backed: tmpfs has
// no reflink and behaves differently under syncfs).
func tempRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "strata-vfs-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func openDriver(t testing.TB, root string, opts Options) *Driver {
	t.Helper()
	d, err := open(context.Background(), root, opts)
	must(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root for owners, device nodes and trusted.* xattrs (euid %d)", os.Geteuid())
	}
}

// fillTree writes a small tree with every kind of entry a layer keeps:
// hardlinks, symlinks, devices, a fifo, xattrs (security.capability and
// trusted.* too), setuid and sticky modes, foreign owners, a sparse file
// and distinct nanosecond mtimes, directories included.
func fillTree(t testing.TB, dir string) {
	t.Helper()
	needRoot(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	must(t, os.MkdirAll(p("usr/bin"), 0o755))
	must(t, os.MkdirAll(p("etc/ssl"), 0o750))
	must(t, os.Mkdir(p("tmp"), 0o755))
	must(t, os.Chmod(p("tmp"), os.ModeSticky|0o777))
	must(t, os.Mkdir(p("proc"), 0o555))
	must(t, os.WriteFile(p("etc/hostname"), []byte("strata\n"), 0o644))
	must(t, os.WriteFile(p("etc/ssl/key"), []byte(strings.Repeat("k", 5000)), 0o600))
	must(t, os.Lchown(p("etc/ssl/key"), 101, 102))
	must(t, os.WriteFile(p("usr/bin/su"), []byte("setuid"), 0o755))
	must(t, os.Chmod(p("usr/bin/su"), os.ModeSetuid|0o755))
	must(t, os.WriteFile(p("usr/bin/ping"), []byte("ping binary"), 0o755))
	capv2 := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(t, unix.Lsetxattr(p("usr/bin/ping"), "security.capability", capv2, 0))
	must(t, unix.Lsetxattr(p("etc"), "trusted.strata.test", []byte("t"), 0))
	must(t, unix.Lsetxattr(p("etc/hostname"), "user.mime", []byte("text/plain"), 0))
	must(t, os.Link(p("usr/bin/su"), p("usr/bin/sudo")))
	must(t, os.Link(p("usr/bin/su"), p("usr/bin/suid-too")))
	must(t, os.Symlink("/usr/bin/su", p("usr/bin/su-link")))
	must(t, os.Symlink("../missing", p("etc/dangling")))
	must(t, unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(p("sda"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 0))))
	must(t, unix.Mkfifo(p("fifo"), 0o644))
	f, err := os.Create(p("sparse"))
	must(t, err)
	_, err = f.WriteAt([]byte("data"), 4<<20)
	must(t, err)
	must(t, f.Truncate(16<<20))
	must(t, f.Close())
	setTimes(t, dir)
}

// setTimes gives every entry under dir its own nanosecond mtime.
func setTimes(t testing.TB, dir string) {
	t.Helper()
	i := int64(0)
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		must(t, err)
		i++
		ns := time.Date(2022, 3, 4, 5, 6, 7, 0, time.UTC).UnixNano() + i*7919
		ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

func snapshot(t testing.TB, dir string) *fstree.Tree {
	t.Helper()
	tr, err := fstree.Snapshot(dir)
	must(t, err)
	return tr
}

// requireSameTree compares two trees byte for byte, mtimes to the ns.
func requireSameTree(t testing.TB, want, got string) {
	t.Helper()
	requireSameTreeOpts(t, want, got, fstree.Options{})
}

// requireSameContent compares two trees as requireSameTree does except
// for the root directory's own metadata, which a layer tar does not carry
// (archive.WriteDir leaves it out).
func requireSameContent(t testing.TB, want, got string) {
	t.Helper()
	requireSameTreeOpts(t, want, got, fstree.Options{IgnoreRoot: true})
}

func requireSameTreeOpts(t testing.TB, want, got string, opts fstree.Options) {
	t.Helper()
	if diff := fstree.Diff(snapshot(t, want), snapshot(t, got), opts); diff != nil {
		t.Fatalf("%s differs from %s:\n%s", got, want, strings.Join(diff, "\n"))
	}
}

// requireUnchanged runs fn and fails if anything under root changed.
func requireUnchanged(t testing.TB, root string, fn func()) {
	t.Helper()
	before := snapshot(t, root)
	fn()
	if diff := fstree.Diff(before, snapshot(t, root), fstree.Options{}); diff != nil {
		t.Fatalf("root changed:\n%s", strings.Join(diff, "\n"))
	}
}

// filledBase creates layer "base" and fills it through Get's path.
func filledBase(t testing.TB, d *Driver) string {
	t.Helper()
	ctx := context.Background()
	must(t, d.Create(ctx, "base", "", nil))
	dir, err := d.Get(ctx, "base", nil)
	must(t, err)
	fillTree(t, dir)
	must(t, d.Put(ctx, "base"))
	return dir
}

// loopFS makes a filesystem of size bytes on a sparse file under
// /var/tmp, mounts it through a loop device (mount -o loop sets autoclear,
// so the device goes with the unmount) and returns the mountpoint.
func loopFS(t testing.TB, size int64, mkfs string, args ...string) string {
	t.Helper()
	needRoot(t)
	bin, err := exec.LookPath(mkfs)
	if err != nil {
		t.Skipf("%s not installed: %v", mkfs, err)
	}
	dir := tempRoot(t)
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(size))
	must(t, f.Close())
	if out, err := exec.Command(bin, append(args, img)...).CombinedOutput(); err != nil {
		t.Skipf("%s %v: %v: %s", mkfs, args, err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop %s: %v: %s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

var _ driver.Driver = (*Driver)(nil)
