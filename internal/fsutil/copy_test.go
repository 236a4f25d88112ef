package fsutil_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/conformance/fixtures"
	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/fsutil"
)

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "strata-copy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// makeTree builds a tree holding every kind of entry a layer keeps, with
// awkward metadata on each, and returns the names of its sparse files.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root for owners, devices and trusted.* xattrs (euid %d)", os.Geteuid())
	}
	w := func(name, data string, mode os.FileMode) {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(data), mode))
		must(t, os.Chmod(filepath.Join(dir, name), mode))
	}
	must(t, os.MkdirAll(filepath.Join(dir, "etc/deep/er"), 0o755))
	must(t, os.Mkdir(filepath.Join(dir, "tmp"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "tmp"), os.ModeSticky|0o777))
	must(t, os.Mkdir(filepath.Join(dir, "ro"), 0o755))
	w("ro/inside", "in a read-only dir", 0o444)
	w("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
	w("etc/empty", "", 0o600)
	w("etc/deep/er/file", strings.Repeat("deep ", 1000), 0o640)
	w("suid", "#!/bin/sh\n", 0o755)
	must(t, os.Chmod(filepath.Join(dir, "suid"), os.ModeSetuid|os.ModeSetgid|0o755))
	w("ping", "binary", 0o755)
	// security.capability v2 for cap_net_raw: set after chown, which clears it.
	must(t, os.Chown(filepath.Join(dir, "ping"), 0, 0))
	capv2 := []byte{0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(t, unix.Lsetxattr(filepath.Join(dir, "ping"), "security.capability", capv2, 0))
	must(t, unix.Lsetxattr(filepath.Join(dir, "etc/passwd"), "user.note", []byte("hello"), 0))
	must(t, unix.Lsetxattr(filepath.Join(dir, "etc"), "trusted.overlay.opaque", []byte("y"), 0))
	must(t, unix.Lsetxattr(filepath.Join(dir, "etc/passwd"), "trusted.big", []byte(strings.Repeat("x", 3000)), 0))
	w("owned", "by someone else", 0o600)
	must(t, os.Lchown(filepath.Join(dir, "owned"), 1234, 5678))
	// Hardlinks: a group of three, and a hardlinked symlink.
	w("etc/deep/a", "linked content", 0o644)
	must(t, os.Link(filepath.Join(dir, "etc/deep/a"), filepath.Join(dir, "b")))
	must(t, os.Link(filepath.Join(dir, "etc/deep/a"), filepath.Join(dir, "etc/c")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "abs-link")))
	must(t, os.Symlink("../nowhere", filepath.Join(dir, "etc/dangling")))
	must(t, os.Link(filepath.Join(dir, "abs-link"), filepath.Join(dir, "abs-link2")))
	must(t, os.Lchown(filepath.Join(dir, "abs-link"), 7, 8))
	must(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(filepath.Join(dir, "loop9"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9))))
	must(t, unix.Mknod(filepath.Join(dir, "whiteout"), unix.S_IFCHR, 0))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o620))
	// A sparse file: 1 MiB hole, 4 KiB data, 8 MiB hole at the end.
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(t, err)
	_, err = f.WriteAt([]byte(strings.Repeat("s", 4096)), 1<<20)
	must(t, err)
	must(t, f.Truncate(9<<20+4096))
	must(t, f.Close())
	// A file larger than one read buffer, for the read/write path.
	w("big", strings.Repeat("0123456789abcdef", 200_000), 0o644)
	must(t, os.Chmod(filepath.Join(dir, "ro"), 0o555))
	// Distinct nanosecond mtimes everywhere, directories last.
	i := 0
	must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		must(t, err)
		i++
		ts := []unix.Timespec{
			unix.NsecToTimespec(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano() + int64(i)*1001),
			unix.NsecToTimespec(time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC).UnixNano() + int64(i)*123457),
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

func snapshot(t *testing.T, dir string) *fstree.Tree {
	t.Helper()
	tr, err := fstree.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func requireSame(t *testing.T, src, dst string) {
	t.Helper()
	if diff := fstree.Diff(snapshot(t, src), snapshot(t, dst), fstree.Options{}); diff != nil {
		t.Errorf("copy differs from source:\n%s", strings.Join(diff, "\n"))
	}
}

func TestCopyTreeKeepsEverything(t *testing.T) {
	for _, mode := range []fsutil.CopyMode{fsutil.CopyAuto, fsutil.CopyPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			base := tempDir(t)
			src := filepath.Join(base, "src")
			must(t, os.Mkdir(src, 0o751))
			makeTree(t, src)
			dst := filepath.Join(base, "dst")
			st, err := fsutil.CopyTreeWith(context.Background(), src, dst, fsutil.CopyOptions{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			requireSame(t, src, dst)
			// passwd, empty, er/file, inside, suid, ping, owned, a, sparse, big
			if st.Files != 10 || st.Hardlinks != 3 || st.Symlinks != 2 || st.Specials != 4 || st.Dirs != 6 {
				t.Errorf("stats = %+v, want 10 files, 3 hardlinks, 2 symlinks, 4 specials, 6 dirs", st)
			}
			want := int64(len("root:x:0:0::/root:/bin/sh\n") + 5000 + 18 + 10 + 6 + 15 + 14 + 9<<20 + 4096 + 3_200_000)
			if st.Bytes != want {
				t.Errorf("Bytes = %d, want %d", st.Bytes, want)
			}
			var sst unix.Stat_t
			must(t, unix.Stat(filepath.Join(dst, "sparse"), &sst))
			if sst.Blocks*512 > 1<<20 {
				t.Errorf("sparse file copied densely: %d blocks for %d bytes", sst.Blocks, sst.Size)
			}
		})
	}
}

func TestCopyTreeSkipsSockets(t *testing.T) {
	base := tempDir(t)
	src := filepath.Join(base, "src")
	must(t, os.Mkdir(src, 0o755))
	l, err := net.Listen("unix", filepath.Join(src, "sock"))
	must(t, err)
	defer l.Close()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))
	st, err := fsutil.CopyTree(context.Background(), src, filepath.Join(base, "dst"))
	must(t, err)
	if len(st.Skipped) != 1 || !strings.Contains(st.Skipped[0], "sock: socket") {
		t.Errorf("Skipped = %q, want the socket", st.Skipped)
	}
	if _, err := os.Lstat(filepath.Join(base, "dst/sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket copied: %v", err)
	}
}

func TestCopyTreeRefusesExistingDst(t *testing.T) {
	base := tempDir(t)
	must(t, os.Mkdir(filepath.Join(base, "src"), 0o755))
	must(t, os.Mkdir(filepath.Join(base, "dst"), 0o755))
	must(t, os.WriteFile(filepath.Join(base, "dst/keep"), []byte("x"), 0o644))
	if _, err := fsutil.CopyTree(context.Background(), filepath.Join(base, "src"), filepath.Join(base, "dst")); !errors.Is(err, os.ErrExist) {
		t.Fatalf("CopyTree onto an existing dir: %v, want ErrExist", err)
	}
	if _, err := os.Stat(filepath.Join(base, "dst/keep")); err != nil {
		t.Errorf("existing dst touched: %v", err)
	}
}

func TestCopyTreeStopsOnCancel(t *testing.T) {
	base := tempDir(t)
	src := filepath.Join(base, "src")
	must(t, os.MkdirAll(filepath.Join(src, "a/b"), 0o755))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fsutil.CopyTree(ctx, src, filepath.Join(base, "dst")); !errors.Is(err, context.Canceled) {
		t.Fatalf("CopyTree with a cancelled ctx: %v", err)
	}
}

// isReflinkFS reports whether dir's filesystem can FICLONE, by trying.
func reflinkWorks(t *testing.T, dir string) bool {
	t.Helper()
	a, err := os.Create(filepath.Join(dir, ".probe-a"))
	must(t, err)
	defer os.Remove(a.Name())
	defer a.Close()
	_, err = a.WriteString("x")
	must(t, err)
	b, err := os.Create(filepath.Join(dir, ".probe-b"))
	must(t, err)
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil
}

func TestCopyTreeReflinkModeNeedsReflink(t *testing.T) {
	base := tempDir(t)
	if reflinkWorks(t, base) {
		t.Skipf("%s supports reflink; this case needs a filesystem without it", base)
	}
	src := filepath.Join(base, "src")
	must(t, os.Mkdir(src, 0o755))
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644))
	_, err := fsutil.CopyTreeWith(context.Background(), src, filepath.Join(base, "dst"), fsutil.CopyOptions{Mode: fsutil.CopyReflink})
	if err == nil || !strings.Contains(err.Error(), "reflink") {
		t.Fatalf("CopyReflink on a filesystem without reflink: %v, want an error naming reflink", err)
	}
}

func TestCopyTreeReflinksOnBtrfs(t *testing.T) {
	mnt := fixtures.Btrfs(t, 0)
	src := filepath.Join(mnt, "src")
	must(t, os.Mkdir(src, 0o755))
	makeTree(t, src)
	for _, mode := range []fsutil.CopyMode{fsutil.CopyAuto, fsutil.CopyReflink} {
		dst := filepath.Join(mnt, "dst-"+mode.String())
		st, err := fsutil.CopyTreeWith(context.Background(), src, dst, fsutil.CopyOptions{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		requireSame(t, src, dst)
		// Every non-empty file is cloned: all but etc/empty.
		if st.Reflinked != st.Files-1 {
			t.Errorf("%s: Reflinked = %d of %d files, want all but the empty one", mode, st.Reflinked, st.Files)
		}
	}
}

// TestCopyTreeWorkers copies a wide tree with hardlinks that cross
// directories (their first name may still be in a worker's hands when the
// walk meets the second) with one worker and with many.
func TestCopyTreeWorkers(t *testing.T) {
	base := tempDir(t)
	src := filepath.Join(base, "src")
	for d := 0; d < 10; d++ {
		dir := filepath.Join(src, "d"+strings.Repeat("x", d))
		must(t, os.MkdirAll(dir, 0o755))
		for f := 0; f < 40; f++ {
			must(t, os.WriteFile(filepath.Join(dir, "f"+strings.Repeat("y", f)), []byte(strings.Repeat("c", d*100+f)), 0o644))
		}
		if d > 0 {
			must(t, os.Link(filepath.Join(src, "d", "fyy"), filepath.Join(dir, "link")))
		}
		must(t, os.Chmod(dir, 0o555))
	}
	for _, workers := range []int{1, 16} {
		dst := filepath.Join(base, "dst"+strings.Repeat("w", workers))
		st, err := fsutil.CopyTreeWith(context.Background(), src, dst, fsutil.CopyOptions{Workers: workers})
		must(t, err)
		requireSame(t, src, dst)
		if st.Files != 400 || st.Hardlinks != 9 || st.Dirs != 11 {
			t.Errorf("workers=%d: stats %+v, want 400 files, 9 hardlinks, 11 dirs", workers, st)
		}
	}
}
