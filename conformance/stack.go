package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fstree"
)

// acceptedOrClear is the rule for odd tars: a view equals the reference
// (the layers applied in order into one directory), or ApplyDiff refused
// the tar with a clear error (a sentinel of driver or archive) and left
// the root as it was.
func acceptedOrClear(t *testing.T, e *env, what string, err error, before []string, want func() bool) {
	t.Helper()
	if err == nil {
		want()
		return
	}
	e.sameRoot("refused ApplyDiff", before)
	clear := errors.Is(err, driver.ErrNotSupported) || errors.Is(err, archive.ErrInvalidTar) ||
		errors.Is(err, archive.ErrUnsafePath) || errors.Is(err, archive.ErrNotAllowed) || errors.Is(err, archive.ErrTooLarge)
	if !clear {
		t.Errorf("%s: refused with an error that wraps no sentinel: %v", what, err)
		return
	}
	t.Logf("%s: refused: %v", what, err)
}

// testStackedTarsMatchReference: tars whose entries go through a symlink
// or name a file of the parent layer. vfs once wrote "x/b" to real/b and
// deleted real/a for "x/.wh.a", while overlay2 made x a directory holding
// b and dropped the deletion; a hardlink to a parent's file worked on one
// and failed on the other. Every backend must now build the reference
// tree or refuse the tar with a clear error.
func testStackedTarsMatchReference(t *testing.T, e *env) {
	base := buildTar(t, 1,
		tSymlink("x", "real"), tSymlink("abs", "/real"), tSymlink("y", "x"),
		tDir("real", 0o755), tFile("real/a", "a\n", 0o644), tFile("f", "f\n", 0o644),
		tDir("priv", 0o710).owner(1000, 1001).xattr("user.k", "v"))
	e.layer("base", "", base)
	children := []struct {
		name string
		tar  []byte
	}{
		{"file-and-whiteout-via-symlink", buildTar(t, 2, tFile("x/b", "b\n", 0o644), tWhiteout("x/a"))},
		{"whiteout-via-symlink", buildTar(t, 3, tWhiteout("x/a"))},
		{"file-via-absolute-symlink", buildTar(t, 4, tFile("abs/c", "c\n", 0o644))},
		{"file-via-symlink-chain", buildTar(t, 5, tFile("y/d", "d\n", 0o644))},
		{"dir-via-symlink", buildTar(t, 6, tDir("x/sub", 0o700), tFile("x/sub/e", "e\n", 0o644))},
		{"opaque-via-symlink", buildTar(t, 7, tOpaque("x"), tFile("x/kept", "k\n", 0o644))},
		{"file-below-a-file", buildTar(t, 8, tFile("f/under", "u\n", 0o644))},
		{"hardlink-to-parent-file", buildTar(t, 9, tHardlink("h", "real/a"))},
		{"hardlink-via-symlink-to-parent-file", buildTar(t, 10, tHardlink("h2", "x/a"))},
		{"file-in-parent-dir-without-its-entry", buildTar(t, 12, tFile("priv/new", "n\n", 0o644))},
		{"replace-symlink-then-write", buildTar(t, 11, tDir("x", 0o755), tFile("x/b", "b\n", 0o644))},
	}
	for i, c := range children {
		id := fmt.Sprintf("c%02d", i)
		t.Run(c.name, func(t *testing.T) {
			e := e.sub(t)
			e.create(id, "base", nil)
			before := e.rootPaths()
			_, err := e.d.ApplyDiff(e.ctx, id, bytes.NewReader(c.tar))
			acceptedOrClear(t, e, c.name, err, before, func() bool {
				return e.sameAsReference("view against the reference", reference(t, base, c.tar), e.view(id))
			})
			if e.d.Exists(id) {
				if err := e.d.Remove(e.ctx, id); err != nil {
					t.Errorf("Remove: %v", err)
				}
			}
		})
	}
	e.sameTree("base after the odd children", reference(t, base), e.view("base"))
}

// sameAsReference compares a view with the reference of tars that change
// a directory without an entry for it (x/b through x -> real): such a
// directory gets the time of the apply, in the view and in the reference
// alike, so directory mtimes are left out.
func (e *env) sameAsReference(what string, want, got *fstree.Tree) bool {
	e.t.Helper()
	opts := e.treeOptions()
	opts.IgnoreDirMtimes = true
	return sameTreeOpts(e.t, what, want, got, opts)
}

// testSizeOfReadOnlyLayerWrittenThroughGet: Get hands out a writable path
// for a read-only layer (overlay2 mounts it read-write as moby does, vfs
// returns its directory); what is written there must show in DiffSize, on
// every backend, not the size recorded at ApplyDiff.
func testSizeOfReadOnlyLayerWrittenThroughGet(t *testing.T, e *env) {
	e.layer("p", "", smallLayer(t, "p", 1))
	e.layer("l", "p", smallLayer(t, "l", 2))
	before, err := e.d.DiffSize(e.ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := e.d.Get(e.ctx, "l", nil)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	const added = 1 << 20
	werr := os.WriteFile(filepath.Join(dir, "written-through-get"), bytes.Repeat([]byte("w"), added), 0o644)
	if err := e.d.Put(e.ctx, "l"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if werr != nil {
		t.Logf("the read-only layer's path refused the write (enforced read-only): %v", werr)
		return
	}
	after, err := e.d.DiffSize(e.ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	if after != before+added {
		t.Errorf("DiffSize after writing %d bytes through Get = %d, want %d (was %d)", added, after, before+added, before)
	}
}
