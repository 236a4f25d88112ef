package archive

import (
	"errors"
	"fmt"
)

var (
	// ErrUnsafePath: an entry, link target or whiteout points outside the
	// target directory (or at the directory itself where that makes no sense).
	ErrUnsafePath = errors.New("path escapes the target directory")
	// ErrInvalidTar: the stream is not a well-formed OCI layer tar
	// (truncated, corrupt, unknown entry type, absurd sizes or names).
	ErrInvalidTar = errors.New("invalid layer tar")
	// ErrTooLarge: the tar declares more than the limits in ApplyOptions
	// allow (terabytes of sparse holes in a few KiB of tar).
	ErrTooLarge = errors.New("layer tar exceeds a limit")
	// ErrNotAllowed: the entry is well-formed but the options forbid it
	// (a device with NoDevices).
	ErrNotAllowed = errors.New("entry not allowed")
)

// EntryError reports the tar entry Apply failed on.
type EntryError struct {
	Name string // the entry name as written in the tar
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("tar entry %q: %v", shorten(e.Name), e.Err) }

func (e *EntryError) Unwrap() error { return e.Err }

func entryErr(name string, err error) error {
	if err == nil {
		return nil
	}
	var ee *EntryError
	if errors.As(err, &ee) {
		return err
	}
	return &EntryError{Name: name, Err: err}
}
