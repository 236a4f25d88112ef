package archive

import "path/filepath"

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

// SortChanges sorts changes into the order Changes returns them (by path
// components, a directory right before its contents).
func SortChanges(ch []Change) { sortChanges(ch) }
