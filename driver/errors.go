package driver

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Every error a Driver returns wraps one of these (or a
// plain I/O error) inside a *LayerError, so callers test with errors.Is.
var (
	// ErrNotSupported: the backend, option or feature cannot work on this host.
	ErrNotSupported = errors.New("not supported")
	// ErrLayerNotFound: no layer with that ID (or the named parent is missing).
	ErrLayerNotFound = errors.New("layer not found")
	// ErrLayerExists: Create was called with an ID that is already taken.
	ErrLayerExists = errors.New("layer already exists")
	// ErrLayerInUse: the layer is mounted (Get without matching Put).
	ErrLayerInUse = errors.New("layer in use")
	// ErrHasChildren: Remove of a layer that other layers are built on.
	ErrHasChildren = errors.New("layer has children")
	// ErrInvalidID: the ID is empty, too long or contains characters outside [A-Za-z0-9_.-].
	ErrInvalidID = errors.New("invalid layer id")
	// ErrNoSpace: the filesystem or the layer's size limit is full.
	ErrNoSpace = errors.New("no space left")
	// ErrClosed: the driver was closed.
	ErrClosed = errors.New("driver closed")
)

// LayerError records the operation and the layer ID an error happened on,
// in the way fs.PathError does for paths.
type LayerError struct {
	Op  string // "create", "remove", "get", "put", "diff", "changes", "apply", "diffsize", ...
	ID  string
	Err error
}

func (e *LayerError) Error() string {
	if e.ID == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return fmt.Sprintf("%s %s: %v", e.Op, e.ID, e.Err)
}

func (e *LayerError) Unwrap() error { return e.Err }

// Wrap returns err wrapped in a *LayerError for op and id, or nil if err is
// nil. An error that already carries the same op and id is not wrapped twice.
// An out-of-space error of the kernel (ENOSPC, or EDQUOT from a quota) is
// made to wrap ErrNoSpace too, whatever the backend and the call that hit
// it, so that callers and metrics tell a full disk from a bad tar.
func Wrap(op, id string, err error) error {
	if err == nil {
		return nil
	}
	err = NoSpace(err)
	var le *LayerError
	if errors.As(err, &le) && le.Op == op && le.ID == id {
		return err
	}
	return &LayerError{Op: op, ID: id, Err: err}
}

// Errorf is a shorthand for Wrap(op, id, fmt.Errorf(format, args...)); use %w
// to keep a sentinel reachable.
func Errorf(op, id, format string, args ...any) error {
	return &LayerError{Op: op, ID: id, Err: fmt.Errorf(format, args...)}
}

// NoSpace returns err wrapping ErrNoSpace as well when it is the kernel's
// ENOSPC or EDQUOT, else err unchanged.
func NoSpace(err error) error {
	if (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}
