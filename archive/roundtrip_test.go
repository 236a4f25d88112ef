package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/fsutil"
	lg "github.com/stratafs/strata/internal/layergen"
)

// fstreeOpts compares everything, nanosecond mtimes included; only the
// root's own metadata is skipped (a layer does not carry it).
func fstreeOpts() fstree.Options { return fstree.Options{IgnoreRoot: true} }

func needTar(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skipf("GNU tar not installed: %v", err)
	}
}

func gnuTar(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("tar", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tar %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestRoundTrip: generate -> Apply -> WriteDir -> Apply elsewhere gives
// the same tree, and WriteDir of that gives the same bytes again.
func TestRoundTrip(t *testing.T) {
	requireRoot(t)
	orig := baseTar(t, lg.Spec{Files: 1000, TotalBytes: 12 << 20, Seed: 11})
	_, a := target(t)
	apply(t, a, orig, ApplyOptions{})
	ours := writeDir(t, a, DiffOptions{})
	_, b := target(t)
	apply(t, b, ours, ApplyOptions{})
	sameTree(t, a, b, fstreeOpts())
	again := writeDir(t, b, DiffOptions{})
	if sha256.Sum256(ours) != sha256.Sum256(again) {
		t.Error("the same tree in another directory gave different tar bytes")
	}
	if !bytes.Equal(ours, writeDir(t, a, DiffOptions{})) {
		t.Error("WriteDir of one tree twice gave different bytes")
	}
}

// TestGNUTarExtractsOurs: tar -xf of WriteDir output equals our Apply.
func TestGNUTarExtractsOurs(t *testing.T) {
	requireRoot(t)
	needTar(t)
	sb, a := target(t)
	apply(t, a, baseTar(t, lg.Spec{Files: 600, TotalBytes: 6 << 20, Seed: 5}), ApplyOptions{})
	tarball := filepath.Join(sb, "ours.tar")
	if err := os.WriteFile(tarball, writeDir(t, a, DiffOptions{}), 0o600); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(sb, "gnu")
	os.Mkdir(b, 0o755)
	gnuTar(t, "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-C", b, "-xf", tarball)
	sameTree(t, a, b, fstreeOpts())
}

// TestApplyGNUTarOutput: our Apply of a GNU tar (posix format, xattrs)
// equals GNU tar's own extraction of it.
func TestApplyGNUTarOutput(t *testing.T) {
	requireRoot(t)
	needTar(t)
	sb, a := target(t)
	src := filepath.Join(sb, "layer.tar")
	if err := os.WriteFile(src, baseTar(t, lg.Spec{Files: 600, TotalBytes: 6 << 20, Seed: 6}), 0o600); err != nil {
		t.Fatal(err)
	}
	gnuTar(t, "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-C", a, "-xf", src)
	gnu := filepath.Join(sb, "gnu.tar")
	gnuTar(t, "--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", a, "-cf", gnu, ".")
	_, b := target(t)
	f, err := os.Open(gnu)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Apply(context.Background(), b, f, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, a, b, fstreeOpts())
}

// TestChangesAndWriteChanges mutates a copy of a tree in every way a
// layer can, checks the exact change list, and that applying the written
// changes onto the parent gives the child.
func TestChangesAndWriteChanges(t *testing.T) {
	requireRoot(t)
	lower := lg.Tar(lg.Dir("d"), lg.File("d/keep", "k"), lg.File("d/mod", "m"), lg.File("d/chmod", "c"),
		lg.File("d/del", "x"), lg.Dir("gone"), lg.File("gone/a", "a"), lg.Dir("gone/b"), lg.File("file2dir", "f"),
		lg.File("xa", "x"), lg.Dir("a"), lg.File("a/b", "ab"), lg.File("a-b", "a-b"))
	_, parent := target(t)
	apply(t, parent, lower, ApplyOptions{})
	_, child := target(t)
	apply(t, child, lower, ApplyOptions{})
	p := func(s string) string { return filepath.Join(child, s) }
	later := time.Date(2025, 1, 1, 0, 0, 0, 5, time.UTC)
	must(t, os.WriteFile(p("d/mod"), []byte("modified!"), 0o644))
	must(t, os.Chtimes(p("d/mod"), later, later))
	must(t, os.Chmod(p("d/chmod"), 0o600))
	must(t, os.Remove(p("d/del")))
	must(t, os.RemoveAll(p("gone")))
	must(t, os.Remove(p("file2dir")))
	must(t, os.Mkdir(p("file2dir"), 0o755))
	must(t, os.WriteFile(p("file2dir/in"), []byte("in"), 0o644))
	must(t, exec.Command("setfattr", "-n", "user.k", "-v", "v", p("xa")).Run())
	must(t, os.Link(p("d/keep"), p("d/keep-link")))
	must(t, os.Mkdir(p("new"), 0o700))
	must(t, os.WriteFile(p("new/f"), []byte("f"), 0o644))
	must(t, os.Lchown(p("a/b"), 12, 34))
	ch, err := Changes(context.Background(), parent, child)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range ch {
		got = append(got, c.String())
	}
	want := []string{"C /a", "C /a/b", "C /d", "C /d/chmod", "D /d/del", "C /d/keep", "A /d/keep-link", "C /d/mod",
		"C /file2dir", "A /file2dir/in", "D /gone", "A /new", "A /new/f", "C /xa"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var b bytes.Buffer
	if err := WriteChanges(context.Background(), &b, child, ch); err != nil {
		t.Fatal(err)
	}
	rev := slices.Clone(ch)
	slices.Reverse(rev)
	var b2 bytes.Buffer
	must(t, WriteChanges(context.Background(), &b2, child, rev))
	if !bytes.Equal(b.Bytes(), b2.Bytes()) {
		t.Error("WriteChanges output depends on the order of the changes")
	}
	names := tarNames(t, b.Bytes())
	if !slicesEqual(names[:2], []string{"a/", "a/b"}) || contains(names, "gone/") || !contains(names, ".wh.gone") {
		t.Errorf("WriteChanges names %q", names)
	}
	apply(t, parent, b.Bytes(), ApplyOptions{})
	sameTree(t, child, parent, fstreeOpts())
	if ch, _ := Changes(context.Background(), parent, child); len(ch) != 0 {
		t.Errorf("after applying the changes the trees still differ: %v", ch)
	}
	all, err := Changes(context.Background(), "", child)
	if err != nil || len(all) != len(snapshot(t, child).Entries)-1 {
		t.Errorf("Changes against an empty parent: %d changes, %v", len(all), err)
	}
}

func TestMissingTreesAreErrors(t *testing.T) {
	sb := sandbox(t)
	missing := filepath.Join(sb, "missing")
	if _, err := Changes(context.Background(), "", missing); err == nil {
		t.Error("Changes of a missing dir")
	}
	if _, err := Changes(context.Background(), missing, sb); err == nil {
		t.Error("Changes against a missing parent")
	}
	if err := WriteDir(context.Background(), io.Discard, missing, DiffOptions{}); err == nil {
		t.Error("WriteDir of a missing dir")
	}
	if _, err := Apply(context.Background(), missing, bytes.NewReader(nil), ApplyOptions{}); err == nil {
		t.Error("Apply onto a missing dir")
	}
}

func TestComparePaths(t *testing.T) {
	if fsutil.ComparePaths("/a/b", "/a-b") >= 0 || fsutil.ComparePaths("/a", "/a/b") >= 0 || fsutil.ComparePaths("/b", "/a/z") <= 0 {
		t.Error("component order is wrong")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// TestApplyGNUSparse: a GNU tar --sparse member (PAX sparse 1.0) comes
// out with the right content and stays sparse on disk.
func TestApplyGNUSparse(t *testing.T) {
	requireRoot(t)
	needTar(t)
	sb, src := target(t)
	f, err := os.Create(filepath.Join(src, "sparse"))
	must(t, err)
	must(t, f.Truncate(64<<20))
	_, err = f.WriteAt([]byte("in the middle"), 20<<20)
	must(t, err)
	must(t, f.Close())
	tarball := filepath.Join(sb, "sparse.tar")
	gnuTar(t, "--sparse", "--format=posix", "--numeric-owner", "-C", src, "-cf", tarball, "sparse")
	_, dst := target(t)
	in, err := os.Open(tarball)
	must(t, err)
	defer in.Close()
	if _, err := Apply(context.Background(), dst, in, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, dst, fstree.Options{IgnoreRoot: true})
	var st syscall.Stat_t
	must(t, syscall.Stat(filepath.Join(dst, "sparse"), &st))
	if st.Blocks*512 > 1<<20 {
		t.Errorf("64 MiB sparse file takes %d bytes on disk", st.Blocks*512)
	}
}
