package archive

import (
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits on what a tar entry may name. Anything beyond is refused as a
// malformed tar rather than handed to the kernel to fail on halfway.
const (
	maxPathLen = 4096 // PATH_MAX
	maxNameLen = 255  // NAME_MAX
	// maxEntrySize is far above any real layer file (4 TiB) and refuses
	// forged sizes like 1<<62 before a file is created for them.
	maxEntrySize = 1 << 42
)

// cleanName turns a tar entry name (or hardlink target) into a relative
// slash path inside the target; "" is the target itself. Leading slashes
// are dropped, as GNU tar does when it prints "Removing leading `/'":
// layers written by other tools sometimes carry them and they mean the
// layer root. Anything that still climbs out after cleaning is refused.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrInvalidTar)
	}
	if len(name) > maxPathLen {
		return "", fmt.Errorf("%w: name is %d bytes long (limit %d)", ErrInvalidTar, len(name), maxPathLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: name contains a NUL byte", ErrInvalidTar)
	}
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: %q climbs out through \"..\"", ErrUnsafePath, name)
	}
	if p == "." {
		return "", nil
	}
	for c := range strings.SplitSeq(p, "/") {
		if len(c) > maxNameLen {
			return "", fmt.Errorf("%w: path component is %d bytes long (limit %d)", ErrInvalidTar, len(c), maxNameLen)
		}
	}
	return p, nil
}

// splitName splits a cleaned relative path into its parent ("" for the
// root) and its last component.
func splitName(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// tree is the target directory, reached only through its root fd: every
// path is resolved by the kernel with RESOLVE_IN_ROOT, so "..", absolute
// symlinks and symlinks to / all stay inside, and no magic link of /proc
// can be used to jump out. The last parent fd is cached because tars list
// a directory's files together.
type tree struct {
	dir      string
	rootFD   int
	realRoot string // the root as /proc/self/fd shows it
	cacheKey string
	cacheFD  int
	// cacheCanon is the cached directory's path with symlinks resolved,
	// the name Apply's bookkeeping of written paths uses.
	cacheCanon string
	// newDir is ApplyOptions.NewDir.
	newDir func(rel string) (like string, err error)
}

func openTree(dir string) (*tree, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	real, err := os.Readlink(procPath(fd, ""))
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &tree{dir: dir, rootFD: fd, realRoot: real, cacheFD: -1}, nil
}

// canon returns the in-tree path of the directory fd, symlinks resolved.
func (t *tree) canon(fd int) (string, error) {
	real, err := os.Readlink(procPath(fd, ""))
	if err != nil {
		return "", err
	}
	if real == t.realRoot {
		return "", nil
	}
	rel, ok := strings.CutPrefix(real, strings.TrimSuffix(t.realRoot, "/")+"/")
	if !ok {
		return "", fmt.Errorf("%w: %s resolved to %s", ErrUnsafePath, t.dir, real)
	}
	return rel, nil
}

func (t *tree) close() {
	t.dropCache()
	unix.Close(t.rootFD)
}

// invalidate forgets the cached path but keeps its fd open until the
// next lookup: a caller may still be using it as the parent of the entry
// being replaced.
func (t *tree) invalidate() { t.cacheKey = "\x00" }

func (t *tree) dropCache() {
	if t.cacheFD >= 0 {
		unix.Close(t.cacheFD)
	}
	t.cacheFD, t.cacheKey = -1, ""
}

// openIn resolves p inside the tree. The kernel returns EAGAIN when a
// rename raced with an in-root lookup; that is retried.
func (t *tree) openIn(p string, flags int) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 16 {
		fd, err := unix.Openat2(t.rootFD, p, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// dirFD returns an O_PATH fd of directory p (owned by the cache: do not
// close it) and its canonical in-tree path, creating missing directories
// (0755, root-owned, as tar does) when create is set. The common case, a
// path without symlinks, costs one openat2; a path through symlinks one
// more readlink to learn where it went.
func (t *tree) dirFD(p string, create bool) (fd int, canon string, err error) {
	if p == "" {
		return t.rootFD, "", nil
	}
	if t.cacheFD >= 0 && t.cacheKey == p {
		return t.cacheFD, t.cacheCanon, nil
	}
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS,
	}
	fd, err = unix.Openat2(t.rootFD, p, &how)
	canon = p
	if err != nil {
		fd, err = t.openIn(p, unix.O_PATH|unix.O_DIRECTORY)
		if err == unix.ENOENT && create {
			fd, err = t.mkdirAll(p)
		}
		if err == nil {
			canon, err = t.canon(fd)
			if err != nil {
				unix.Close(fd)
			}
		}
	}
	if err != nil {
		return -1, "", dirErr(p, err)
	}
	t.dropCache()
	t.cacheKey, t.cacheFD, t.cacheCanon = p, fd, canon
	return fd, canon, nil
}

// join is path.Join for cleaned relative paths.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// tempDirFD is dirFD without touching the cache; release must be called.
func (t *tree) tempDirFD(p string) (fd int, release func(), err error) {
	if p == "" {
		return t.rootFD, func() {}, nil
	}
	if t.cacheFD >= 0 && t.cacheKey == p {
		return t.cacheFD, func() {}, nil
	}
	fd, err = t.openIn(p, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, nil, dirErr(p, err)
	}
	return fd, func() { unix.Close(fd) }, nil
}

func dirErr(p string, err error) error {
	switch err {
	case unix.ENOTDIR:
		return fmt.Errorf("%w: parent %q is not a directory", ErrInvalidTar, p)
	case unix.ELOOP:
		return fmt.Errorf("%w: parent %q: too many levels of symbolic links", ErrInvalidTar, p)
	}
	return fmt.Errorf("parent %q: %w", p, err)
}

func (t *tree) mkdirAll(p string) (int, error) {
	cur, owned := t.rootFD, false
	release := func() {
		if owned {
			unix.Close(cur)
		}
	}
	comps := strings.Split(p, "/")
	for i, c := range comps {
		sub := strings.Join(comps[:i+1], "/")
		fd, err := t.openIn(sub, unix.O_PATH|unix.O_DIRECTORY)
		like := ""
		if err == unix.ENOENT && t.newDir != nil {
			at, cerr := t.canon(cur)
			if cerr == nil {
				like, cerr = t.newDir(join(at, c))
			}
			if cerr != nil {
				release()
				return -1, cerr
			}
		}
		if err == unix.ENOENT {
			if err := unix.Mkdirat(cur, c, 0o755); err != nil && err != unix.EEXIST {
				release()
				return -1, err
			}
			if like != "" {
				if err := copyDirMeta(cur, c, like); err != nil {
					release()
					return -1, err
				}
			}
			fd, err = t.openIn(sub, unix.O_PATH|unix.O_DIRECTORY)
		}
		release()
		if err != nil {
			return -1, err
		}
		cur, owned = fd, true
	}
	return cur, nil
}

// removeAll removes name (recursively for a directory) from the directory
// pfd without following symlinks. ENOENT is not an error. Any cached
// parent may live below a removed directory, so the cache is invalidated.
func (t *tree) removeAll(pfd int, name string) error {
	err := unix.Unlinkat(pfd, name, 0)
	if err == unix.ENOENT {
		return nil
	}
	// A removed symlink or directory may be on the cached parent's path.
	t.invalidate()
	if err == nil {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	return removeDir(pfd, name)
}

func removeDir(pfd int, name string) error {
	// All names are read before unlinking: some filesystems may skip
	// entries when a directory changes under an open getdents stream.
	names, err := readNames(pfd, name)
	if err != nil {
		return fmt.Errorf("open %q for removal: %w", name, err)
	}
	if len(names) > 0 {
		fd, err := unix.Openat(pfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %q for removal: %w", name, err)
		}
		defer unix.Close(fd)
		for _, n := range names {
			err := unix.Unlinkat(fd, n, 0)
			if err == unix.EISDIR || err == unix.EPERM {
				err = removeDir(fd, n)
			}
			if err != nil && err != unix.ENOENT {
				return fmt.Errorf("remove %q: %w", name+"/"+n, err)
			}
		}
	}
	if err := unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	return nil
}

// readNames lists the directory name (relative to pfd) without following
// a symlink in its place.
func readNames(pfd int, name string) ([]string, error) {
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return f.Readdirnames(-1)
}

// procPath names base inside the directory fd through /proc, for the
// calls that have no *at form (lsetxattr). The fd was resolved in root,
// and base is one component looked up without following it.
func procPath(fd int, base string) string {
	if base == "" {
		return fmt.Sprintf("/proc/self/fd/%d", fd)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, base)
}

// copyDirMeta gives the directory base in pfd the owner, mode and xattrs
// (but overlay's own) of the directory like, as overlayfs does when it
// copies a lower directory up.
func copyDirMeta(pfd int, base, like string) error {
	var st unix.Stat_t
	if err := unix.Lstat(like, &st); err != nil {
		return fmt.Errorf("stat %s: %w", like, err)
	}
	if err := unix.Fchownat(pfd, base, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %q: %w", base, err)
	}
	if err := unix.Fchmodat(pfd, base, st.Mode&0o7777, 0); err != nil {
		return fmt.Errorf("chmod %q: %w", base, err)
	}
	xs, err := readXattrs(like, make([]byte, 4096))
	if err != nil {
		return err
	}
	for _, x := range xs {
		if isOverlayXattr(x.name) {
			continue
		}
		if err := unix.Lsetxattr(procPath(pfd, base), x.name, []byte(x.value), 0); err != nil {
			return fmt.Errorf("set xattr %s on %q: %w", x.name, base, err)
		}
	}
	return nil
}
