package archive

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// View is a directory tree that someone else may be changing while it is
// read (a running container's layer), read only through an fd of its
// root: every path is resolved by the kernel beneath that fd with no
// symlink followed on the way (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS),
// and metadata is read from the directory fd that holds the entry, never
// by a full path. A writer that swaps a directory for a symlink to the
// host while a walk runs makes the walk fail or see the old or the new
// directory; it never makes it read outside the root (CVE-2018-15664).
//
// A View is not safe for concurrent use (it caches the last directory).
type View struct {
	dir    string
	rootFD int
	// The last parent directory looked up: walks visit a directory's
	// entries together.
	cacheKey string
	cacheFD  int
}

// OpenView opens dir (which may itself be reached through symlinks: the
// caller names it) for in-root reading.
func OpenView(dir string) (*View, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOTDIR {
			return nil, &os.PathError{Op: "open", Path: dir, Err: unix.ENOTDIR}
		}
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &View{dir: dir, rootFD: fd, cacheFD: -1}, nil
}

// Close releases the view's fds.
func (v *View) Close() error {
	if v.cacheFD >= 0 {
		unix.Close(v.cacheFD)
		v.cacheFD = -1
	}
	return unix.Close(v.rootFD)
}

// Dir is the directory the view was opened on.
func (v *View) Dir() string { return v.dir }

// trim turns "/a/b", "a/b" or "" into the relative "a/b" or "".
func trim(rel string) string {
	return strings.Trim(filepath.ToSlash(filepath.Clean("/"+rel)), "/")
}

// openBeneath opens rel beneath the root without following any symlink.
// The kernel returns EAGAIN when a rename raced with the lookup; that is
// retried a few times.
func (v *View) openBeneath(rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 16 {
		fd, err := unix.Openat2(v.rootFD, rel, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// parent returns an O_PATH fd of rel's parent directory (owned by the
// view: do not close it) and rel's last component.
func (v *View) parent(rel string) (int, string, error) {
	dir, base := splitName(rel)
	if dir == "" {
		return v.rootFD, base, nil
	}
	if v.cacheFD >= 0 && v.cacheKey == dir {
		return v.cacheFD, base, nil
	}
	fd, err := v.openBeneath(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, "", v.pathErr("open", dir, err)
	}
	if v.cacheFD >= 0 {
		unix.Close(v.cacheFD)
	}
	v.cacheKey, v.cacheFD = dir, fd
	return fd, base, nil
}

func (v *View) pathErr(op, rel string, err error) error {
	if err == unix.ELOOP {
		// Only a symlink where a directory was can give this: the tree
		// changed under the walk.
		return &os.PathError{Op: op, Path: filepath.Join(v.dir, rel), Err: fmt.Errorf("a parent directory became a symlink while being read: %w", err)}
	}
	return &os.PathError{Op: op, Path: filepath.Join(v.dir, rel), Err: err}
}

// Lstat stats rel without following a symlink anywhere in it.
func (v *View) Lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	rel = trim(rel)
	if rel == "" {
		err := unix.Fstat(v.rootFD, &st)
		return st, err
	}
	pfd, base, err := v.parent(rel)
	if err != nil {
		return st, err
	}
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, v.pathErr("lstat", rel, err)
	}
	return st, nil
}

// Xattr returns the value of one xattr of rel (not following symlinks).
func (v *View) Xattr(rel, name string) (string, bool) {
	rel = trim(rel)
	p := procPath(v.rootFD, ".")
	if rel != "" {
		pfd, base, err := v.parent(rel)
		if err != nil {
			return "", false
		}
		p = procPath(pfd, base)
	}
	val, err := getXattr(p, name)
	return val, err == nil
}

// meta reads rel's metadata: stat, symlink target and xattrs, all from
// its parent directory's fd, so no component is followed.
func (v *View) meta(rel string, buf []byte) (*meta, error) {
	rel = trim(rel)
	m := &meta{}
	pfd, base := v.rootFD, ""
	if rel != "" {
		var err error
		if pfd, base, err = v.parent(rel); err != nil {
			return nil, err
		}
	}
	if base == "" {
		if err := unix.Fstat(pfd, &m.st); err != nil {
			return nil, v.pathErr("fstat", rel, err)
		}
	} else if err := unix.Fstatat(pfd, base, &m.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, v.pathErr("lstat", rel, err)
	}
	if m.typ() == unix.S_IFLNK {
		l, err := readlinkAt(pfd, base)
		if err != nil {
			return nil, v.pathErr("readlink", rel, err)
		}
		m.link = l
	}
	// The xattr calls have no *at form on this kernel: name the entry
	// through the parent fd's /proc link, and never follow the last
	// component (the l* calls).
	if base == "" {
		base = "." // the root: through its own fd
	}
	xs, err := readXattrs(procPath(pfd, base), buf)
	if err != nil {
		return nil, err
	}
	m.xattrs = xs
	return m, nil
}

func readlinkAt(dirfd int, base string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dirfd, base, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// list returns the sorted names in rel; a missing directory, or one that
// is no longer a directory, is empty. It does not touch the directory's
// atime where it may (O_NOATIME needs ownership or CAP_FOWNER): on btrfs
// an atime update is a change of the inode for the next generation scan.
func (v *View) list(rel string) ([]string, error) {
	fd, err := v.openBeneath(trim(rel), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME)
	if err == unix.EPERM {
		fd, err = v.openBeneath(trim(rel), unix.O_RDONLY|unix.O_DIRECTORY)
	}
	if err != nil {
		if err == unix.ENOENT || err == unix.ENOTDIR {
			return nil, nil
		}
		return nil, v.pathErr("open", rel, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(v.dir, rel))
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}

// Sub opens the directory rel of v as a view of its own, resolved beneath
// v's root without following symlinks.
func (v *View) Sub(rel string) (*View, error) {
	rel = trim(rel)
	fd, err := v.openBeneath(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, v.pathErr("open", rel, err)
	}
	return &View{dir: filepath.Join(v.dir, rel), rootFD: fd, cacheFD: -1}, nil
}

// ReadDirNames is list for other packages: the sorted names in rel.
func (v *View) ReadDirNames(rel string) ([]string, error) { return v.list(rel) }

// openFile opens the regular file rel for reading and checks that it is
// still the inode that was stat'ed (want): a file swapped since is an
// error, not content from elsewhere.
func (v *View) openFile(rel string, want *unix.Stat_t) (*os.File, error) {
	rel = trim(rel)
	pfd, base, err := v.parent(rel)
	if err != nil {
		return nil, err
	}
	// O_NONBLOCK: a FIFO swapped in for the file must not hang the diff.
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, v.pathErr("open", rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, v.pathErr("fstat", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != want.Ino || st.Dev != want.Dev {
		unix.Close(fd)
		return nil, v.pathErr("open", rel, errors.New("replaced by another file while being read"))
	}
	return os.NewFile(uintptr(fd), filepath.Join(v.dir, rel)), nil
}

// Walk calls fn for every entry below the root (not the root itself),
// parents before children, names sorted, with rel in the form "/a/b". A
// directory's entries are listed after fn returns for it, through the
// view, so a directory that became a symlink meanwhile is not entered.
// fn returning fs.SkipDir for a directory skips its contents.
func (v *View) Walk(fn func(rel string, st *unix.Stat_t) error) error {
	return v.walk("", fn)
}

func (v *View) walk(rel string, fn func(rel string, st *unix.Stat_t) error) error {
	names, err := v.list(rel)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := rel + "/" + n
		st, err := v.Lstat(p)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed since the listing
			}
			return err
		}
		err = fn(p, &st)
		if err == fs.SkipDir {
			continue
		}
		if err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := v.walk(p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
