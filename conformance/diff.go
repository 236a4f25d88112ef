package conformance

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/layergen"
)

func diffCases() []testCase {
	return []testCase{
		{"RoundTripBase", testRoundTripBase},
		{"RoundTripChild", testRoundTripChild},
		{"RoundTripGenerated", testRoundTripGenerated},
		{"ChangesExact", testChangesExact},
		{"EmptyChild", testEmptyChild},
		{"Whiteouts3", testWhiteouts3},
		{"Chain64", testChain64},
		{"WritableMountDiff", testWritableMountDiff},
		{"Compressed", testCompressed},
	}
}

// roundTrip applies tb to a new layer on parent, checks the view against
// want, diffs it, applies the diff to a second new layer on the same parent
// and checks that one too. Both diffs must be the same bytes: equal trees
// give equal tars.
func roundTrip(t *testing.T, e *env, parent string, tb []byte, want *fstree.Tree) {
	n := e.layer("a", parent, tb)
	e.sameTree("view after ApplyDiff", want, e.view("a"))
	if got, err := e.d.DiffSize(e.ctx, "a"); err != nil || got != n {
		t.Errorf("DiffSize = %d, %v; want %d as ApplyDiff reported", got, err, n)
	}
	d1 := e.diff("a")
	e.layer("b", parent, d1)
	e.sameTree("view after ApplyDiff of the layer's own Diff", want, e.view("b"))
	d2 := e.diff("b")
	if !bytes.Equal(d1, d2) {
		sameList(t, "Diff of two equal layers (entries)", tarListing(t, d1), tarListing(t, d2))
		t.Errorf("Diff of two equal layers differs (%d vs %d bytes)", len(d1), len(d2))
	}
	// Every path of the layer is in its changes, and nothing else.
	var wantCh []string
	parentTree := reference(t)
	if parent != "" {
		parentTree = e.view(parent)
	}
	for _, p := range want.Paths() {
		if p == "/" {
			continue
		}
		if _, inParent := parentTree.Entries[p]; !inParent {
			wantCh = append(wantCh, "A "+p)
		}
	}
	sameList(t, "Changes", wantCh, e.changes("a"))
}

func testRoundTripBase(t *testing.T, e *env) {
	tb := kitchenSink(t, e.b.Caps)
	roundTrip(t, e, "", tb, reference(t, tb))
}

func testRoundTripChild(t *testing.T, e *env) {
	p := smallLayer(t, "parent", 1)
	e.layer("p", "", p)
	tb := kitchenSink(t, e.b.Caps)
	roundTrip(t, e, "p", tb, reference(t, p, tb))
}

// testRoundTripGenerated round-trips a small generated base layer: the
// shape of a real distribution layer (nested dirs, heavy-tailed sizes,
// links of every kind, devices, xattrs, odd modes) at a size that keeps
// the suite fast. The benchmarks use the full-size one.
func testRoundTripGenerated(t *testing.T, e *env) {
	if e.b.Caps.NoDevices {
		t.Skipf("%s cannot store device nodes, which the generated layer has", e.b.Name)
	}
	var buf bytes.Buffer
	if err := layergen.Base(&buf, layergen.Spec{Files: 400, TotalBytes: 4 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	tb := buf.Bytes()
	p := smallLayer(t, "parent", 1)
	e.layer("p", "", p)
	roundTrip(t, e, "p", tb, reference(t, p, tb))
}

// changesParent and changesChild make a child with one change of each
// kind; every directory whose entries change is in the child tar with a
// new mtime, as in real layers, so "C /etc" is a fact and not an artefact.
func changesParent(t testing.TB) []byte {
	return buildTar(t, 1,
		tDir("etc", 0o755),
		tFile("etc/keep", "keep\n", 0o644),
		tFile("etc/mod", "old content\n", 0o644),
		tFile("etc/chmod", "same content\n", 0o644),
		tFile("etc/old", "to be deleted\n", 0o644),
		tDir("olddir", 0o755),
		tFile("olddir/a", "a\n", 0o644),
		tDir("olddir/sub", 0o755),
		tFile("olddir/sub/b", "b\n", 0o644),
		tDir("var", 0o755),
		tFile("var/x", "x\n", 0o644),
	)
}

func changesChild(t testing.TB, parent []byte) []byte {
	chmodTime := headerTime(t, parent, "etc/chmod")
	return buildTar(t, 2,
		tDir("etc", 0o755),
		tFile("etc/mod", "new content, longer than before\n", 0o644),
		tFile("etc/chmod", "same content\n", 0o600).mtime(chmodTime),
		tFile("etc/new", "new\n", 0o644),
		tWhiteout("etc/old"),
		tWhiteout("olddir"),
		tDir("newdir", 0o750),
		tFile("newdir/f", "f\n", 0o644),
	)
}

func testChangesExact(t *testing.T, e *env) {
	p := changesParent(t)
	c := changesChild(t, p)
	e.layer("p", "", p)
	e.layer("c", "p", c)
	want := reference(t, p, c)
	e.sameTree("child view", want, e.view("c"))
	sameList(t, "Changes of the child", []string{
		"A /etc/new", "A /newdir", "A /newdir/f",
		"C /etc", "C /etc/chmod", "C /etc/mod",
		"D /etc/old", "D /olddir",
	}, e.changes("c"))
	d := e.diff("c")
	sameList(t, "entries of the child's Diff", []string{
		"0 /.wh.olddir", "0 /etc/.wh.old", "0 /etc/chmod", "0 /etc/mod", "0 /etc/new",
		"0 /newdir/f", "5 /etc", "5 /newdir",
	}, tarListing(t, d))
	e.layer("c2", "p", d)
	e.sameTree("view after applying the child's Diff", want, e.view("c2"))
}

func testEmptyChild(t *testing.T, e *env) {
	p := smallLayer(t, "p", 1)
	e.layer("p", "", p)
	e.create("c", "p", nil)
	e.create("w", "p", &driver.CreateOpts{Writable: true})
	for _, id := range []string{"c", "w"} {
		sameList(t, "Changes of an empty child "+id, nil, e.changes(id))
		sameList(t, "Diff of an empty child "+id, nil, tarListing(t, e.diff(id)))
		if n, err := e.d.DiffSize(e.ctx, id); err != nil || n != 0 {
			t.Errorf("DiffSize of empty child %s = %d, %v; want 0", id, n, err)
		}
	}
	n := e.layer("empty", "p", buildTar(t, 2))
	if n != 0 {
		t.Errorf("ApplyDiff of an empty tar reported %d bytes", n)
	}
	e.sameTree("child after an empty tar", reference(t, p), e.view("empty"))
}

// The three layers exercise every way a path can disappear or come back:
// whiteouts of files, dirs and one name of a hardlink pair, opaque dirs
// over lower content and over a dir added in the same chain, a type change
// each way, a name hidden in one layer and recreated in the next.
func whiteoutLayers(t testing.TB) (l1, l2, l3 []byte) {
	l1 = buildTar(t, 1,
		tDir("a", 0o755), tFile("a/x", "x1\n", 0o644), tFile("a/y", "y1\n", 0o644),
		tDir("a/sub", 0o755), tFile("a/sub/z", "z1\n", 0o644),
		tDir("b", 0o755), tFile("b/1", "b1\n", 0o644),
		tFile("c", "c is a file\n", 0o644),
		tDir("d", 0o755), tFile("d/keep", "keep\n", 0o644), tFile("d/gone", "gone\n", 0o644),
		tSymlink("e", "a/x"),
		tFile("hl1", "hardlinked\n", 0o644), tHardlink("hl2", "hl1"),
		tFile("f", "f is a file\n", 0o644),
	)
	l2 = buildTar(t, 2,
		tWhiteout("c"),
		tDir("a", 0o755), tOpaque("a"), tFile("a/new", "new in l2\n", 0o644),
		tDir("d", 0o755), tWhiteout("d/gone"),
		tDir("b", 0o755), tFile("b/2", "b2\n", 0o644),
		tWhiteout("e"), tDir("e", 0o700), tFile("e/inside", "e is a dir now\n", 0o644),
		tWhiteout("hl1"),
		tFile("g", "g\n", 0o644),
	)
	l3 = buildTar(t, 3,
		tDir("c", 0o755), tFile("c/back", "c came back as a dir\n", 0o644),
		tDir("a", 0o755), tWhiteout("a/new"), tFile("a/x", "x3: hidden by l2's opaque dir, back in l3\n", 0o644),
		tWhiteout("b"),
		tDir("d", 0o755), tOpaque("d"), tFile("d/fresh", "fresh\n", 0o644),
		tDir("e", 0o700), tOpaque("e"), tFile("e/inside2", "second\n", 0o644),
		tWhiteout("f"), tSymlink("f", "g"),
	)
	return l1, l2, l3
}

func testWhiteouts3(t *testing.T, e *env) {
	l1, l2, l3 := whiteoutLayers(t)
	e.layer("l1", "", l1)
	e.layer("l2", "l1", l2)
	e.layer("l3", "l2", l3)
	want2, want3 := reference(t, l1, l2), reference(t, l1, l2, l3)
	e.sameTree("view of l2", want2, e.view("l2"))
	e.sameTree("view of l3", want3, e.view("l3"))
	// The diffs carry the deletions: rebuilt from them, the chain is equal.
	e.layer("r2", "l1", e.diff("l2"))
	e.layer("r3", "r2", e.diff("l3"))
	e.sameTree("view rebuilt from Diffs of l2 and l3", want3, e.view("r3"))
	sameList(t, "Changes of l3 against l2", []string{
		"A /a/x", "A /c", "A /c/back", "A /d/fresh", "A /e/inside2",
		"C /a", "C /d", "C /e", "C /f",
		"D /a/new", "D /b", "D /d/keep", "D /e/inside",
	}, e.changes("l3"))
	for _, name := range []string{"/.wh.b", "/a/.wh.new"} {
		if !containsString(tarListing(t, e.diff("l3")), "0 "+name) {
			t.Errorf("Diff of l3 has no whiteout %s", name)
		}
	}
}

func testChain64(t *testing.T, e *env) {
	const depth = 64
	if m := e.b.Caps.MaxChainDepth; m > 0 && m < depth+1 {
		t.Skipf("backend supports chains of %d layers, the case needs %d", m, depth+1)
	}
	var ents []tarEntry
	for i := 0; i < depth; i++ {
		ents = append(ents, tFile(name64(i), "v0\n", 0o644))
	}
	tars := [][]byte{buildTar(t, 0, ents...)}
	e.layer(id64(0), "", tars[0])
	for i := 1; i <= depth; i++ {
		tb := buildTar(t, i, tFile(name64(i-1), strings.Repeat("v", i)+"\n", 0o644))
		tars = append(tars, tb)
		e.layer(id64(i), id64(i-1), tb)
	}
	e.sameTree("top of the chain", reference(t, tars...), e.view(id64(depth)))
	e.sameTree("middle of the chain", reference(t, tars[:depth/2+1]...), e.view(id64(depth/2)))
	for i := 1; i <= depth; i++ {
		sameList(t, "Changes of "+id64(i), []string{"C /" + name64(i-1)}, e.changes(id64(i)))
		sameList(t, "Diff of "+id64(i), []string{"0 /" + name64(i-1)}, tarListing(t, e.diff(id64(i))))
	}
}

func name64(i int) string { return "f" + string(rune('a'+i/26)) + string(rune('a'+i%26)) }

func id64(i int) string { return fmt.Sprintf("l%02d", i) }

func writableParent(t testing.TB) []byte {
	return buildTar(t, 1,
		tFile("keep", "keep\n", 0o644),
		tFile("mod", "before\n", 0o644),
		tFile("del", "delete me\n", 0o644),
		tDir("deldir", 0o755), tFile("deldir/x", "x\n", 0o644), tDir("deldir/y", 0o755),
		tDir("dir2file", 0o755), tFile("dir2file/z", "z\n", 0o644),
		tFile("file2dir", "file\n", 0o644),
		tFile("chmod", "chmod\n", 0o644),
		tDir("sub", 0o755), tFile("sub/inner", "inner\n", 0o644), tFile("sub/stays", "stays\n", 0o644),
		tDir("redir", 0o755), tFile("redir/old1", "old\n", 0o644),
		tFile("big", strings.Repeat("parent data that must not count ", 32<<10), 0o644),
		tFile("xattr", "xattr\n", 0o644).xattr("user.old", "old"),
		tFile("touched", "touched\n", 0o644),
		tFile("chown", "chown\n", 0o644),
	)
}

func testWritableMountDiff(t *testing.T, e *env) {
	p := writableParent(t)
	e.layer("p", "", p)
	e.create("w", "p", &driver.CreateOpts{Writable: true})
	dir, err := e.d.Get(e.ctx, "w", nil)
	if err != nil {
		t.Fatalf("Get(w): %v", err)
	}
	j := func(n string) string { return filepath.Join(dir, n) }
	steps := []struct {
		what string
		err  error
	}{
		{"write added", os.WriteFile(j("added"), []byte("added\n"), 0o644)},
		{"hardlink added-link", os.Link(j("added"), j("added-link"))},
		{"symlink sl", os.Symlink("keep", j("sl"))},
		{"rewrite mod", os.WriteFile(j("mod"), []byte("after, and longer\n"), 0o644)},
		{"delete del", os.Remove(j("del"))},
		{"delete deldir", os.RemoveAll(j("deldir"))},
		{"dir2file: remove dir", os.RemoveAll(j("dir2file"))},
		{"dir2file: write file", os.WriteFile(j("dir2file"), []byte("now a file\n"), 0o644)},
		{"file2dir: remove file", os.Remove(j("file2dir"))},
		{"file2dir: mkdir", os.Mkdir(j("file2dir"), 0o755)},
		{"file2dir: inside", os.WriteFile(j("file2dir/inside"), []byte("inside\n"), 0o644)},
		{"chmod", os.Chmod(j("chmod"), 0o600)},
		{"newdir", os.Mkdir(j("newdir"), 0o700)},
		{"newdir/f", os.WriteFile(j("newdir/f"), []byte("f\n"), 0o644)},
		{"sub/inner", os.Remove(j("sub/inner"))},
		{"sub/newinner", os.WriteFile(j("sub/newinner"), []byte("newinner\n"), 0o644)},
		{"redir: remove", os.RemoveAll(j("redir"))},
		{"redir: mkdir", os.Mkdir(j("redir"), 0o755)},
		{"redir/new", os.WriteFile(j("redir/new"), []byte("new\n"), 0o644)},
		{"setxattr", unix.Lsetxattr(j("xattr"), "user.new", []byte("new"), 0)},
		{"removexattr", unix.Lremovexattr(j("xattr"), "user.old")},
		{"chtimes", os.Chtimes(j("touched"), time.Unix(1e9, 5), time.Unix(1e9, 5))},
		{"chown", os.Lchown(j("chown"), 1000, 1001)},
	}
	for _, s := range steps {
		if s.err != nil {
			t.Errorf("through the mount: %s: %v", s.what, s.err)
		}
	}
	if err := e.d.Put(e.ctx, "w"); err != nil {
		t.Fatalf("Put(w): %v", err)
	}
	sameList(t, "Changes made through the mount", []string{
		"A /added", "A /added-link", "A /file2dir/inside", "A /newdir", "A /newdir/f",
		"A /redir/new", "A /sl", "A /sub/newinner",
		"C /chmod", "C /chown", "C /dir2file", "C /file2dir", "C /mod", "C /redir", "C /sub", "C /touched", "C /xattr",
		"D /del", "D /deldir", "D /redir/old1", "D /sub/inner",
	}, e.changes("w"))
	d := e.diff("w")
	listing := tarListing(t, d)
	for _, wh := range []string{"/.wh.del", "/.wh.deldir", "/sub/.wh.inner"} {
		if !containsString(listing, "0 "+wh) {
			t.Errorf("Diff has no whiteout %s; entries:\n\t%s", wh, strings.Join(listing, "\n\t"))
		}
	}
	if !containsString(listing, "0 /redir/.wh.old1") && !containsString(listing, "0 /redir/.wh..wh..opq") {
		t.Errorf("Diff does not hide the old content of the replaced dir /redir; entries:\n\t%s", strings.Join(listing, "\n\t"))
	}
	for _, s := range listing {
		if strings.Contains(s, "/big") || strings.Contains(s, "/keep") {
			t.Errorf("Diff carries an unchanged parent file: %s", s)
		}
	}
	e.layer("r", "p", d)
	e.sameTree("layer rebuilt from the writable layer's Diff", e.view("w"), e.view("r"))
	n, err := e.d.DiffSize(e.ctx, "w")
	if err != nil {
		t.Fatalf("DiffSize(w): %v", err)
	}
	if n >= 1<<20 {
		t.Errorf("DiffSize of a writable layer with a few small changes = %d: it counts the parent's 1 MiB", n)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func testCompressed(t *testing.T, e *env) {
	tb := kitchenSink(t, e.b.Caps)
	want := reference(t, tb)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var zs bytes.Buffer
	enc, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(tb)
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	plain := e.layer("plain", "", tb)
	for _, c := range []struct {
		id   string
		data []byte
	}{{"gzip", gz.Bytes()}, {"zstd", zs.Bytes()}} {
		n := e.layer(c.id, "", c.data)
		if n != plain {
			t.Errorf("ApplyDiff of the %s tar reported %d bytes, the plain tar %d", c.id, n, plain)
		}
		e.sameTree("view after ApplyDiff of a "+c.id+" tar", want, e.view(c.id))
	}
}

// headerTime returns the mtime of name in tb.
func headerTime(t testing.TB, tb []byte, name string) time.Time {
	t.Helper()
	h := findHeader(t, tb, name)
	if h == nil {
		t.Fatalf("no %s in tar", name)
	}
	return h.ModTime
}

// findHeader returns the header of name in tb, or nil.
func findHeader(t testing.TB, tb []byte, name string) *tar.Header {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(tb))
	for {
		h, err := tr.Next()
		if err != nil {
			return nil
		}
		if strings.TrimSuffix(h.Name, "/") == name {
			return h
		}
	}
}
