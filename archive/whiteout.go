package archive

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// WhiteoutFormat says how deletions and opaque directories are stored on disk.
type WhiteoutFormat uint8

const (
	// OCIWhiteouts: on Apply a .wh.NAME entry deletes NAME and .wh..wh..opq
	// empties its directory of everything not in this layer; nothing of the
	// markers themselves is stored. On Diff deletions come from Changes.
	OCIWhiteouts WhiteoutFormat = iota
	// OverlayWhiteouts: deletions are stored as char 0/0 devices and
	// opaque dirs carry trusted.overlay.opaque=y (what overlayfs reads in an
	// upper or lower dir). WriteDir turns them back into .wh. entries.
	OverlayWhiteouts
	// OverlayUserWhiteouts: as OverlayWhiteouts with user.overlay.opaque,
	// for overlay mounted with "userxattr" (no CAP_SYS_ADMIN in init ns).
	OverlayUserWhiteouts
)

// Tar names of the OCI whiteout markers.
const (
	WhiteoutPrefix = ".wh."
	WhiteoutOpaque = ".wh..wh..opq"
	// whiteoutMeta prefixes aufs bookkeeping names (.wh..wh.plnk, ...),
	// which carry nothing a layer needs.
	whiteoutMeta = ".wh..wh."
)

// OpaqueXattr is the xattr that marks an opaque directory in an overlay
// format ("" for OCIWhiteouts).
func (f WhiteoutFormat) OpaqueXattr() string {
	switch f {
	case OverlayWhiteouts:
		return "trusted.overlay.opaque"
	case OverlayUserWhiteouts:
		return "user.overlay.opaque"
	}
	return ""
}

func (f WhiteoutFormat) String() string {
	switch f {
	case OverlayWhiteouts:
		return "overlay"
	case OverlayUserWhiteouts:
		return "overlay-userxattr"
	}
	return "oci"
}

// whiteout handles a .wh. entry in directory parent.
func (a *applier) whiteout(parent, base string) error {
	if base == WhiteoutOpaque {
		return a.opaque(parent)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil
	}
	name := base[len(WhiteoutPrefix):]
	switch name {
	case "", ".", "..":
		return fmt.Errorf("%w: whiteout of %q would remove the target directory or climb out of it", ErrUnsafePath, name)
	}
	if a.opts.Whiteouts == OCIWhiteouts {
		pfd, canon, err := a.t.dirFD(parent, false)
		if err != nil {
			return nil // the parent is not there, so neither is the target
		}
		if a.isWritten(join(canon, name)) {
			return nil // a whiteout never hides what its own layer adds
		}
		return a.t.removeAll(pfd, name)
	}
	pfd, canon, err := a.t.dirFD(parent, true)
	if err != nil {
		return err
	}
	target := join(canon, name)
	if a.isWritten(target) {
		return nil
	}
	err = a.create(pfd, name, func() error { return unix.Mknodat(pfd, name, unix.S_IFCHR, 0) })
	if err != nil {
		return fmt.Errorf("whiteout device: %w", err)
	}
	// The device stands for this layer's deletion: an opaque marker of
	// the parent later in the tar must keep it.
	a.markWritten(target)
	return nil
}

// opaque hides everything of dir that this tar did not write; in an
// overlay format the directory is marked opaque for overlayfs as well.
func (a *applier) opaque(dir string) error {
	_, canon, err := a.t.dirFD(dir, true)
	if err != nil {
		return err
	}
	if err := a.clearUnwritten(canon); err != nil {
		return err
	}
	a.markWritten(canon)
	x := a.opts.Whiteouts.OpaqueXattr()
	if x == "" {
		return nil
	}
	fd, release, err := a.t.tempDirFD(canon)
	if err != nil {
		return err
	}
	defer release()
	// Setxattr, not Lsetxattr: the /proc/self/fd link must be followed to
	// the directory (lsetxattr on the magic link itself fails with ENOTSUP).
	if err := unix.Setxattr(procPath(fd, ""), x, []byte("y"), 0); err != nil {
		return fmt.Errorf("set %s: %w", x, err)
	}
	return nil
}

// clearUnwritten removes the children of dir that are not in the written
// set, descending into written directories (their older content is
// hidden by the opaque parent too).
func (a *applier) clearUnwritten(dir string) error {
	fd, release, err := a.t.tempDirFD(dir)
	if err != nil {
		return err
	}
	defer release()
	names, err := readNames(fd, ".")
	if err != nil {
		return fmt.Errorf("read %q: %w", dir, err)
	}
	for _, n := range names {
		p := join(dir, n)
		if !a.isWritten(p) {
			if err := a.t.removeAll(fd, n); err != nil {
				return err
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("stat %q: %w", p, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := a.clearUnwritten(p); err != nil {
				return err
			}
		}
	}
	return nil
}
