package fstree

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// build makes the same small tree in dir every time it is called.
func build(t *testing.T, dir string) {
	t.Helper()
	mt := time.Unix(1700000000, 123456789)
	must := func(err error) { t.Helper(); require.NoError(t, err) }
	must(os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0\n"), 0o644))
	must(os.Link(filepath.Join(dir, "etc/passwd"), filepath.Join(dir, "etc/passwd.link")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "pw")))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	for _, p := range []string{"etc/passwd", "fifo", "etc"} {
		must(os.Chtimes(filepath.Join(dir, p), mt, mt))
	}
	ts := unix.NsecToTimespec(mt.UnixNano())
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, "pw"), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
}

func snap(t *testing.T, dir string) *Tree {
	t.Helper()
	tr, err := Snapshot(dir)
	require.NoError(t, err)
	return tr
}

func TestEqualTreesHaveNoDiff(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	build(t, a)
	build(t, b)
	require.Empty(t, Diff(snap(t, a), snap(t, b), Options{IgnoreRoot: true}))
}

func TestDiffFindsEveryKindOfDifference(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	build(t, a)
	build(t, b)
	require.NoError(t, os.WriteFile(filepath.Join(b, "etc/passwd"), []byte("root:x:0:1\n"), 0o644)) // content (same size)
	require.NoError(t, unix.Chmod(filepath.Join(b, "fifo"), 0o4600))                                // mode + setuid
	require.NoError(t, os.Remove(filepath.Join(b, "pw")))
	require.NoError(t, os.Symlink("/etc/shadow", filepath.Join(b, "pw"))) // target
	require.NoError(t, os.Remove(filepath.Join(b, "etc/passwd.link")))
	require.NoError(t, os.WriteFile(filepath.Join(b, "etc/passwd.link"), []byte("root:x:0:0\n"), 0o644)) // hardlink broken
	require.NoError(t, os.WriteFile(filepath.Join(b, "extra"), nil, 0o644))
	require.NoError(t, os.Lchown(filepath.Join(b, "etc"), 1, 2))
	require.NoError(t, unix.Lsetxattr(filepath.Join(b, "etc"), "user.k", []byte("v"), 0))

	diff := strings.Join(Diff(snap(t, a), snap(t, b), Options{IgnoreRoot: true}), "\n")
	for _, want := range []string{
		"/etc/passwd: content sha256",
		"/fifo: mode",
		"/pw: symlink target",
		"/etc/passwd: hardlinked with",
		"/extra: unexpected",
		"/etc: owner",
		"/etc: xattrs",
		"/etc/passwd.link: mtime",
	} {
		require.Contains(t, diff, want)
	}
}

func TestMtimePrecisionAndIgnore(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	build(t, a)
	build(t, b)
	mt := time.Unix(1700000000, 999)
	require.NoError(t, os.Chtimes(filepath.Join(b, "etc/passwd"), mt, mt))
	require.NotEmpty(t, Diff(snap(t, a), snap(t, b), Options{IgnoreRoot: true}))
	require.Empty(t, Diff(snap(t, a), snap(t, b), Options{IgnoreRoot: true, MtimePrecision: time.Second}))
	require.NoError(t, os.Remove(filepath.Join(b, "fifo")))
	require.Empty(t, Diff(snap(t, a), snap(t, b), Options{IgnoreRoot: true, MtimePrecision: -1,
		Ignore: func(p string) bool { return p == "/fifo" }}))
}
