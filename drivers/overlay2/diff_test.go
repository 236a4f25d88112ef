package overlay2

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/driver"
)

func TestDecideNativeDiff(t *testing.T) {
	off := func(string) string { return "N" }
	on := func(p string) string { return "Y" }
	all := []string{"index=off", "redirect_dir=off", "metacopy=off"}
	for _, c := range []struct {
		name   string
		safe   []string
		opts   Options
		param  func(string) string
		native bool
		why    string
	}{
		{"mount options turn both off", all, Options{}, on, true, "redirect_dir=off,metacopy=off"},
		{"kernel defaults off", nil, Options{}, off, true, "kernel defaults"},
		{"kernel redirect_dir on, option refused", []string{"index=off", "metacopy=off"}, Options{}, on, false, "redirect_dir=Y"},
		{"metacopy asked for", all, Options{MountOpts: []string{"metacopy=on"}}, off, false, "metacopy=on"},
		{"redirect_dir asked for", all, Options{MountOpts: []string{"redirect_dir=on"}}, off, false, "redirect_dir=on"},
		{"forced", all, Options{ForceNaiveDiff: true}, off, false, "naivediff"},
		{"shown in the test mount", all, Options{}, off, false, "in effect"},
	} {
		h := host{safeOpts: c.safe}
		if strings.HasPrefix(c.name, "shown") {
			h.inEffect = []string{"metacopy=on"}
		}
		h.decideNativeDiff(c.opts, c.param)
		if h.nativeDiff != c.native || !strings.Contains(h.nativeDiffReason, c.why) {
			t.Errorf("%s: native=%v reason %q; want %v and a reason naming %q", c.name, h.nativeDiff, h.nativeDiffReason, c.native, c.why)
		}
	}
}

// TestNativeMatchesNaive: for layers made through the mount and by
// ApplyDiff, the native Changes equal the naive ones and both Diffs
// rebuild the same view.
func TestNativeMatchesNaive(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	mustLayer(t, d, "base", "", mkTar(t, dir("a"), file("a/1", "1"), file("a/2", "2"), dir("b"), dir("b/c"), file("b/c/d", "d"), file("top", "t")))
	mustLayer(t, d, "mid", "base", mkTar(t, dir("a"), file("a/3", "3"), entry{name: "b/.wh.c", typ: '0', mode: 0o644}))
	mustCreate(t, d, "ctr", "mid", true)
	m := mustGet(t, d, "ctr", nil)
	writeFile(t, filepath.Join(m, "a/1"), "changed")
	os.Remove(filepath.Join(m, "a/2"))
	os.RemoveAll(filepath.Join(m, "a"))
	writeFile(t, filepath.Join(m, "a/fresh"), "new a") // opaque a/ now
	writeFile(t, filepath.Join(m, "b/c/x"), "c again")
	os.Chmod(filepath.Join(m, "top"), 0o600)
	mustPut(t, d, "ctr")

	d.Close()
	naive := open(t, root, Options{ForceNaiveDiff: true})
	if naive.Status(context.Background()).NativeDiff {
		t.Fatal("naivediff option did not switch the diff")
	}
	d = open(t, root, Options{})
	for _, id := range []string{"mid", "ctr"} {
		nc, err := d.Changes(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := naive.Changes(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(nc) != fmt.Sprint(rc) {
			t.Errorf("Changes of %s:\nnative %v\nnaive  %v", id, nc, rc)
		}
	}
	rebuild := func(dr *Driver, id, as string) string {
		rc, err := dr.Diff(context.Background(), "ctr")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		io.Copy(&buf, rc)
		rc.Close()
		mustLayer(t, d, as, "mid", buf.Bytes())
		v := mustGet(t, d, as, &driver.MountOpts{ReadOnly: true})
		defer mustPut(t, d, as)
		return listTree(t, v)
	}
	want := listTree(t, mustGet(t, d, "ctr", &driver.MountOpts{ReadOnly: true}))
	mustPut(t, d, "ctr")
	if got := rebuild(d, "ctr", "fromnative"); got != want {
		t.Errorf("view from the native Diff:\n%s\nwant\n%s", got, want)
	}
	if got := rebuild(naive, "ctr", "fromnaive"); got != want {
		t.Errorf("view from the naive Diff:\n%s\nwant\n%s", got, want)
	}
}

// TestUselessWhiteoutsPruned: whiteouts that hide nothing (under a path
// that is a file below, under no path at all, or inside a directory the
// same tar makes opaque) would show in a readdir of the view as names
// that cannot be looked up; ApplyDiff drops them.
func TestUselessWhiteoutsPruned(t *testing.T) {
	d := open(t, testRoot(t), Options{})
	mustLayer(t, d, "p", "", mkTar(t, dir("a"), file("a/x", "x"), file("f", "file")))
	wh := func(name string) entry { return entry{name: name, typ: '0', mode: 0o644} }
	mustLayer(t, d, "c", "p", mkTar(t,
		dir("a"), wh("a/.wh..wh..opq"), wh("a/.wh.x"), file("a/y", "y"),
		dir("f2"), wh("f2/.wh.nothing"), wh(".wh.f")))
	v := mustGet(t, d, "c", &driver.MountOpts{ReadOnly: true})
	defer mustPut(t, d, "c")
	got := listTree(t, v) // fails on a listed name that cannot be stat'ed
	for _, gone := range []string{"/a/x ", "/f "} {
		if strings.Contains(got, gone) {
			t.Errorf("%s still in the view:\n%s", gone, got)
		}
	}
	ch, err := d.Changes(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	// /a keeps its metadata, so it is not a change itself.
	if want := "[C /a D /a/x A /a/y D /f A /f2]"; fmt.Sprint(ch) != want {
		t.Errorf("Changes = %v, want %s", ch, want)
	}
}
