package archive

import "path/filepath"

// Differs reports whether Changes would list a path that exists as
// oldPath in the parent and newPath in the layer as modified (the entry
// itself; a directory's contents are not looked at). Backends with a
// native way of finding candidate paths (btrfs generation numbers) use it
// to decide each candidate exactly as Changes does.
func Differs(oldPath, newPath string) (bool, error) {
	buf := make([]byte, 4096)
	om, err := readMeta(filepath.Clean(oldPath), buf)
	if err != nil {
		return false, err
	}
	nm, err := readMeta(filepath.Clean(newPath), buf)
	if err != nil {
		return false, err
	}
	return differs(om, nm), nil
}

// SortChanges sorts changes into the order Changes returns them (by path
// components, a directory right before its contents).
func SortChanges(ch []Change) { sortChanges(ch) }
