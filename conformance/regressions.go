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
	"syscall"
	"testing"

	"github.com/stratafs/strata/driver"
)

// Past bugs of the peers, each named after the report it comes from.

func regressionCases() []testCase {
	return []testCase{
		{"Containerd128LayersMount", testContainerd128LayersMount},
		{"ContainerdCloseTwice", testContainerdCloseTwice},
		{"Moby38111NativeEqualsNaive", testMoby38111NativeEqualsNaive},
		{"Moby37313OpaqueDirChanges", testMoby37313OpaqueDirChanges},
		{"Buildkit2480RenameBackIsNoChange", testBuildkit2480RenameBack},
		{"Moby5632HardlinkToLowerFile", testMoby5632HardlinkToLowerFile},
		{"QuotaEnforcedOrRefused", testQuota},
		{"Moby5419SparseFileStaysSparse", testMoby5419SparseFile},
	}
}

// containerd's snapshotter suite ("128LayersMount") stacks 128 layers and
// compares the mount with a flat directory; moby#26380 found that "128"
// failed at 122 once the overlay mount options outgrew a page.
func testContainerd128LayersMount(t *testing.T, e *env) {
	const depth = 128
	if m := e.b.Caps.MaxChainDepth; m > 0 && m < depth {
		t.Skipf("backend supports chains of %d layers, the case needs %d", m, depth)
	}
	var tars [][]byte
	parent := ""
	for i := 0; i < depth; i++ {
		tb := buildTar(t, i,
			tFile(fmt.Sprintf("layer%03d", i), fmt.Sprintf("added by layer %d\n", i), 0o644),
			tFile("shared", fmt.Sprintf("last written by layer %d\n", i), 0o644),
		)
		if i > 0 {
			// Each layer also deletes what the one before added.
			tb = buildTar(t, i,
				tFile(fmt.Sprintf("layer%03d", i), fmt.Sprintf("added by layer %d\n", i), 0o644),
				tFile("shared", fmt.Sprintf("last written by layer %d\n", i), 0o644),
				tWhiteout(fmt.Sprintf("layer%03d", i-1)),
			)
		}
		tars = append(tars, tb)
		id := fmt.Sprintf("c%03d", i)
		e.layer(id, parent, tb)
		parent = id
	}
	e.create("top", parent, &driver.CreateOpts{Writable: true})
	e.sameTree("128-layer stack against a flat directory", reference(t, tars...), e.view("top"))
}

// containerd's suite ("CloseTwice"): closing a snapshotter twice is fine.
func testContainerdCloseTwice(t *testing.T, e *env) {
	e.layer("base", "", smallLayer(t, "base", 1))
	if _, err := e.d.Get(e.ctx, "base", nil); err != nil {
		t.Fatalf("Get: %v", err)
	}
	// Close with a layer still mounted releases it.
	if err := e.d.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := e.d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	e.noMounts("after Close with a layer mounted")
	e.d = e.open()
	if err := e.d.Remove(e.ctx, "base"); err != nil {
		t.Errorf("Remove after the driver that mounted it was closed: %v", err)
	}
}

// naiveOf computes Changes and Diff the naive way (archive.Changes over the
// views the driver mounts): the reference a native diff must equal.
func (e *env) naiveOf(parents map[string]string) driver.NaiveDiff {
	return driver.NaiveDiff{
		View: func(ctx context.Context, id string) (string, func(), error) {
			if id == "" {
				return "", func() {}, nil
			}
			dir, err := e.d.Get(ctx, id, &driver.MountOpts{ReadOnly: true})
			if err != nil {
				return "", nil, err
			}
			return dir, func() { e.d.Put(ctx, id) }, nil
		},
		Parent: func(id string) (string, error) { return parents[id], nil },
	}
}

// moby#38111 removed overlay2's native diff because its output differed
// from the naive diff by kernel version: "diff correctness is way more
// important than diff performance". A native diff here must give the same
// Changes and a Diff that rebuilds the same tree as the naive one.
func testMoby38111NativeEqualsNaive(t *testing.T, e *env) {
	if !e.b.Caps.NativeDiff && !e.d.Status(e.ctx).NativeDiff {
		t.Logf("%s has no native diff: checking that its Diff is the naive one all the same", e.b.Name)
	}
	l1, l2, l3 := whiteoutLayers(t)
	e.layer("l1", "", l1)
	e.layer("l2", "l1", l2)
	e.layer("l3", "l2", l3)
	e.create("w", "l3", &driver.CreateOpts{Writable: true})
	dir, err := e.d.Get(e.ctx, "w", nil)
	if err != nil {
		t.Fatalf("Get(w): %v", err)
	}
	j := func(n string) string { return filepath.Join(dir, n) }
	for _, err := range []error{
		os.WriteFile(j("a/x"), []byte("rewritten through the mount\n"), 0o644),
		os.Remove(j("g")),
		os.RemoveAll(j("d")),
		os.Mkdir(j("d"), 0o755),
		os.WriteFile(j("d/again"), []byte("again\n"), 0o600),
		os.Chmod(j("c/back"), 0o600),
		os.Lchown(j("hl2"), 1000, 1000),
		os.Symlink("nowhere", j("newlink")),
	} {
		if err != nil {
			t.Errorf("through the mount: %v", err)
		}
	}
	if err := e.d.Put(e.ctx, "w"); err != nil {
		t.Fatalf("Put(w): %v", err)
	}
	parents := map[string]string{"l1": "", "l2": "l1", "l3": "l2", "w": "l3"}
	naive := e.naiveOf(parents)
	for _, id := range []string{"l1", "l2", "l3", "w"} {
		nc, err := naive.Changes(e.ctx, id)
		if err != nil {
			t.Fatalf("naive Changes(%s): %v", id, err)
		}
		sameList(t, "native Changes of "+id+" against the naive ones", changeStrings(nc), e.changes(id))
		rc, err := naive.Diff(e.ctx, id)
		if err != nil {
			t.Fatalf("naive Diff(%s): %v", id, err)
		}
		nd, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("naive Diff(%s): %v", id, err)
		}
		e.layer("native-"+id, parents[id], e.diff(id))
		e.layer("naive-"+id, parents[id], nd)
		e.sameTree("layer rebuilt from the native Diff of "+id+" against one rebuilt from the naive Diff",
			e.view("naive-"+id), e.view("native-"+id))
	}
}

// moby#37313: overlay's changes marked opaque directories as deleted and
// missed the deletions an opaque directory implies.
func testMoby37313OpaqueDirChanges(t *testing.T, e *env) {
	l1 := buildTar(t, 1, tDir("o", 0o755), tFile("o/a", "a\n", 0o644), tDir("o/b", 0o755), tFile("o/b/c", "c\n", 0o644), tFile("o/kept-name", "1\n", 0o644))
	l2 := buildTar(t, 2, tDir("o", 0o755), tOpaque("o"), tFile("o/new", "new\n", 0o644), tFile("o/kept-name", "2\n", 0o644))
	e.layer("l1", "", l1)
	e.layer("l2", "l1", l2)
	sameList(t, "Changes of a layer with an opaque dir", []string{"A /o/new", "C /o", "C /o/kept-name", "D /o/a", "D /o/b"}, e.changes("l2"))
	e.sameTree("view with an opaque dir", reference(t, l1, l2), e.view("l2"))
}

// buildkit#2480: renaming a lower file away and back puts it in overlay's
// upper dir without changing it; a native diff listed it, the naive one
// does not.
func testBuildkit2480RenameBack(t *testing.T, e *env) {
	e.layer("p", "", buildTar(t, 1, tDir("dir", 0o755), tFile("dir/foo", "foo\n", 0o644), tFile("bar", "bar\n", 0o644)))
	e.create("w", "p", &driver.CreateOpts{Writable: true})
	dir, err := e.d.Get(e.ctx, "w", nil)
	if err != nil {
		t.Fatalf("Get(w): %v", err)
	}
	for _, p := range []string{"dir/foo", "bar"} {
		if err := os.Rename(filepath.Join(dir, p), filepath.Join(dir, p+".tmp")); err != nil {
			t.Fatalf("rename %s away: %v", p, err)
		}
		if err := os.Rename(filepath.Join(dir, p+".tmp"), filepath.Join(dir, p)); err != nil {
			t.Fatalf("rename %s back: %v", p, err)
		}
	}
	if err := e.d.Put(e.ctx, "w"); err != nil {
		t.Fatalf("Put(w): %v", err)
	}
	sameList(t, "Changes after renaming files away and back", nil, e.changes("w"))
	for _, s := range tarListing(t, e.diff("w")) {
		if !strings.HasPrefix(s, "5 ") { // parent dirs may be written; files may not
			t.Errorf("Diff after renaming files away and back carries %s", s)
		}
	}
}

// moby#5632: a hardlink made in a container to a file of a lower layer
// broke the links among the lower layer's own names after commit.
func testMoby5632HardlinkToLowerFile(t *testing.T, e *env) {
	e.layer("p", "", buildTar(t, 1, tFile("file1", "linked\n", 0o644), tHardlink("file2", "file1"), tHardlink("file3", "file1")))
	e.create("w", "p", &driver.CreateOpts{Writable: true})
	dir, err := e.d.Get(e.ctx, "w", nil)
	if err != nil {
		t.Fatalf("Get(w): %v", err)
	}
	if err := os.Link(filepath.Join(dir, "file1"), filepath.Join(dir, "file4")); err != nil {
		t.Fatalf("link through the mount: %v", err)
	}
	if err := e.d.Put(e.ctx, "w"); err != nil {
		t.Fatalf("Put(w): %v", err)
	}
	e.layer("r", "p", e.diff("w"))
	// The diff, applied on the same parent, gives back w's view whole:
	// content and the hardlink groups ({file1, file4} after the copy-up).
	e.sameTree("w's diff applied on p, against w", e.view("w"), e.view("r"))
	for _, id := range []string{"w", "r"} {
		v := e.view(id)
		for _, n := range []string{"/file1", "/file2", "/file3", "/file4"} {
			if en := v.Entries[n]; en == nil || en.Digest != v.Entries["/file1"].Digest {
				t.Errorf("%s: %s missing or not the content of /file1", id, n)
			}
		}
		rdir, err := e.d.Get(e.ctx, id, nil)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		f2, e2 := os.Lstat(filepath.Join(rdir, "file2"))
		f3, e3 := os.Lstat(filepath.Join(rdir, "file3"))
		if e2 != nil || e3 != nil || !os.SameFile(f2, f3) {
			t.Errorf("%s: file2 and file3, hardlinked in the parent, are no longer one file (%v, %v)", id, e2, e3)
		}
		e.d.Put(e.ctx, id)
	}
}

// A size limit the host cannot enforce is refused, never ignored; one it
// can is enforced, and a layer-data limit does not count the parent.
func testQuota(t *testing.T, e *env) {
	const limit = 8 << 20
	q, ok := e.d.(driver.Quota)
	var scope driver.QuotaScope
	var scopeErr error
	if ok {
		scope, scopeErr = q.QuotaScope()
	}
	if !ok || scopeErr != nil {
		why := "no Quota capability"
		if ok {
			why = scopeErr.Error()
			if !errors.Is(scopeErr, driver.ErrNotSupported) {
				t.Errorf("QuotaScope = %v, want an error wrapping ErrNotSupported", scopeErr)
			}
		}
		t.Logf("limits refused here: %s", why)
		isErr(t, "Create with a SizeLimit", e.d.Create(e.ctx, "limited", "", &driver.CreateOpts{SizeLimit: limit}), driver.ErrNotSupported)
		if e.d.Exists("limited") {
			t.Errorf("a refused Create with a SizeLimit made the layer")
		}
		e.create("p", "", nil)
		before := e.rootState()
		isErr(t, "Create writable with a SizeLimit", e.d.Create(e.ctx, "limited", "p", &driver.CreateOpts{Writable: true, SizeLimit: limit}), driver.ErrNotSupported)
		e.unchanged("refused Create with a SizeLimit", before)
		if e.d.Exists("limited") {
			t.Errorf("a refused Create with a SizeLimit made the layer")
		}
		return
	}
	parentData := int64(2 * limit)
	if scope == driver.QuotaWholeView {
		parentData = limit / 4
	}
	e.layer("p", "", buildTar(t, 1, tFile("parent-data", strings.Repeat("p", int(parentData)), 0o644)))
	e.create("w", "p", &driver.CreateOpts{Writable: true, SizeLimit: limit})
	u, err := q.QuotaUsage(e.ctx, "w")
	if err != nil {
		t.Fatalf("QuotaUsage: %v", err)
	}
	if u.Limit != limit || u.Scope != scope {
		t.Errorf("QuotaUsage = %+v, want limit %d scope %v", u, limit, scope)
	}
	dir, err := e.d.Get(e.ctx, "w", nil)
	if err != nil {
		t.Fatalf("Get(w): %v", err)
	}
	defer e.d.Put(e.ctx, "w")
	if err := writeSynced(filepath.Join(dir, "within"), limit/4); err != nil {
		t.Errorf("writing a quarter of the limit (parent holds %d bytes, scope %v): %v", parentData, scope, err)
	}
	err = writeSynced(filepath.Join(dir, "beyond"), 2*limit)
	if err == nil {
		t.Errorf("writing twice the limit of %d bytes succeeded", limit)
	} else if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		t.Errorf("writing past the limit failed with %v, want ENOSPC or EDQUOT", err)
	}
	if u, err := q.QuotaUsage(e.ctx, "w"); err != nil || u.Used < limit/4 {
		t.Errorf("QuotaUsage after writing = %+v, %v; want at least %d used", u, err, limit/4)
	}
}

func writeSynced(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, io.LimitReader(bytes.NewReader(bytes.Repeat([]byte("q"), n)), int64(n)))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// moby#5419: useradd with a large UID makes /var/log/lastlog a huge sparse
// file, and layers that stored it whole filled disks. A sparse file must
// stay sparse when applied, when copied into a child, after a write
// through a mount, and when rebuilt from its Diff.
func testMoby5419SparseFile(t *testing.T, e *env) {
	const size, tail = 64 << 20, "lastlog\n"
	const maxAlloc = 8 << 20 // far below size: only written blocks count
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "var/", Mode: 0o755, ModTime: epoch()})
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "var/lastlog", Mode: 0o644, Size: size, ModTime: epoch()})
		}
		if err == nil {
			_, err = io.CopyN(tw, zeros{}, size-int64(len(tail)))
		}
		if err == nil {
			_, err = io.WriteString(tw, tail)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	e.create("base", "", nil)
	if _, err := e.d.ApplyDiff(e.ctx, "base", pr); err != nil {
		t.Fatalf("ApplyDiff: %v", err)
	}
	check := func(id, what string, at int64, want string) {
		t.Helper()
		dir, err := e.d.Get(e.ctx, id, nil)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		defer e.d.Put(e.ctx, id)
		p := filepath.Join(dir, "var", "lastlog")
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Size() != size || st.Blocks*512 > maxAlloc {
			t.Errorf("%s: size %d with %d bytes allocated; want %d with at most %d allocated", what, fi.Size(), st.Blocks*512, size, maxAlloc)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for off, w := range map[int64]string{size - int64(len(tail)): tail, at: want} {
			got := make([]byte, len(w))
			if _, err := f.ReadAt(got, off); err != nil || string(got) != w {
				t.Errorf("%s: at %d: %q, %v; want %q", what, off, got, err, w)
			}
		}
	}
	zero8 := string(make([]byte, 8))
	check("base", "sparse file after ApplyDiff", size/2, zero8)
	e.create("ctr", "base", &driver.CreateOpts{Writable: true})
	check("ctr", "sparse file in a new child", size/2, zero8)
	dir, err := e.d.Get(e.ctx, "ctr", nil)
	if err != nil {
		t.Fatalf("Get(ctr): %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "var", "lastlog"), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt([]byte("login42\n"), size/2)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("writing into the sparse file through the mount: %v", err)
	}
	if err := e.d.Put(e.ctx, "ctr"); err != nil {
		t.Fatalf("Put(ctr): %v", err)
	}
	check("ctr", "sparse file after a write through the mount", size/2, "login42\n")
	rc, err := e.d.Diff(e.ctx, "ctr")
	if err != nil {
		t.Fatalf("Diff(ctr): %v", err)
	}
	e.create("rebuilt", "base", nil)
	_, err = e.d.ApplyDiff(e.ctx, "rebuilt", rc)
	rc.Close()
	if err != nil {
		t.Fatalf("ApplyDiff of the Diff: %v", err)
	}
	check("rebuilt", "sparse file rebuilt from the Diff", size/2, "login42\n")
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
