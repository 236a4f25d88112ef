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
