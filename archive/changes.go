package archive

import (
	"context"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fsutil"
)

// Changes compares dir with parentDir ("" means an empty parent) and
// returns what differs, sorted so that a directory precedes its contents
// (by path components, so "/a/b" comes before "/a-b").
//
// A path is modified when its type, mode, owner, size, device number,
// symlink target, nanosecond mtime, link count or xattrs (other than
// overlay's own) differ. Regular file content is not read: a rewrite that
// keeps size and mtime is not seen. A directory's own size and mtime are
// not compared (they change whenever a child does; moby#9874); instead,
// as moby's Changes and docker diff do, a directory that holds an added,
// removed or modified entry is listed as modified itself. A deleted
// directory is one Delete; an added directory is an Add for it and each
// thing inside it.
//
// Both trees are read through fds of their roots (see View): dir may be
// a running container's layer.
func Changes(ctx context.Context, parentDir, dir string) ([]Change, error) {
	if err := isDir(dir); err != nil {
		return nil, err
	}
	if parentDir != "" {
		if err := isDir(parentDir); err != nil {
			return nil, err
		}
	}
	v, err := OpenView(dir)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	return ChangesIn(ctx, parentDir, v, "")
}

// ChangesIn is Changes for the directory rel of the view v (resolved
// beneath v's root without following symlinks) against parentDir.
func ChangesIn(ctx context.Context, parentDir string, v *View, rel string) ([]Change, error) {
	c := &changer{ctx: ctx, buf: make([]byte, 4096)}
	var err error
	if c.new, err = v.Sub(rel); err != nil {
		return nil, err
	}
	defer c.new.Close()
	if parentDir != "" {
		if c.old, err = OpenView(parentDir); err != nil {
			return nil, err
		}
		defer c.old.Close()
	}
	if err := c.dir(""); err != nil {
		return nil, err
	}
	return CompleteChanges(c.out), nil
}

type changer struct {
	ctx context.Context
	// old is nil for an empty parent. Both trees are read through their
	// root fds: the layer may be a running container's.
	old, new *View
	buf      []byte
	out      []Change
}

// list returns the sorted names in v's rel; a missing directory (or no
// tree at all) is empty.
func list(v *View, rel string) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	return v.list(rel)
}

func (c *changer) dir(rel string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	newNames, err := list(c.new, rel)
	if err != nil {
		return err
	}
	oldNames, err := list(c.old, rel)
	if err != nil {
		return err
	}
	i, j := 0, 0
	for i < len(newNames) || j < len(oldNames) {
		var name string
		switch {
		case j == len(oldNames) || (i < len(newNames) && newNames[i] < oldNames[j]):
			name = newNames[i]
			i++
			if err := c.added(rel + "/" + name); err != nil {
				return err
			}
			continue
		case i == len(newNames) || oldNames[j] < newNames[i]:
			name = oldNames[j]
			j++
			c.out = append(c.out, Change{Path: rel + "/" + name, Kind: ChangeDelete})
			continue
		}
		name = newNames[i]
		i, j = i+1, j+1
		if err := c.both(rel + "/" + name); err != nil {
			return err
		}
	}
	return nil
}

// added records p and, for a directory, everything below it.
func (c *changer) added(p string) error {
	c.out = append(c.out, Change{Path: p, Kind: ChangeAdd})
	st, err := c.new.Lstat(p)
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	names, err := list(c.new, p)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := c.added(p + "/" + n); err != nil {
			return err
		}
	}
	return nil
}

func (c *changer) both(p string) error {
	om, err := c.old.meta(p, c.buf)
	if err != nil {
		return err
	}
	nm, err := c.new.meta(p, c.buf)
	if err != nil {
		return err
	}
	if differs(om, nm) {
		c.out = append(c.out, Change{Path: p, Kind: ChangeModify})
	}
	switch {
	case nm.isDir() && om.isDir():
		return c.dir(p)
	case nm.isDir():
		// A file became a directory: all it holds is new.
		names, err := list(c.new, p)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := c.added(p + "/" + n); err != nil {
				return err
			}
		}
	}
	return nil
}

func differs(a, b *meta) bool {
	if a.typ() != b.typ() || a.perm() != b.perm() || a.st.Uid != b.st.Uid || a.st.Gid != b.st.Gid ||
		a.st.Rdev != b.st.Rdev || a.link != b.link || !sameXattrs(a.xattrs, b.xattrs) {
		return true
	}
	if a.isDir() {
		return false
	}
	// A changed link count means a hardlink was added or removed: the
	// file is listed so that WriteChanges can write the group again.
	return a.st.Size != b.st.Size || a.st.Mtim != b.st.Mtim || a.st.Nlink != b.st.Nlink
}

func sameXattrs(a, b []xattr) bool {
	a = slices.DeleteFunc(slices.Clone(a), func(x xattr) bool { return isOverlayXattr(x.name) })
	b = slices.DeleteFunc(slices.Clone(b), func(x xattr) bool { return isOverlayXattr(x.name) })
	return slices.Equal(a, b)
}

// sortChanges puts changes in the order Changes returns them: by path
// components, so a directory comes right before its contents.
func sortChanges(ch []Change) {
	slices.SortStableFunc(ch, func(a, b Change) int { return fsutil.ComparePaths(a.Path, b.Path) })
}
