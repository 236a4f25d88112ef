package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ApplyOptions are the options of Apply.
type ApplyOptions struct {
	Whiteouts WhiteoutFormat
	// NoDevices refuses char and block device entries (other than overlay
	// whiteouts) with an error naming the entry.
	NoDevices bool
	// NoSetuid clears setuid and setgid bits.
	NoSetuid bool
	// MaxHoleBytes bounds the holes that sparse entries may declare, over
	// the whole tar: the logical bytes of content beyond the bytes the tar
	// stores. Unpacking a hole costs time though it costs no disk, so
	// without a bound a few KiB of tar could keep Apply busy for hours.
	// 0 means DefaultMaxHoleBytes; a negative value means no limit. A tar
	// over the limit fails with ErrTooLarge.
	MaxHoleBytes int64
	// NewDir, when set, is called before Apply creates a directory that
	// no entry names (a missing parent of an entry), with its path in the
	// tree (symlinks resolved). An error refuses the entry; a path in like
	// gives the new directory that directory's owner, mode and xattrs
	// (overlay's own left out). A backend that unpacks onto one layer of
	// a stack (overlay2's diff dir) uses it as overlayfs copies up: a
	// parent that a lower layer has as a directory keeps that directory's
	// metadata, and one it has as a symlink or file is refused (the
	// layers applied in order go through it; a directory made in this
	// layer would hide it).
	NewDir func(rel string) (like string, err error)
	// LinkTarget, when set, is called when a hardlink's target is not in
	// the tree, with the target's path; its error replaces "not found"
	// (a backend whose tree holds one layer only says why it cannot link
	// to a file of a lower one).
	LinkTarget func(rel string) error
}

// DefaultMaxHoleBytes is the hole budget of a tar when ApplyOptions sets
// none: far above the sparse files of real images (lastlog, a few GiB),
// and unpacked in seconds.
const DefaultMaxHoleBytes = 16 << 30

const (
	// copyBufSize is the one content buffer Apply uses, whatever the
	// number or size of files.
	copyBufSize = 1 << 20
	// holeBlock is the granularity at which all-zero content is skipped
	// (left as a hole) instead of written.
	holeBlock = 64 << 10
	// maxTrailer bounds what Apply reads after the end of the tar.
	maxTrailer = 16 << 20
)

// Apply unpacks the OCI layer tar read from r (plain, gzip or zstd) onto
// dir and returns the number of bytes of file content it wrote. No entry
// can write outside dir. Apply does not sync; callers that publish the
// result make it durable (fsutil.Syncfs).
//
// Choices worth knowing:
//   - Names are taken relative to dir; a leading "/" is dropped (as GNU
//     tar does) and a name that climbs out with ".." is refused. Symlinks
//     met on the way, absolute or not, resolve inside dir.
//   - An entry replaces what is at its path unless both are directories,
//     in which case only the metadata is updated.
//   - Whiteouts apply to what was there before this layer: a .wh.NAME or
//     .wh..wh..opq never removes a path this same tar writes, whatever
//     the entry order. Other .wh..wh.* names (aufs bookkeeping) are skipped.
//   - Overlay's own xattrs (trusted.overlay.*, user.overlay.*) in the tar
//     are dropped: a layer must not forge overlayfs metadata.
//   - All-zero runs of file content (64 KiB blocks) are left as holes, so
//     sparse files stay sparse and cost no disk.
//   - NoSetuid clears setuid/setgid on everything but directories (a
//     setgid directory only passes its group on).
//   - On error the tree is left half-applied: callers stage into a
//     directory they remove on failure.
func Apply(ctx context.Context, dir string, r io.Reader, opts ApplyOptions) (int64, error) {
	rc, err := Decompress(r)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	t, err := openTree(dir)
	if err != nil {
		return 0, err
	}
	defer t.close()
	t.newDir = opts.NewDir
	raw := &countReader{r: rc}
	a := &applier{
		t:       t,
		opts:    opts,
		raw:     raw,
		holes:   opts.MaxHoleBytes,
		buf:     make([]byte, copyBufSize),
		zero:    make([]byte, holeBlock),
		written: map[string]struct{}{},
		dirs:    map[string]dirTimes{},
	}
	if a.holes == 0 {
		a.holes = DefaultMaxHoleBytes
	}
	tr := tar.NewReader(raw)
	last := ""
	for {
		if err := ctx.Err(); err != nil {
			return a.size, err
		}
		mark := raw.n
		hdr, err := tr.Next()
		if err == io.EOF {
			// archive/tar also takes a stream cut at a block boundary
			// (after an entry, a lone end block, even a PAX header) for
			// a clean end. Every entry's content was read to its end, so
			// what Next read here is the padding (under 512 bytes) and
			// the header blocks: a whole tar's two end blocks are there
			// only if it read 1024 bytes or more. Nothing at all is an
			// empty layer.
			if raw.n != 0 && raw.n-mark < 1024 {
				if last == "" {
					return a.size, fmt.Errorf("%w: the stream ends inside the first header (truncated?)", ErrInvalidTar)
				}
				return a.size, fmt.Errorf("%w: the stream ends after entry %q without the end-of-archive blocks (truncated?)", ErrInvalidTar, shorten(last))
			}
			break
		}
		if err != nil {
			if last == "" {
				return a.size, fmt.Errorf("%w: first header: %v", ErrInvalidTar, err)
			}
			return a.size, fmt.Errorf("%w: header after entry %q: %v", ErrInvalidTar, shorten(last), err)
		}
		last = hdr.Name
		if err := a.entry(ctx, hdr, tr); err != nil {
			return a.size, entryErr(hdr.Name, err)
		}
		// Content an entry did not use (a whiteout's) is read too, under
		// the same hole budget, so that the end check above holds.
		if err := a.skip(ctx, tr); err != nil {
			return a.size, entryErr(hdr.Name, err)
		}
	}
	if err := a.finishDirs(ctx); err != nil {
		return a.size, err
	}
	// Read what follows the end-of-archive blocks (record padding) so
	// that a gzip or zstd checksum at the very end is verified; a stream
	// that goes on and on after the tar is not read to its end.
	if _, err := io.CopyN(io.Discard, rc, maxTrailer); err != nil && err != io.EOF {
		return a.size, fmt.Errorf("%w: after the last entry: %v", ErrInvalidTar, err)
	}
	return a.size, nil
}

type dirTimes struct{ atime, mtime unix.Timespec }

type applier struct {
	t    *tree
	opts ApplyOptions
	raw  *countReader // the tar stream, decompressed
	// holes is what is left of the hole budget (negative: no limit).
	holes int64
	buf   []byte
	zero  []byte
	size  int64
	// written holds every path this tar wrote, with all its parents, so
	// that whiteouts spare them. Paths are canonical (symlinks in parents
	// resolved), so "bin/sh" through bin -> usr/bin is usr/bin/sh.
	written map[string]struct{}
	// dirs get their times last: creating children changes them.
	dirs map[string]dirTimes
}

func (a *applier) markWritten(p string) {
	for first := true; ; first = false {
		if _, ok := a.written[p]; ok && !first {
			return
		}
		a.written[p] = struct{}{}
		if p == "" {
			return
		}
		p, _ = splitName(p)
	}
}

func (a *applier) isWritten(p string) bool {
	_, ok := a.written[p]
	return ok
}

func (a *applier) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // global PAX records carry nothing Apply uses
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink,
		tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return fmt.Errorf("%w: unsupported entry type %q", ErrInvalidTar, hdr.Typeflag)
	}
	if hdr.Size < 0 || hdr.Size > maxEntrySize {
		return fmt.Errorf("%w: size %d is out of range", ErrInvalidTar, hdr.Size)
	}
	if hdr.Uid < 0 || int64(hdr.Uid) > 1<<32-2 || hdr.Gid < 0 || int64(hdr.Gid) > 1<<32-2 {
		return fmt.Errorf("%w: uid/gid %d/%d out of range", ErrInvalidTar, hdr.Uid, hdr.Gid)
	}
	if len(hdr.Linkname) > maxPathLen {
		return fmt.Errorf("%w: link target is %d bytes long (limit %d)", ErrInvalidTar, len(hdr.Linkname), maxPathLen)
	}
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	parent, base := splitName(rel)
	if strings.HasPrefix(base, WhiteoutPrefix) {
		return a.whiteout(parent, base)
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: only a directory entry may name the target itself", ErrUnsafePath)
		}
		return a.rootDir(hdr)
	}
	pfd, canon, err := a.t.dirFD(parent, true)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = a.mkdir(pfd, rel, base, hdr)
	case tar.TypeSymlink:
		err = a.symlink(pfd, base, hdr)
	case tar.TypeLink:
		err = a.link(pfd, rel, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = a.mknod(pfd, base, hdr)
	default:
		err = a.file(ctx, pfd, base, hdr, r)
	}
	if err != nil {
		return err
	}
	a.markWritten(join(canon, base))
	return nil
}

// create runs mk and, if the name is taken, removes what is there and
// runs it again: tar semantics, a later entry replaces an earlier one.
func (a *applier) create(pfd int, base string, mk func() error) error {
	err := mk()
	if err == unix.EEXIST {
		if err := a.t.removeAll(pfd, base); err != nil {
			return err
		}
		err = mk()
	}
	return err
}

func (a *applier) file(ctx context.Context, pfd int, base string, hdr *tar.Header, r io.Reader) error {
	var fd int
	err := a.create(pfd, base, func() (err error) {
		fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	err = a.content(ctx, fd, r, hdr.Size)
	if err == nil {
		err = a.fdMeta(fd, hdr)
	}
	if err == nil {
		// Through the fd: no second lookup of the name.
		t := times(hdr)
		if terr := unix.UtimesNanoAt(fd, "", []unix.Timespec{t.atime, t.mtime}, unix.AT_EMPTY_PATH); terr != nil {
			err = fmt.Errorf("set times: %w", terr)
		}
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

func (a *applier) mode(hdr *tar.Header) uint32 {
	m := uint32(hdr.Mode) & 0o7777
	if a.opts.NoSetuid && hdr.Typeflag != tar.TypeDir {
		m &^= unix.S_ISUID | unix.S_ISGID
	}
	return m
}

// fdMeta sets owner, mode and xattrs of an open file. The order matters:
// chown clears setuid bits and security.capability, so it goes first.
func (a *applier) fdMeta(fd int, hdr *tar.Header) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, a.mode(hdr)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for _, k := range xattrKeys(hdr) {
		if err := unix.Fsetxattr(fd, k, []byte(hdr.PAXRecords[paxXattr+k]), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", k, err)
		}
	}
	return nil
}

// pathMeta is fdMeta for entries that cannot be opened for writing
// (directories, symlinks, devices, fifos).
func (a *applier) pathMeta(pfd int, base string, hdr *tar.Header) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// Linux symlinks have no mode of their own; the node was just
		// made (or checked) by us, so following is not a concern.
		if err := unix.Fchmodat(pfd, base, a.mode(hdr), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	keys := xattrKeys(hdr)
	if len(keys) == 0 {
		return nil
	}
	p := procPath(pfd, base)
	for _, k := range keys {
		if err := unix.Lsetxattr(p, k, []byte(hdr.PAXRecords[paxXattr+k]), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", k, err)
		}
	}
	return nil
}

func (a *applier) mkdir(pfd int, rel, base string, hdr *tar.Header) error {
	err := unix.Mkdirat(pfd, base, 0o700)
	existed := false
	if err == unix.EEXIST {
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("stat: %w", err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err, existed = nil, true // existing directory: only the metadata changes
		} else {
			if err := a.t.removeAll(pfd, base); err != nil {
				return err
			}
			err = unix.Mkdirat(pfd, base, 0o700)
		}
	}
	if err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	if existed {
		if err := dropXattrs(pfd, base, hdr); err != nil {
			return err
		}
	}
	if err := a.pathMeta(pfd, base, hdr); err != nil {
		return err
	}
	a.dirs[rel] = times(hdr)
	return nil
}

// dropXattrs removes the xattrs of an existing directory that its entry
// does not carry: the entry's metadata replaces the directory's (a layer
// that removed an xattr from a directory says so by leaving it out).
// Overlay's own are kept: they are this tree's bookkeeping (an opaque
// marker this tar set), never the tar's; so is the host's SELinux label.
func dropXattrs(pfd int, base string, hdr *tar.Header) error {
	p := procPath(pfd, base)
	have, err := readXattrs(p, make([]byte, 4096))
	if err != nil {
		return err
	}
	for _, x := range have {
		if isOverlayXattr(x.name) || x.name == "security.selinux" {
			continue
		}
		if _, keep := hdr.PAXRecords[paxXattr+x.name]; keep {
			continue
		}
		if err := unix.Lremovexattr(p, x.name); err != nil && err != unix.ENODATA {
			return fmt.Errorf("remove xattr %s: %w", x.name, err)
		}
	}
	return nil
}

func (a *applier) rootDir(hdr *tar.Header) error {
	fd := a.t.rootFD
	if err := a.fdMeta(fd, hdr); err != nil {
		return err
	}
	a.dirs[""] = times(hdr)
	return nil
}

func (a *applier) symlink(pfd int, base string, hdr *tar.Header) error {
	if hdr.Linkname == "" {
		return fmt.Errorf("%w: symlink with an empty target", ErrInvalidTar)
	}
	err := a.create(pfd, base, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) })
	if err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if err := a.pathMeta(pfd, base, hdr); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr)
}

// link makes a hardlink. The target is resolved inside the tree like any
// entry name and linked without following a final symlink, so a link can
// neither reach a file outside nor be bent by one.
func (a *applier) link(pfd int, rel, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if target == "" {
		return fmt.Errorf("%w: hardlink to the target directory itself", ErrUnsafePath)
	}
	if target == rel {
		return nil // a link to itself leaves the file as it is
	}
	tdir, tbase := splitName(target)
	tfd, release, err := a.t.tempDirFD(tdir)
	if err != nil {
		if a.opts.LinkTarget != nil && errors.Is(err, unix.ENOENT) {
			return a.opts.LinkTarget(target)
		}
		return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	}
	defer release()
	err = a.create(pfd, base, func() error { return unix.Linkat(tfd, tbase, pfd, base, 0) })
	if err == unix.ENOENT && a.opts.LinkTarget != nil {
		return a.opts.LinkTarget(target)
	}
	if err != nil {
		return fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
	}
	return nil
}

func (a *applier) mknod(pfd int, base string, hdr *tar.Header) error {
	mode := uint32(unix.S_IFIFO)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode = unix.S_IFCHR
	case tar.TypeBlock:
		mode = unix.S_IFBLK
	}
	if mode != unix.S_IFIFO && a.opts.NoDevices {
		return fmt.Errorf("%w: device node (NoDevices is set)", ErrNotAllowed)
	}
	if hdr.Devmajor < 0 || hdr.Devmajor > 1<<32-1 || hdr.Devminor < 0 || hdr.Devminor > 1<<32-1 {
		return fmt.Errorf("%w: device number %d:%d out of range", ErrInvalidTar, hdr.Devmajor, hdr.Devminor)
	}
	dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	err := a.create(pfd, base, func() error { return unix.Mknodat(pfd, base, mode|a.mode(hdr), dev) })
	if err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	if err := a.pathMeta(pfd, base, hdr); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr)
}

func times(hdr *tar.Header) dirTimes {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return dirTimes{atime: timespec(at), mtime: timespec(hdr.ModTime)}
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

func setTimes(pfd int, base string, hdr *tar.Header) error {
	t := times(hdr)
	if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{t.atime, t.mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// finishDirs sets directory times deepest first, once no more children
// will be created in them.
func (a *applier) finishDirs(ctx context.Context) error {
	paths := slices.SortedFunc(maps.Keys(a.dirs), func(x, y string) int {
		return strings.Count(y, "/") - strings.Count(x, "/") + boolCmp(x == "", y == "")
	})
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := a.dirs[p]
		ts := []unix.Timespec{t.atime, t.mtime}
		if p == "" {
			if err := unix.UtimesNanoAt(a.t.rootFD, "", ts, unix.AT_EMPTY_PATH); err != nil {
				return fmt.Errorf("set times of %s: %w", a.t.dir, err)
			}
			continue
		}
		parent, base := splitName(p)
		pfd, release, err := a.t.tempDirFD(parent)
		if err != nil {
			continue // removed or replaced by a later entry
		}
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		release()
		if err != nil {
			return entryErr(p, fmt.Errorf("set times: %w", err))
		}
	}
	return nil
}

func boolCmp(a, b bool) int {
	switch {
	case a && !b:
		return 1
	case b && !a:
		return -1
	}
	return 0
}
