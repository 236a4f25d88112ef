package archive

import (
	"path"
	"path/filepath"
)

// Differs reports whether Changes would list a path that exists as
// oldPath in the parent and newPath in the layer as modified (the entry
// itself; a directory's contents are not looked at). Backends with a
// native way of finding candidate paths (btrfs generation numbers) use it
// to decide each candidate exactly as Changes does. The directories
// holding the two paths are trusted; DiffersIn reads the layer's side
// through a View.
func Differs(oldPath, newPath string) (bool, error) {
	nv, err := OpenView(filepath.Dir(filepath.Clean(newPath)))
	if err != nil {
		return false, err
	}
	defer nv.Close()
	return DiffersIn(oldPath, nv, filepath.Base(newPath))
}

// DiffersIn is Differs for rel inside the view v (a layer that may be
// changing while it is read): rel is resolved beneath v's root without
// following symlinks.
func DiffersIn(oldPath string, v *View, rel string) (bool, error) {
	buf := make([]byte, 4096)
	ov, err := OpenView(filepath.Dir(filepath.Clean(oldPath)))
	if err != nil {
		return false, err
	}
	defer ov.Close()
	om, err := ov.meta(filepath.Base(oldPath), buf)
	if err != nil {
		return false, err
	}
	nm, err := v.meta(rel, buf)
	if err != nil {
		return false, err
	}
	return differs(om, nm), nil
}

// CompleteChanges sorts changes as SortChanges does and lists, as
// modified, every directory that holds a change and is not listed itself
// (moby's convention, which docker diff shows: "C /etc" above "A
// /etc/new"). Duplicate paths are dropped (an Add or Delete wins over a
// Modify). Backends that gather changes natively end with it, so that
// their lists equal Changes'.
func CompleteChanges(ch []Change) []Change {
	kinds := make(map[string]ChangeKind, len(ch))
	for _, c := range ch {
		if k, ok := kinds[c.Path]; !ok || k == ChangeModify {
			kinds[c.Path] = c.Kind
		}
	}
	for _, c := range ch {
		for d := path.Dir(c.Path); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := kinds[d]; ok {
				break // listed, and so are its parents
			}
			kinds[d] = ChangeModify
		}
	}
	out := make([]Change, 0, len(kinds))
	for p, k := range kinds {
		out = append(out, Change{Path: p, Kind: k})
	}
	sortChanges(out)
	return out
}

// SortChanges sorts changes into the order Changes returns them (by path
// components, a directory right before its contents).
func SortChanges(ch []Change) { sortChanges(ch) }
