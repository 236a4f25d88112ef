package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// CopyMode says how CopyTree moves file content.
type CopyMode int

const (
	// CopyAuto clones each file with FICLONE when the filesystem can
	// (btrfs, xfs with reflink), else uses copy_file_range, else read/write.
	CopyAuto CopyMode = iota
	// CopyReflink requires FICLONE: a file that cannot be cloned fails the
	// copy. For callers that promise cheap copies and must not silently
	// fill the disk instead.
	CopyReflink
	// CopyPlain reads and writes every byte. copy_file_range is left out
	// too, because on btrfs, xfs and NFS it may share extents anyway.
	CopyPlain
)

func (m CopyMode) String() string {
	switch m {
	case CopyAuto:
		return "auto"
	case CopyReflink:
		return "reflink"
	case CopyPlain:
		return "copy"
	}
	return fmt.Sprintf("CopyMode(%d)", int(m))
}

// CopyOptions are the options of CopyTreeWith.
type CopyOptions struct {
	Mode CopyMode
	// Workers is how many files are copied at once (0: DefaultCopyWorkers).
	// Creating and filling files is mostly waiting on the filesystem, so a
	// few in flight beat one even on a single core.
	Workers int
}

// DefaultCopyWorkers is the number of files CopyTree copies at once.
const DefaultCopyWorkers = 4

// CopyStats says what CopyTree did.
type CopyStats struct {
	// Files counts regular files whose content was copied or cloned; an
	// inode with several hardlinks counts once.
	Files int64
	// Bytes is the logical size of those files (holes included).
	Bytes int64
	// Reflinked counts the Files that were cloned with FICLONE (they share
	// their blocks with the source until either side writes).
	Reflinked int64
	// Dirs, Symlinks and Specials (devices and fifos) count the other
	// entries made; Hardlinks counts links made to an inode already copied.
	Dirs, Symlinks, Specials, Hardlinks int64
	// Skipped names entries that were left out, with the reason (sockets:
	// an OCI layer tar cannot hold one either).
	Skipped []string
}

// CopyTree copies the tree at src to dst, which must not exist (its parent
// must). See CopyTreeWith.
func CopyTree(ctx context.Context, src, dst string) (CopyStats, error) {
	return CopyTreeWith(ctx, src, dst, CopyOptions{})
}

// CopyTreeWith copies the tree at src to dst, which must not exist, keeping
// everything an OCI layer records: file types, content (sparse files stay
// sparse), modes with setuid/setgid/sticky, owners, every xattr
// (security.capability and trusted.* included; the caller needs the
// privileges to set them), hardlinks as hardlinks, symlinks without
// following them, devices, fifos and mtimes to the nanosecond (symlinks and
// directories included). Sockets are skipped and listed in Skipped.
//
// One goroutine walks the tree and makes directories, symlinks and special
// files; regular files go to opts.Workers goroutines. Hardlinks are made
// once every file is in, and directories get their owner, mode, xattrs
// and times last, deepest first, because adding entries changes them.
// Memory grows with the number of directories and hardlinks, not files.
//
// It does not sync: a caller that publishes dst syncs it (Syncfs). On error
// dst is left half-made for the caller to remove.
func CopyTreeWith(ctx context.Context, src, dst string, opts CopyOptions) (CopyStats, error) {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return CopyStats{}, &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return CopyStats{}, fmt.Errorf("copy tree: %s is not a directory", src)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = DefaultCopyWorkers
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &copier{
		ctx:    ctx,
		cancel: cancel,
		mode:   opts.Mode,
		links:  map[devIno]string{},
		jobs:   make(chan fileJob, workers*4),
	}
	c.reflink.Store(opts.Mode != CopyPlain)
	c.cfr.Store(opts.Mode == CopyAuto)
	for i := 0; i < workers; i++ {
		c.wg.Add(1)
		go c.worker()
	}
	werr := c.dir(src, dst, &st)
	close(c.jobs)
	c.wg.Wait()
	if err := c.firstErr(werr); err != nil {
		return c.stats, err
	}
	for _, l := range c.hardlinks {
		if err := ctx.Err(); err != nil {
			return c.stats, err
		}
		if err := unix.Link(l.old, l.new); err != nil {
			return c.stats, &os.LinkError{Op: "link", Old: l.old, New: l.new, Err: err}
		}
		c.stats.Hardlinks++
	}
	for i := len(c.dirs) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return c.stats, err
		}
		dj := &c.dirs[i]
		if err := meta(dj.src, dj.dst, &dj.st, -1); err != nil {
			return c.stats, err
		}
	}
	return c.stats, nil
}

type devIno struct{ dev, ino uint64 }

type fileJob struct {
	src, dst string
	st       unix.Stat_t
}

type linkJob struct{ old, new string }

// copier is the state of one CopyTree call. What the filesystem turned out
// not to support is remembered here, never globally: two trees on two
// filesystems are copied independently.
type copier struct {
	ctx     context.Context
	cancel  context.CancelFunc
	mode    CopyMode
	reflink atomic.Bool // FICLONE still worth trying
	cfr     atomic.Bool // copy_file_range still worth trying
	jobs    chan fileJob
	wg      sync.WaitGroup

	// Only the walking goroutine uses these.
	links     map[devIno]string
	hardlinks []linkJob
	dirs      []fileJob // in walk order: parents before children

	mu    sync.Mutex // guards stats and err once workers run
	stats CopyStats
	err   error
}

func (c *copier) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.cancel()
}

// firstErr prefers the workers' error: the walker's is then usually just
// the cancellation it caused.
func (c *copier) firstErr(walkErr error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return walkErr
}

func (c *copier) worker() {
	defer c.wg.Done()
	var buf []byte
	for j := range c.jobs {
		if c.ctx.Err() != nil {
			continue // drain, so the walker never blocks
		}
		reflinked, err := c.file(j.src, j.dst, &j.st, &buf)
		if err != nil {
			c.fail(err)
			continue
		}
		c.mu.Lock()
		c.stats.Files++
		c.stats.Bytes += j.st.Size
		if reflinked {
			c.stats.Reflinked++
		}
		c.mu.Unlock()
	}
}

func (c *copier) dir(src, dst string, st *unix.Stat_t) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	// Owner-only until the contents are in; the real mode comes last so a
	// read-only directory can still be filled.
	if err := unix.Mkdir(dst, 0o700); err != nil {
		return &os.PathError{Op: "mkdir", Path: dst, Err: err}
	}
	c.count(func(s *CopyStats) { s.Dirs++ })
	c.dirs = append(c.dirs, fileJob{src: src, dst: dst, st: *st})
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := c.entry(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return nil
}

func (c *copier) count(fn func(*CopyStats)) {
	c.mu.Lock()
	fn(&c.stats)
	c.mu.Unlock()
}

func (c *copier) entry(src, dst string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFDIR {
		return c.dir(src, dst, &st)
	}
	if typ == unix.S_IFSOCK {
		c.count(func(s *CopyStats) { s.Skipped = append(s.Skipped, src+": socket (a layer cannot hold one)") })
		return nil
	}
	if st.Nlink > 1 {
		key := devIno{uint64(st.Dev), st.Ino}
		if first, ok := c.links[key]; ok {
			// The first name may still be in a worker's hands.
			c.hardlinks = append(c.hardlinks, linkJob{old: first, new: dst})
			return nil
		}
		c.links[key] = dst
	}
	switch typ {
	case unix.S_IFREG:
		select {
		case c.jobs <- fileJob{src: src, dst: dst, st: st}:
			return nil
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := unix.Symlink(target, dst); err != nil {
			return &os.LinkError{Op: "symlink", Old: target, New: dst, Err: err}
		}
		c.count(func(s *CopyStats) { s.Symlinks++ })
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		if err := unix.Mknod(dst, typ|0o600, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: dst, Err: err}
		}
		c.count(func(s *CopyStats) { s.Specials++ })
	default:
		return fmt.Errorf("copy tree: %s: unknown file type %#o", src, typ)
	}
	return meta(src, dst, &st, -1)
}

// file copies one regular file and reports whether it was cloned.
func (c *copier) file(src, dst string, st *unix.Stat_t, buf *[]byte) (bool, error) {
	in, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: src, Err: err}
	}
	defer unix.Close(in)
	out, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, &os.PathError{Op: "create", Path: dst, Err: err}
	}
	reflinked, err := c.content(in, out, src, dst, st, buf)
	if err == nil {
		// Owner, mode and xattrs after the content: writing clears
		// security.capability and the setuid bits.
		err = meta(src, dst, st, out)
	}
	if cerr := unix.Close(out); err == nil && cerr != nil {
		err = &os.PathError{Op: "close", Path: dst, Err: cerr}
	}
	return reflinked, err
}

func (c *copier) content(in, out int, src, dst string, st *unix.Stat_t, buf *[]byte) (bool, error) {
	if st.Size == 0 {
		return false, nil
	}
	if c.reflink.Load() {
		err := unix.IoctlFileClone(out, in)
		if err == nil {
			return true, nil
		}
		if c.mode == CopyReflink {
			return false, fmt.Errorf("copy tree: reflink %s to %s: %w", src, dst, err)
		}
		if noSupport(err) {
			c.reflink.Store(false)
		}
		// Other errors (EINVAL for a nodatacow or swap file on btrfs) are
		// about this file only: copy it the other way.
	}
	// Only a file with fewer blocks than its size can have holes; skip the
	// two lseeks for the rest.
	if st.Blocks*512 >= st.Size {
		return false, c.copyRange(in, out, 0, st.Size, src, dst, buf)
	}
	var off int64
	for off < st.Size {
		data, err := unix.Seek(in, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			// No SEEK_DATA here: copy the rest densely.
			data = off
		}
		hole := st.Size
		if err == nil {
			if h, err := unix.Seek(in, data, unix.SEEK_HOLE); err == nil {
				hole = min(h, st.Size)
			}
		}
		if err := c.copyRange(in, out, data, hole, src, dst, buf); err != nil {
			return false, err
		}
		off = hole
	}
	// A trailing hole is made by setting the length.
	if err := unix.Ftruncate(out, st.Size); err != nil {
		return false, &os.PathError{Op: "truncate", Path: dst, Err: err}
	}
	return false, nil
}

// copyRange copies bytes [off, end) of in to the same offsets of out,
// through *buf (allocated on first use) when it has to read and write.
func (c *copier) copyRange(in, out int, off, end int64, src, dst string, buf *[]byte) error {
	for c.cfr.Load() && off < end {
		roff, woff := off, off
		n, err := unix.CopyFileRange(in, &roff, out, &woff, int(min(end-off, 1<<30)), 0)
		if err != nil {
			if noSupport(err) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBADF) {
				c.cfr.Store(false)
				break
			}
			return fmt.Errorf("copy tree: copy_file_range %s to %s: %w", src, dst, err)
		}
		if n == 0 {
			return nil // the source shrank under us: copy what is there
		}
		off += int64(n)
	}
	if off >= end {
		return nil
	}
	if *buf == nil {
		*buf = make([]byte, 1<<20)
	}
	b := *buf
	for off < end {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Pread(in, b[:min(end-off, int64(len(b)))], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "read", Path: src, Err: err}
		}
		if n == 0 {
			return nil
		}
		for w := 0; w < n; {
			m, err := unix.Pwrite(out, b[w:n], off+int64(w))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return &os.PathError{Op: "write", Path: dst, Err: err}
			}
			w += m
		}
		off += int64(n)
	}
	return nil
}

// noSupport reports errors that mean "this filesystem (pair) cannot do it
// at all", as opposed to a fault of one file.
func noSupport(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS)
}

// meta copies owner, mode, xattrs and times from src to dst, in that
// order: chown clears setuid bits and security.capability, and setting
// anything but times changes ctime only. fd is dst opened for writing, or
// -1 to work by path without following a symlink.
func meta(src, dst string, st *unix.Stat_t, fd int) error {
	var err error
	if fd >= 0 {
		err = unix.Fchown(fd, int(st.Uid), int(st.Gid))
	} else {
		err = unix.Lchown(dst, int(st.Uid), int(st.Gid))
	}
	if err != nil {
		return &os.PathError{Op: "chown", Path: dst, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		mode := st.Mode & 0o7777
		if fd >= 0 {
			err = unix.Fchmod(fd, mode)
		} else {
			err = unix.Chmod(dst, mode)
		}
		if err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	if err := copyXattrs(src, dst); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: dst, Err: err}
	}
	return nil
}

func copyXattrs(src, dst string) error {
	names, err := listXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		val, err := getXattr(src, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since it was listed
		}
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			return &os.PathError{Op: "setxattr " + name, Path: dst, Err: err}
		}
	}
	return nil
}

func listXattrs(p string) ([]string, error) {
	for {
		// The size query first: most files have no xattrs, so one syscall.
		n, err := unix.Llistxattr(p, nil)
		if err == nil && n == 0 || errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err == nil {
			buf := make([]byte, n)
			n, err = unix.Llistxattr(p, buf)
			if errors.Is(err, unix.ERANGE) {
				continue // grew between the two calls
			}
			if err == nil {
				return splitNames(buf[:n]), nil
			}
		}
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
}

func splitNames(b []byte) []string {
	var out []string
	for start := 0; start < len(b); {
		end := start
		for end < len(b) && b[end] != 0 {
			end++
		}
		if end > start {
			out = append(out, string(b[start:end]))
		}
		start = end + 1
	}
	return out
}

func getXattr(p, name string) ([]byte, error) {
	for {
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		buf := make([]byte, n)
		n, err = unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew between the two calls
		}
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		return buf[:n], nil
	}
}
