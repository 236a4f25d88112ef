package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stratafs/strata/driver"
)

func lifecycleCases() []testCase {
	return []testCase{
		{"CreateRemoveExists", testCreateRemoveExists},
		{"ParentChain", testParentChain},
		{"RemoveWithChildren", testRemoveWithChildren},
		{"GetPutRefcount", testGetPutRefcount},
		{"RemoveWhileMounted", testRemoveWhileMounted},
		{"ApplyDiffOnBusyLayer", testApplyDiffOnBusyLayer},
		{"Closed", testClosed},
		{"BadIDs", testBadIDs},
		{"MissingParent", testMissingParent},
		{"MissingLayer", testMissingLayer},
		{"Duplicate", testDuplicate},
		{"Reopen", testReopen},
		{"Concurrent", testConcurrent},
		{"ConcurrentParentRemove", testConcurrentParentRemove},
		{"TwoRoots", testTwoRoots},
		{"Status", testStatus},
		{"VolatileMount", testVolatileMount},
	}
}

// isErr checks that err wraps want and, as the driver package promises,
// carries the operation and layer in a *driver.LayerError.
func isErr(t testing.TB, what string, err, want error) bool {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want an error wrapping %q", what, err, want)
		return false
	}
	var le *driver.LayerError
	if !errors.As(err, &le) {
		t.Errorf("%s = %v (%T): not a *driver.LayerError", what, err, err)
		return false
	}
	return true
}

// smallLayer is a tiny tar whose file names carry tag, so that each layer
// of a chain adds something of its own.
func smallLayer(t testing.TB, tag string, salt int) []byte {
	return buildTar(t, salt,
		tDir(tag, 0o755),
		tFile(tag+"/file", "content of "+tag+"\n", 0o644),
		tFile("shared", "last written by "+tag+"\n", 0o644),
	)
}

func testCreateRemoveExists(t *testing.T, e *env) {
	d := e.d
	if d.Exists("base") {
		t.Fatalf("Exists(base) before Create")
	}
	e.create("base", "", nil)
	if !d.Exists("base") {
		t.Errorf("Exists(base) = false after Create")
	}
	// A fresh layer is empty.
	e.sameTree("empty layer", reference(t), e.view("base"))
	if n, err := d.DiffSize(e.ctx, "base"); err != nil || n != 0 {
		t.Errorf("DiffSize of an empty layer = %d, %v; want 0, nil", n, err)
	}
	if err := d.Remove(e.ctx, "base"); err != nil {
		t.Fatalf("Remove(base): %v", err)
	}
	if d.Exists("base") {
		t.Errorf("Exists(base) = true after Remove")
	}
	isErr(t, "second Remove(base)", d.Remove(e.ctx, "base"), driver.ErrLayerNotFound)
	// The ID is free again.
	e.create("base", "", nil)
	e.noMounts("after create/remove")
}

func testParentChain(t *testing.T, e *env) {
	l1, l2, l3 := smallLayer(t, "one", 1), smallLayer(t, "two", 2), smallLayer(t, "three", 3)
	e.layer("one", "", l1)
	e.layer("two", "one", l2)
	e.layer("three", "two", l3)
	e.sameTree("view of one", reference(t, l1), e.view("one"))
	e.sameTree("view of two", reference(t, l1, l2), e.view("two"))
	e.sameTree("view of three", reference(t, l1, l2, l3), e.view("three"))
	// Siblings on one parent see the parent, not each other.
	e.create("sibling", "one", nil)
	e.sameTree("view of an empty child", reference(t, l1), e.view("sibling"))
	if l, ok := e.d.(driver.Lister); ok {
		checkLayers(t, e, l, map[string]string{"one": "", "two": "one", "three": "two", "sibling": "one"})
	}
}

// checkLayers compares Lister's answer with id -> parent.
func checkLayers(t testing.TB, e *env, l driver.Lister, want map[string]string) {
	t.Helper()
	infos, err := l.Layers(e.ctx)
	if err != nil {
		t.Errorf("Layers: %v", err)
		return
	}
	var w, g []string
	for id, p := range want {
		w = append(w, id+" <- "+p)
	}
	for _, in := range infos {
		g = append(g, in.ID+" <- "+in.Parent)
	}
	sort.Strings(w)
	if !sort.StringsAreSorted(g) {
		t.Errorf("Layers not sorted by ID: %v", g)
	}
	sort.Strings(g)
	sameList(t, "Layers (id <- parent)", w, g)
}

func testRemoveWithChildren(t *testing.T, e *env) {
	l1, l2 := smallLayer(t, "one", 1), smallLayer(t, "two", 2)
	e.layer("one", "", l1)
	e.layer("two", "one", l2)
	before := e.rootState()
	isErr(t, "Remove of a parent", e.d.Remove(e.ctx, "one"), driver.ErrHasChildren)
	e.unchanged("failed Remove of a parent", before)
	if !e.d.Exists("one") || !e.d.Exists("two") {
		t.Fatalf("after failed Remove: Exists(one)=%v Exists(two)=%v", e.d.Exists("one"), e.d.Exists("two"))
	}
	e.sameTree("child after failed Remove of its parent", reference(t, l1, l2), e.view("two"))
	if err := e.d.Remove(e.ctx, "two"); err != nil {
		t.Fatalf("Remove(two): %v", err)
	}
	if err := e.d.Remove(e.ctx, "one"); err != nil {
		t.Fatalf("Remove(one) once its child is gone: %v", err)
	}
}

func testGetPutRefcount(t *testing.T, e *env) {
	e.layer("base", "", smallLayer(t, "base", 1))
	e.create("ctr", "base", &driver.CreateOpts{Writable: true})
	p1, err := e.d.Get(e.ctx, "ctr", nil)
	if err != nil {
		t.Fatalf("first Get: %v", err)
	}
	p2, err := e.d.Get(e.ctx, "ctr", nil)
	if err != nil {
		t.Fatalf("second Get: %v", err)
	}
	if p1 != p2 {
		t.Errorf("two Gets of one layer gave different paths %q and %q", p1, p2)
	}
	if err := os.WriteFile(filepath.Join(p1, "written"), []byte("through the mount\n"), 0o644); err != nil {
		t.Fatalf("writing through the mount: %v", err)
	}
	if err := e.d.Put(e.ctx, "ctr"); err != nil {
		t.Fatalf("first Put: %v", err)
	}
	// One Get is still outstanding: the view must still be there.
	if data, err := os.ReadFile(filepath.Join(p2, "base", "file")); err != nil || string(data) != "content of base\n" {
		t.Errorf("after one of two Puts, reading the view: %q, %v", data, err)
	}
	isErr(t, "Remove with one Get outstanding", e.d.Remove(e.ctx, "ctr"), driver.ErrLayerInUse)
	if !e.d.Exists("ctr") {
		t.Fatalf("failed Remove deleted the layer")
	}
	if err := e.d.Put(e.ctx, "ctr"); err != nil {
		t.Fatalf("second Put: %v", err)
	}
	e.noMounts("after the last Put")
	if err := e.d.Put(e.ctx, "ctr"); err == nil {
		t.Errorf("Put without a Get succeeded")
	}
	if err := e.d.Put(e.ctx, "base"); err == nil {
		t.Errorf("Put of a layer never mounted succeeded")
	}
	// The count is not driven negative: one Get and one Put still pair up.
	if _, err := e.d.Get(e.ctx, "ctr", nil); err != nil {
		t.Fatalf("Get after stray Puts: %v", err)
	}
	if err := e.d.Put(e.ctx, "ctr"); err != nil {
		t.Fatalf("Put after stray Puts: %v", err)
	}
	// What was written through the mount is kept after unmounting.
	want := reference(t, smallLayer(t, "base", 1))
	got := e.view("ctr")
	if en := got.Entries["/written"]; en == nil || en.Size != int64(len("through the mount\n")) {
		t.Errorf("file written through the mount lost after Put: %+v", en)
	}
	delete(got.Entries, "/written")
	e.sameTree("writable layer after Put", want, got)
	if err := e.d.Remove(e.ctx, "ctr"); err != nil {
		t.Fatalf("Remove after all Puts: %v", err)
	}
	e.noMounts("after Remove")
}

func testRemoveWhileMounted(t *testing.T, e *env) {
	e.layer("base", "", smallLayer(t, "base", 1))
	if _, err := e.d.Get(e.ctx, "base", nil); err != nil {
		t.Fatalf("Get: %v", err)
	}
	isErr(t, "Remove of a mounted read-only layer", e.d.Remove(e.ctx, "base"), driver.ErrLayerInUse)
	if !e.d.Exists("base") {
		t.Fatalf("failed Remove deleted the layer")
	}
	if err := e.d.Put(e.ctx, "base"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	e.sameTree("layer after failed Remove", reference(t, smallLayer(t, "base", 1)), e.view("base"))
}

func testApplyDiffOnBusyLayer(t *testing.T, e *env) {
	l1 := smallLayer(t, "one", 1)
	e.layer("one", "", l1)
	e.create("two", "one", nil)
	more := smallLayer(t, "more", 2)
	before := e.rootState()
	_, err := e.d.ApplyDiff(e.ctx, "one", bytes.NewReader(more))
	isErr(t, "ApplyDiff on a layer with children", err, driver.ErrHasChildren)
	e.unchanged("ApplyDiff on a layer with children", before)

	e.create("three", "", nil)
	if _, err := e.d.Get(e.ctx, "three", nil); err != nil {
		t.Fatalf("Get(three): %v", err)
	}
	_, err = e.d.ApplyDiff(e.ctx, "three", bytes.NewReader(more))
	isErr(t, "ApplyDiff on a mounted layer", err, driver.ErrLayerInUse)
	if err := e.d.Put(e.ctx, "three"); err != nil {
		t.Fatalf("Put(three): %v", err)
	}
	e.sameTree("mounted layer after refused ApplyDiff", reference(t), e.view("three"))
	e.sameTree("parent after refused ApplyDiff", reference(t, l1), e.view("two"))
}

func testClosed(t *testing.T, e *env) {
	e.layer("base", "", smallLayer(t, "base", 1))
	d := e.d
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := e.ctx
	isErr(t, "Create after Close", d.Create(ctx, "new", "", nil), driver.ErrClosed)
	isErr(t, "Create of a child after Close", d.Create(ctx, "new", "base", nil), driver.ErrClosed)
	isErr(t, "Remove after Close", d.Remove(ctx, "base"), driver.ErrClosed)
	_, err := d.Get(ctx, "base", nil)
	isErr(t, "Get after Close", err, driver.ErrClosed)
	isErr(t, "Put after Close", d.Put(ctx, "base"), driver.ErrClosed)
	rc, err := d.Diff(ctx, "base")
	if rc != nil {
		rc.Close()
	}
	isErr(t, "Diff after Close", err, driver.ErrClosed)
	_, err = d.Changes(ctx, "base")
	isErr(t, "Changes after Close", err, driver.ErrClosed)
	_, err = d.ApplyDiff(ctx, "base", bytes.NewReader(smallLayer(t, "x", 2)))
	isErr(t, "ApplyDiff after Close", err, driver.ErrClosed)
	_, err = d.DiffSize(ctx, "base")
	isErr(t, "DiffSize after Close", err, driver.ErrClosed)
	_ = d.Status(ctx) // must not panic
	// The layer survives: a new driver on the root sees it.
	e.d = e.open()
	if !e.d.Exists("base") {
		t.Errorf("layer lost after Close and reopen")
	}
}

// badIDs are IDs every backend must refuse. The escape names are unique
// per case so that a hit outside the root is certainly ours.
func badIDs(tag string) []string {
	return []string{
		"",
		"../x",
		"../" + tag,
		"../../" + tag,
		"/abs" + tag,
		"a/b",
		strings.Repeat("a", 200),
		".hidden",
		".",
		"..",
		"-dash",
		"a b",
		"nul\x00byte",
		"new\nline",
		"ünïcode",
	}
}

func testBadIDs(t *testing.T, e *env) {
	tag := fmt.Sprintf("strata-escape-%s", filepath.Base(e.root))
	e.layer("base", "", smallLayer(t, "base", 1))
	outside := []string{
		filepath.Join(e.root, "..", tag),
		filepath.Join(e.root, "..", "..", tag),
		filepath.Join("/", "abs"+tag),
	}
	tb := smallLayer(t, "x", 2)
	before := e.rootState()
	ctx := e.ctx
	for _, id := range badIDs(tag) {
		q := fmt.Sprintf("%q", id)
		isErr(t, "Create("+q+")", e.d.Create(ctx, id, "", nil), driver.ErrInvalidID)
		if id != "" { // "" is no parent: a base layer
			isErr(t, "Create(child of "+q+")", e.d.Create(ctx, "child", id, nil), driver.ErrInvalidID)
		}
		isErr(t, "Create(writable "+q+")", e.d.Create(ctx, id, "base", &driver.CreateOpts{Writable: true}), driver.ErrInvalidID)
		isErr(t, "Remove("+q+")", e.d.Remove(ctx, id), driver.ErrInvalidID)
		_, err := e.d.Get(ctx, id, nil)
		isErr(t, "Get("+q+")", err, driver.ErrInvalidID)
		isErr(t, "Put("+q+")", e.d.Put(ctx, id), driver.ErrInvalidID)
		rc, err := e.d.Diff(ctx, id)
		if rc != nil {
			rc.Close()
		}
		isErr(t, "Diff("+q+")", err, driver.ErrInvalidID)
		_, err = e.d.Changes(ctx, id)
		isErr(t, "Changes("+q+")", err, driver.ErrInvalidID)
		_, err = e.d.ApplyDiff(ctx, id, bytes.NewReader(tb))
		isErr(t, "ApplyDiff("+q+")", err, driver.ErrInvalidID)
		_, err = e.d.DiffSize(ctx, id)
		isErr(t, "DiffSize("+q+")", err, driver.ErrInvalidID)
		if e.d.Exists(id) {
			t.Errorf("Exists(%s) = true", q)
		}
	}
	e.unchanged("operations with bad IDs", before)
	for _, p := range outside {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("a bad ID made %s outside the root", p)
			os.RemoveAll(p)
		}
	}
	if e.d.Exists("child") {
		t.Errorf("Create of a child of a bad parent made the child")
	}
}

func testMissingParent(t *testing.T, e *env) {
	e.layer("base", "", smallLayer(t, "base", 1))
	before := e.rootState()
	isErr(t, "Create on a missing parent", e.d.Create(e.ctx, "child", "nope", nil), driver.ErrLayerNotFound)
	isErr(t, "Create writable on a missing parent", e.d.Create(e.ctx, "child", "nope", &driver.CreateOpts{Writable: true}), driver.ErrLayerNotFound)
	e.unchanged("Create on a missing parent", before)
	if e.d.Exists("child") {
		t.Errorf("Exists(child) after failed Create")
	}
	// The ID was not half-taken.
	e.create("child", "base", nil)
}

func testMissingLayer(t *testing.T, e *env) {
	e.layer("base", "", smallLayer(t, "base", 1))
	before := e.rootState()
	ctx, id := e.ctx, "missing"
	isErr(t, "Remove of a missing layer", e.d.Remove(ctx, id), driver.ErrLayerNotFound)
	_, err := e.d.Get(ctx, id, nil)
	isErr(t, "Get of a missing layer", err, driver.ErrLayerNotFound)
	if err := e.d.Put(ctx, id); err == nil {
		t.Errorf("Put of a missing layer succeeded")
	}
	rc, err := e.d.Diff(ctx, id)
	if rc != nil {
		rc.Close()
	}
	isErr(t, "Diff of a missing layer", err, driver.ErrLayerNotFound)
	_, err = e.d.Changes(ctx, id)
	isErr(t, "Changes of a missing layer", err, driver.ErrLayerNotFound)
	_, err = e.d.ApplyDiff(ctx, id, bytes.NewReader(smallLayer(t, "x", 2)))
	isErr(t, "ApplyDiff to a missing layer", err, driver.ErrLayerNotFound)
	_, err = e.d.DiffSize(ctx, id)
	isErr(t, "DiffSize of a missing layer", err, driver.ErrLayerNotFound)
	e.unchanged("operations on a missing layer", before)
}

func testDuplicate(t *testing.T, e *env) {
	l1 := smallLayer(t, "base", 1)
	e.layer("base", "", l1)
	e.layer("other", "", smallLayer(t, "other", 2))
	before := e.rootState()
	isErr(t, "Create of an existing ID", e.d.Create(e.ctx, "base", "", nil), driver.ErrLayerExists)
	isErr(t, "Create of an existing ID on another parent", e.d.Create(e.ctx, "base", "other", nil), driver.ErrLayerExists)
	isErr(t, "Create of an existing ID as its own child", e.d.Create(e.ctx, "base", "base", &driver.CreateOpts{Writable: true}), driver.ErrLayerExists)
	e.unchanged("Create of an existing ID", before)
	e.sameTree("layer after duplicate Create", reference(t, l1), e.view("base"))
}

func testReopen(t *testing.T, e *env) {
	l1, l2, l3 := kitchenSink(t, e.b.Caps), smallLayer(t, "two", 2), smallLayer(t, "three", 3)
	n1 := e.layer("one", "", l1)
	e.layer("two", "one", l2)
	e.layer("three", "two", l3)
	e.create("ctr", "three", &driver.CreateOpts{Writable: true, Labels: map[string]string{"role": "container"}})
	dir, err := e.d.Get(e.ctx, "ctr", nil)
	if err != nil {
		t.Fatalf("Get(ctr): %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "container-file"), []byte("kept across reopen\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Put(e.ctx, "ctr"); err != nil {
		t.Fatalf("Put(ctr): %v", err)
	}
	ctrBefore := e.view("ctr")
	e.reopen()
	for _, id := range []string{"one", "two", "three", "ctr"} {
		if !e.d.Exists(id) {
			t.Errorf("after reopen: Exists(%s) = false", id)
		}
	}
	if l, ok := e.d.(driver.Lister); ok {
		checkLayers(t, e, l, map[string]string{"one": "", "two": "one", "three": "two", "ctr": "three"})
		if infos, err := l.Layers(e.ctx); err == nil {
			for _, in := range infos {
				if in.ID == "ctr" && (!in.Writable || in.Labels["role"] != "container") {
					t.Errorf("after reopen: ctr lost its options: writable=%v labels=%v", in.Writable, in.Labels)
				}
			}
		}
	}
	e.sameTree("one after reopen", reference(t, l1), e.view("one"))
	e.sameTree("three after reopen", reference(t, l1, l2, l3), e.view("three"))
	e.sameTree("writable layer after reopen", ctrBefore, e.view("ctr"))
	if n, err := e.d.DiffSize(e.ctx, "one"); err != nil || n != n1 {
		t.Errorf("after reopen: DiffSize(one) = %d, %v; want %d as ApplyDiff reported", n, err, n1)
	}
	// The reopened driver is fully usable.
	e.create("four", "three", nil)
	if err := e.d.Remove(e.ctx, "ctr"); err != nil {
		t.Errorf("Remove(ctr) after reopen: %v", err)
	}
	isErr(t, "Remove(two) after reopen", e.d.Remove(e.ctx, "two"), driver.ErrHasChildren)
}

// A volatile mount is honoured or refused with ErrNotSupported, never
// silently turned into something else; honoured, it works like any mount
// while the driver runs.
func testVolatileMount(t *testing.T, e *env) {
	e.layer("base", "", smallLayer(t, "base", 1))
	e.create("ctr", "base", &driver.CreateOpts{Writable: true})
	dir, err := e.d.Get(e.ctx, "ctr", &driver.MountOpts{Volatile: true})
	if err != nil {
		isErr(t, "Get with Volatile", err, driver.ErrNotSupported)
		t.Logf("volatile mounts refused: %v", err)
		e.noMounts("after a refused volatile Get")
		return
	}
	if err := os.WriteFile(filepath.Join(dir, "scratch"), []byte("scratch\n"), 0o644); err != nil {
		t.Errorf("writing through a volatile mount: %v", err)
	}
	if err := e.d.Put(e.ctx, "ctr"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	e.noMounts("after the volatile layer's Put")
	sameList(t, "Changes made through a volatile mount", []string{"A /scratch"}, e.changes("ctr"))
	if err := e.d.Remove(e.ctx, "ctr"); err != nil {
		t.Errorf("Remove: %v", err)
	}
}

func testStatus(t *testing.T, e *env) {
	e.layer("one", "", smallLayer(t, "one", 1))
	e.create("two", "one", nil)
	s := e.d.Status(e.ctx)
	if s.Driver != e.d.Name() {
		t.Errorf("Status.Driver = %q, Name() = %q", s.Driver, e.d.Name())
	}
	if s.Layers != 2 {
		t.Errorf("Status.Layers = %d, want 2", s.Layers)
	}
	if s.Root == "" || s.BackingFS == "" {
		t.Errorf("Status.Root = %q, Status.BackingFS = %q: both must say where the layers are", s.Root, s.BackingFS)
	}
}
