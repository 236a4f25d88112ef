package conformance

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

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/layergen"
)

func faultCases() []testCase {
	return []testCase{
		{"HostileTars", testHostileTars},
		{"HostileTarsLayergen", testHostileLayergen},
		{"CanceledApplyDiff", testCanceledApplyDiff},
		{"FailedApplyKeepsFilledLayer", testFailedApplyKeepsFilledLayer},
		{"CanceledDiff", testCanceledDiff},
		{"DiffRacingWriter", testDiffRacingWriter},
		{"NoSpace", testNoSpace},
		{"StackedTarsMatchReference", testStackedTarsMatchReference},
		{"SizeOfReadOnlyLayerWrittenThroughGet", testSizeOfReadOnlyLayerWrittenThroughGet},
	}
}

// hostile is one malicious or broken layer tar. Refused ones must fail
// ApplyDiff; contained ones (an absolute name, a path through a symlink)
// are legal in real layers and archive resolves them inside the layer, so
// they may succeed, but never write outside.
type hostile struct {
	name    string
	tar     []byte
	refused bool
	// inside, for a contained tar that succeeded, is a path that must now
	// exist in the layer's view: where the write really went.
	inside string
}

// hostileCorpus aims every escape at out, a directory outside the backend
// root holding "target" and "victim" files and a "dir" with one file.
func hostileCorpus(t testing.TB, out string) []hostile {
	climb := strings.Repeat("../", 48) + strings.TrimPrefix(out, "/")
	good := kitchenSink(t, Caps{NoDevices: true})
	var h []hostile
	add := func(name string, refused bool, inside string, ents ...tarEntry) {
		h = append(h, hostile{name: name, tar: buildTar(t, 9, ents...), refused: refused, inside: inside})
	}
	add("dotdot", true, "", tFile(climb+"/dotdot", "escaped\n", 0o644))
	add("dotdot-middle", true, "", tDir("a", 0o755), tFile("a/../../"+climb+"/middle", "escaped\n", 0o644))
	add("dotdot-dir", true, "", tDir(climb+"/newdir", 0o755))
	add("absolute-name", false, out+"/abs", tFile(out+"/abs", "contained\n", 0o644))
	add("symlink-abs-dir", false, out+"/viasym",
		tSymlink("esc", out), tFile("esc/viasym", "through an absolute symlink\n", 0o644))
	add("symlink-rel-dir", false, "",
		tSymlink("rel", climb), tFile("rel/viarel", "through a relative symlink\n", 0o644))
	add("symlink-then-file", false, "",
		tSymlink("over", out+"/target"), tFile("over", "replaces the link, not its target\n", 0o644))
	add("symlink-chain", false, "",
		tSymlink("s1", "s2"), tSymlink("s2", climb), tDir("s1/chained", 0o755), tFile("s1/chained/f", "x\n", 0o644))
	add("parent-symlink", false, "", tFile("plink/from-child", "through the parent's symlink\n", 0o644))
	add("hardlink-dotdot", true, "", tHardlink("hl", climb+"/target"))
	add("hardlink-abs", true, "", tHardlink("hl", out+"/target"))
	add("hardlink-via-symlink", true, "", tSymlink("hs", out), tHardlink("hl", "hs/target"))
	add("hardlink-via-parent-symlink", true, "", tHardlink("hl", "plink/target"))
	add("whiteout-dotdot", true, "", tWhiteout(climb+"/victim"))
	add("whiteout-via-symlink", false, "", tWhiteout("plink/victim"))
	add("opaque-via-symlink", false, "", tOpaque("plink/dir"))
	add("opaque-dotdot", true, "", tOpaque(climb+"/dir"))
	add("whiteout-root", true, "", tWhiteout(".."))
	add("file-as-root", true, "", tFile(".", "the root as a file\n", 0o644))
	add("long-name", true, "", tFile(strings.Repeat("n", 300), "x\n", 0o644))
	add("long-path", true, "", tFile(strings.Repeat("d/", 3000)+"f", "x\n", 0o644))
	add("huge-uid", true, "", tFile("uid", "x\n", 0o644).owner(1<<40, 0))
	// archive/tar will not write a NUL in a PAX path: patch it in after.
	nul := buildTar(t, 9, tFile("nul-placeholder-"+strings.Repeat("x", 120), "x\n", 0o644))
	nul = bytes.Replace(nul, []byte("nul-placeholder-"), []byte("nul\x00laceholder-"), 1)
	h = append(h, hostile{name: "nul-in-name", tar: nul, refused: true})

	// Forged size: the header claims far more content than follows.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "huge", Mode: 0o644, Size: 1 << 50, Format: tar.FormatPAX})
	tw.Write(bytes.Repeat([]byte("x"), 4096))
	h = append(h, hostile{name: "huge-size", tar: buf.Bytes(), refused: true})
	h = append(h, hostile{name: "truncated", tar: good[:len(good)*2/3], refused: true})
	// Cut exactly after a whole entry: archive/tar reads this as a clean
	// end, so only a missing end-of-archive trailer tells it from a whole
	// layer. A download cut there must not become a published layer.
	two := buildTar(t, 9, tFile("first", "first\n", 0o644), tFile("second", "second\n", 0o644))
	one := buildTar(t, 9, tFile("first", "first\n", 0o644))
	h = append(h, hostile{name: "truncated-at-entry-boundary", tar: two[:len(one)-1024], refused: true})
	h = append(h, hostile{name: "truncated-in-padding", tar: two[:len(one)-1024-200], refused: true})
	// Cut after a file whose content ends in zeros: the stream's last
	// 1024 bytes are zero as a trailer's are (issue 12).
	zeros := tFile("zeros", "head"+strings.Repeat("\x00", 8192), 0o644)
	zwhole := buildTar(t, 9, zeros, tFile("after", "after\n", 0o644))
	zone := buildTar(t, 9, zeros)
	h = append(h, hostile{name: "truncated-after-zeros", tar: zwhole[:len(zone)-1024], refused: true})
	// A few KiB declaring 8 TiB of sparse holes: refused by the hole
	// budget (archive.ApplyOptions.MaxHoleBytes), not unpacked for hours.
	h = append(h, hostile{name: "sparse-bomb", refused: true, tar: layergen.SparseTar(
		layergen.SparseFile{Name: "a", Size: 4 << 40, Offset: 4<<40 - 5, Data: "tail\n"},
		layergen.SparseFile{Name: "b", Size: 4 << 40, Data: "head\n"})})
	h = append(h, hostile{name: "garbage", tar: bytes.Repeat([]byte("not a tar, just bytes "), 200), refused: true})
	return h
}

func testHostileTars(t *testing.T, e *env) {
	out := TempRoot(t)
	for _, f := range []string{"target", "victim", "dir/inner"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(out, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, f), []byte("outside: "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outBefore, err := fstree.Snapshot(out)
	if err != nil {
		t.Fatal(err)
	}
	p := buildTar(t, 1, tFile("target", "the layer's own target\n", 0o644), tSymlink("plink", out), tFile("keep", "keep\n", 0o644))
	e.layer("p", "", p)
	pWant := reference(t, p)
	for i, hc := range hostileCorpus(t, out) {
		id := fmt.Sprintf("h%02d", i)
		t.Run(hc.name, func(t *testing.T) {
			e := e.sub(t)
			e.create(id, "p", nil)
			before := e.rootPaths()
			_, err := e.d.ApplyDiff(e.ctx, id, bytes.NewReader(hc.tar))
			if err != nil {
				e.sameRoot("refused ApplyDiff", before)
			}
			switch {
			case hc.refused && err == nil:
				t.Errorf("ApplyDiff succeeded; want an error")
			case err != nil && !hc.refused:
				t.Logf("contained tar refused (allowed): %v", err)
			case err != nil:
				t.Logf("refused: %v", err)
			default:
				// Contained is not enough: the view is what the layers
				// applied in order give, as on every other backend.
				e.sameAsReference("accepted hostile tar: view against the reference", reference(t, p, hc.tar), e.view(id))
			}
			outAfter, serr := fstree.Snapshot(out)
			if serr != nil {
				t.Fatal(serr)
			}
			sameTreeOpts(t, "directory outside the root after ApplyDiff", outBefore, outAfter, fstree.Options{})
			e.sameTree("parent after a hostile ApplyDiff on its child", pWant, e.view("p"))
			if err == nil && hc.inside != "" {
				v := e.view(id)
				if v.Entries["/"+strings.TrimPrefix(hc.inside, "/")] == nil {
					t.Errorf("contained write did not land at %s inside the layer:\n%s", hc.inside, dump(v))
				}
			}
			// Whatever ApplyDiff left, the driver stays usable: the layer
			// can be read and removed, and its ID reused.
			if e.d.Exists(id) {
				e.view(id)
				if err := e.d.Remove(e.ctx, id); err != nil {
					t.Errorf("Remove after a hostile ApplyDiff: %v", err)
				}
			}
			if err := e.d.Create(e.ctx, id, "p", nil); err != nil {
				t.Fatalf("after a failed ApplyDiff the layer neither exists (Exists = false) nor is its ID free: Create = %v", err)
			}
			e.apply(id, smallLayer(t, "good", 2))
			e.sameTree("layer reused after a hostile ApplyDiff", reference(t, p, smallLayer(t, "good", 2)), e.view(id))
			if err := e.d.Remove(e.ctx, id); err != nil {
				t.Errorf("Remove: %v", err)
			}
		})
	}
	e.reopen()
	e.sameTree("parent after the hostile corpus and a reopen", pWant, e.view("p"))
	e.noMounts("after the hostile corpus")
}

// testFailedApplyKeepsFilledLayer: a second ApplyDiff onto a layer that
// already has content, which adds, replaces and deletes files before it
// hits a bad entry, must leave the layer exactly as it was (DESIGN.md: bad
// input changes nothing on disk), not half-applied yet marked complete.
func testFailedApplyKeepsFilledLayer(t *testing.T, e *env) {
	first := buildTar(t, 1, tDir("d", 0o755), tFile("d/a", "first\n", 0o644), tFile("keep", "keep\n", 0o644))
	e.layer("L", "", first)
	want := e.view("L")
	size, err := e.d.DiffSize(e.ctx, "L")
	if err != nil {
		t.Fatal(err)
	}
	bad := buildTar(t, 2,
		tFile("new", "new\n", 0o644), tFile("d/a", "changed\n", 0o644), tWhiteout("keep"),
		tFile(strings.Repeat("../", 40)+"escape", "x\n", 0o644))
	if _, err := e.d.ApplyDiff(e.ctx, "L", bytes.NewReader(bad)); err == nil {
		t.Fatal("ApplyDiff of a tar with an escaping entry succeeded")
	}
	if !e.d.Exists("L") {
		t.Fatal("a failed ApplyDiff removed a layer that was complete before it")
	}
	e.sameTree("layer after a failed second ApplyDiff", want, e.view("L"))
	if got, err := e.d.DiffSize(e.ctx, "L"); err != nil || got != size {
		t.Errorf("DiffSize after a failed ApplyDiff = %d, %v; want %d", got, err, size)
	}
	e.reopen()
	if !e.d.Exists("L") {
		t.Fatal("layer gone after reopen: the failed ApplyDiff left it marked half-applied")
	}
	e.sameTree("layer after a failed second ApplyDiff and a reopen", want, e.view("L"))
}

// sub is the same env reporting to a subtest.
func (e *env) sub(t testing.TB) *env {
	c := *e
	c.t = t
	return &c
}

// testHostileLayergen applies the archive package's own hostile corpus
// through the driver: refused tars leave the root exactly as it was (the
// driver package promises that bad input changes nothing on disk), no
// absolute escape target appears on the host, and what an accepted tar
// adds under the root shows up in the layer's view.
func testHostileLayergen(t *testing.T, e *env) {
	p := smallLayer(t, "p", 1)
	e.layer("p", "", p)
	pWant := reference(t, p)
	for i, c := range layergen.Hostile() {
		id := fmt.Sprintf("g%02d", i)
		t.Run(c.Name, func(t *testing.T) {
			e := e.sub(t)
			e.create(id, "p", nil)
			before := e.rootPaths()
			_, err := e.d.ApplyDiff(e.ctx, id, bytes.NewReader(c.Tar))
			if c.WantErr && err == nil {
				t.Errorf("ApplyDiff succeeded; want an error")
			}
			for _, esc := range c.Escapes {
				if filepath.IsAbs(esc) {
					if _, serr := os.Lstat(esc); serr == nil {
						t.Errorf("ApplyDiff wrote %s on the host", esc)
						os.RemoveAll(esc)
					}
				}
			}
			after := e.rootPaths()
			if err != nil {
				t.Logf("refused: %v", err)
				sameList(t, "refused ApplyDiff: paths under the root differ from before", before, after)
			} else if e.d.Exists(id) {
				explained(t, before, after, e.view(id))
			}
			e.sameTree("parent after a hostile ApplyDiff on its child", pWant, e.view("p"))
			if e.d.Exists(id) {
				if err := e.d.Remove(e.ctx, id); err != nil {
					t.Errorf("Remove after a hostile ApplyDiff: %v", err)
				}
			}
			e.create(id, "p", nil)
			if err := e.d.Remove(e.ctx, id); err != nil {
				t.Errorf("Remove: %v", err)
			}
		})
	}
	e.noMounts("after the hostile corpus")
}

// explained checks that every path an accepted ApplyDiff added under the
// root (but for special files) is a path of the layer's view (by suffix, since where a backend
// keeps a layer's files is its own business): anything else escaped the
// layer into the backend's own directories.
func explained(t testing.TB, before, after []string, view *fstree.Tree) {
	t.Helper()
	old := map[string]bool{}
	for _, p := range before {
		old[p] = true
	}
	var bad []string
	for _, p := range after {
		if old[p] {
			continue
		}
		typ, path, _ := strings.Cut(p, " ")
		// Whiteouts stored the overlay way are char devices the view
		// never shows, even where they hide nothing.
		ok := typ == "special"
		for vp, ve := range view.Entries {
			if vp != "/" && typeName(ve.Type) == typ && strings.HasSuffix(path, vp) {
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("ApplyDiff added paths under the root that are not in the layer's view:\n\t%s\nview:\n%s", strings.Join(bad, "\n\t"), dump(view))
	}
}

// cancelAfter reads from r and cancels when more than n bytes went by,
// so the cancel lands in the middle of a stream, deterministically.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	m, err := c.r.Read(p)
	c.n -= int64(m)
	if c.n < 0 {
		c.cancel()
	}
	return m, err
}

// A canceled ApplyDiff stops with the context's error and, like any
// refused tar, leaves nothing behind.
func testCanceledApplyDiff(t *testing.T, e *env) {
	p := smallLayer(t, "p", 1)
	e.layer("p", "", p)
	e.create("c", "p", nil)
	big := bigLayer(t, 300)
	before := e.rootPaths()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	_, err := e.d.ApplyDiff(ctx, "c", &cancelAfter{r: bytes.NewReader(big), n: int64(len(big) / 3), cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ApplyDiff canceled mid-stream = %v, want an error wrapping context.Canceled", err)
	}
	e.sameRoot("canceled ApplyDiff", before)
	if e.d.Exists("c") {
		e.sameTree("layer after a canceled ApplyDiff", reference(t, p), e.view("c"))
		e.apply("c", big)
	} else {
		e.layer("c", "p", big)
	}
	e.sameTree("layer applied after a canceled ApplyDiff", reference(t, p, big), e.view("c"))
}

// A Diff whose context is canceled mid-stream must end in an error, never
// in a clean EOF: a cut tar that reads as whole would become a corrupt
// layer downstream. Its views are released: the layer can be removed.
func testCanceledDiff(t *testing.T, e *env) {
	big := bigLayer(t, 300)
	e.layer("l", "", big)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	rc, err := e.d.Diff(ctx, "l")
	if err != nil {
		t.Fatalf("Diff: %v", err)
	}
	_, err = io.Copy(io.Discard, &cancelAfter{r: rc, n: int64(len(big) / 3), cancel: cancel})
	rc.Close()
	if err == nil {
		t.Errorf("Diff canceled mid-stream read to a clean end")
	} else if !errors.Is(err, context.Canceled) {
		t.Logf("Diff canceled mid-stream failed with %v (not wrapping context.Canceled)", err)
	}
	if err := e.d.Remove(e.ctx, "l"); err != nil {
		t.Errorf("Remove after a canceled Diff: %v", err)
	}
	e.noMounts("after a canceled Diff")
}
