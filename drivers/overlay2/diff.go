package overlay2

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/store"
)

// Overlay's own xattrs in an upper or lower dir.
const (
	xattrOpaque = "trusted.overlay.opaque"
	xattrOrigin = "trusted.overlay.origin"
	xattrPrefix = "trusted.overlay."
)

func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

func hasXattr(path, name string) (string, bool) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}

func isOpaque(path string) bool {
	v, ok := hasXattr(path, xattrOpaque)
	return ok && v == "y"
}

// lowers is the view a layer's parent presents, read without mounting it:
// the parent chain's diff dirs, nearest first, resolved the way overlayfs
// resolves them (whiteouts hide, opaque dirs stop the search, a non-dir
// hides everything below it).
type lowers []string

func (d *Driver) lowersOf(r store.Record) (lowers, error) {
	if r.Parent == "" {
		return nil, nil
	}
	chain, err := d.store.Chain(r.Parent)
	if err != nil {
		return nil, err
	}
	out := make(lowers, len(chain))
	for i, id := range chain {
		out[i] = d.diffDir(id)
	}
	return out, nil
}

// layersOf returns the lower dirs that contribute the directory rel to the
// parent's view (top first), or nil if rel is not a directory there.
func (ls lowers) layersOf(rel string) []string {
	active := []string(ls)
	if rel == "" || rel == "/" {
		return active
	}
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		var next []string
		for _, l := range active {
			p := filepath.Join(l, prefix)
			var st unix.Stat_t
			if unix.Lstat(p, &st) != nil {
				continue
			}
			if !isDir(&st) {
				break
			}
			next = append(next, l)
			if isOpaque(p) {
				break
			}
		}
		if len(next) == 0 {
			return nil
		}
		active = next
	}
	return active
}

// lookup finds rel in the parent's view: the path that holds it and its
// stat, or ok == false.
func (ls lowers) lookup(rel string) (string, *unix.Stat_t, bool) {
	dir, name := filepath.Split(strings.Trim(rel, "/"))
	for _, l := range ls.layersOf(dir) {
		p := filepath.Join(l, dir, name)
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			continue
		}
		if isWhiteout(&st) {
			return "", nil, false
		}
		return p, &st, true
	}
	return "", nil, false
}

// names lists the directory rel of the parent's view.
func (ls lowers) names(rel string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, l := range ls.layersOf(rel) {
		ents, err := os.ReadDir(filepath.Join(l, rel))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			n := e.Name()
			if seen[n] {
				continue
			}
			seen[n] = true
			if e.Type()&fs.ModeCharDevice != 0 {
				var st unix.Stat_t
				if unix.Lstat(filepath.Join(l, rel, n), &st) == nil && isWhiteout(&st) {
					continue
				}
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// nativeChanges lists a layer's changes from its diff/ alone, looking up
// each changed path in the parent's view to tell added from modified.
// The cost follows the size of the change, not of the image.
func (d *Driver) nativeChanges(ctx context.Context, r store.Record) ([]driver.Change, error) {
	ls, err := d.lowersOf(r)
	if err != nil {
		return nil, err
	}
	// The upper dir is what a running container writes: it is read through
	// an fd of its root, never by following a path (CVE-2018-15664).
	v, err := archive.OpenView(d.diffDir(r.ID))
	if err != nil {
		return nil, err
	}
	defer v.Close()
	var out []driver.Change
	err = v.Walk(func(rel string, st *unix.Stat_t) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if isWhiteout(st) {
			if _, _, ok := ls.lookup(rel); ok {
				out = append(out, driver.Change{Path: rel, Kind: archive.ChangeDelete})
			}
			return nil
		}
		lp, _, below := ls.lookup(rel)
		changed := false
		if below {
			// The naive diff's own rule, so that native and naive agree
			// (moby#38111), link counts included: a hardlink made to a
			// copied-up file changes its group.
			var err error
			if changed, err = archive.DiffersIn(lp, v, rel); err != nil {
				return err
			}
		}
		switch {
		case !below:
			out = append(out, driver.Change{Path: rel, Kind: archive.ChangeAdd})
		case !changed:
			// Copied up without a change a layer tar would carry (a
			// directory copied up only to hold a changed child).
		default:
			out = append(out, driver.Change{Path: rel, Kind: archive.ChangeModify})
		}
		if x, ok := v.Xattr(rel, xattrOpaque); isDir(st) && below && ok && x == "y" {
			// An opaque dir hides everything below it that it does not
			// hold itself: each such name is a deletion.
			names, err := ls.names(rel)
			if err != nil {
				return err
			}
			for _, n := range names {
				if _, err := v.Lstat(rel + "/" + n); err != nil {
					out = append(out, driver.Change{Path: rel + "/" + n, Kind: archive.ChangeDelete})
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return archive.CompleteChanges(out), nil
}

// dirSize sums the content bytes of the regular files under dir, each
// inode once.
func dirSize(ctx context.Context, dir string) (int64, error) {
	var n int64
	type key struct{ dev, ino uint64 }
	seen := map[key]bool{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Nlink > 1 {
			k := key{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		n += st.Size
		return nil
	})
	return n, err
}

// opaqueUpTo reports whether rel or one of its ancestors is an opaque
// directory in the layer dir: nothing below shows through there either.
func opaqueUpTo(dir, rel string) bool {
	for q := rel; q != "/" && q != "." && q != ""; q = filepath.Dir(q) {
		if isOpaque(filepath.Join(dir, q)) {
			return true
		}
	}
	return false
}

// pruneWhiteouts removes whiteouts that sit in a directory the parent's
// view does not have as a directory (a tar's "x/.wh.y" where x is a file
// or symlink below, or absent) or that this layer makes opaque. They hide
// nothing, and overlayfs lists a whiteout of a directory that exists in
// one layer only as a name that cannot be looked up.
func (d *Driver) pruneWhiteouts(ctx context.Context, id, dir string) error {
	// The record is in state Applying here, so not d.ready.
	r, _ := d.store.Get(id)
	ls, err := d.lowersOf(r)
	if err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type()&fs.ModeCharDevice == 0 || e.Type()&fs.ModeDevice == 0 {
			return ctx.Err()
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || !isWhiteout(&st) {
			return nil
		}
		rel := filepath.Dir(p[len(dir):])
		if len(ls.layersOf(rel)) > 0 && !opaqueUpTo(dir, rel) {
			return nil
		}
		return os.Remove(p)
	})
}

// applyOptions are the options ApplyDiff unpacks a tar with onto id's
// stage. A tar is applied to this layer's directory alone, while the
// image is the layers applied in order. A parent directory the tar does
// not name but a lower layer has is made with that directory's metadata
// (as overlayfs copies up). Where the two would still differ, ApplyDiff
// refuses the tar with ErrNotSupported and says why:
//   - an entry through a path that a lower layer has as a symlink or a
//     file ("x/b" over "x -> real"): made here, a directory x would hide
//     the symlink, and "x/.wh.a" would delete nothing;
//   - a hardlink to a file of a lower layer: overlayfs links only within
//     one directory tree.
func (d *Driver) applyOptions(id string) (archive.ApplyOptions, error) {
	opts := archive.ApplyOptions{Whiteouts: archive.OverlayWhiteouts}
	// The record is in state Applying here, so not d.ready.
	r, _ := d.store.Get(id)
	ls, err := d.lowersOf(r)
	if err != nil || len(ls) == 0 {
		return opts, err
	}
	opts.NewDir = func(rel string) (string, error) {
		lp, st, ok := ls.lookup("/" + rel)
		switch {
		case !ok:
			return "", nil
		case !isDir(st):
			return "", fmt.Errorf("%w: /%s is a %s in a lower layer; overlay2 cannot apply an entry below it as the image does (through it), and will not hide it with a directory",
				driver.ErrNotSupported, rel, typeOf(st))
		}
		return lp, nil // copied up: the directory keeps its metadata
	}
	opts.LinkTarget = func(rel string) error {
		if _, _, ok := ls.lookup("/" + rel); ok {
			return fmt.Errorf("%w: hardlink to /%s, a file of a lower layer; overlay2 keeps each layer in its own directory and cannot link across them",
				driver.ErrNotSupported, rel)
		}
		return fmt.Errorf("%w: hardlink target /%s is not in this tar; overlay2 cannot link to a file of a lower layer (nor through a lower layer's symlink)", driver.ErrNotSupported, rel)
	}
	return opts, nil
}

func typeOf(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	case unix.S_IFIFO:
		return "fifo"
	}
	return "special file"
}
