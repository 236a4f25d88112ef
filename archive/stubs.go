package archive

// TEMPORARY: signatures only, so that other packages compile while the
// archive package is written. Each function moves to its real file
// (apply.go, diff.go, changes.go, compress.go) and this file is deleted.

import (
	"context"
	"errors"
	"io"
)

var errTODO = errors.New("archive: not implemented yet")

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
)

// ApplyOptions are the options of Apply.
type ApplyOptions struct {
	Whiteouts WhiteoutFormat
	// NoDevices refuses char and block device entries (other than overlay
	// whiteouts) with an error naming the entry.
	NoDevices bool
	// NoSetuid clears setuid and setgid bits.
	NoSetuid bool
}

// Apply unpacks the OCI layer tar read from r (plain, gzip or zstd) onto
// dir and returns the number of bytes of file content it wrote. No entry
// can write outside dir. Apply does not sync; callers that publish the
// result make it durable (fsutil.Syncfs).
func Apply(ctx context.Context, dir string, r io.Reader, opts ApplyOptions) (int64, error) {
	return 0, errTODO
}

// Changes compares dir with parentDir ("" means an empty parent) and
// returns what differs, sorted so that a directory precedes its contents.
func Changes(ctx context.Context, parentDir, dir string) ([]Change, error) {
	return nil, errTODO
}

// WriteChanges writes changes as an OCI layer tar to w, taking content
// from dir. Output is deterministic.
func WriteChanges(ctx context.Context, w io.Writer, dir string, changes []Change) error {
	return errTODO
}

// DiffOptions are the options of WriteDir.
type DiffOptions struct {
	Whiteouts WhiteoutFormat
}

// WriteDir writes the whole tree under dir as an OCI layer tar. With an
// overlay format, whiteout devices and opaque xattrs become .wh. entries
// and overlay's own xattrs are left out.
func WriteDir(ctx context.Context, w io.Writer, dir string, opts DiffOptions) error {
	return errTODO
}
