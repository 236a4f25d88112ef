package driver

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// TestWrapClassifiesNoSpace: whatever backend and call hit ENOSPC or
// EDQUOT, the wrapped error is ErrNoSpace (only btrfs's ApplyDiff said so
// before, and metrics counted the rest as "other"); other errors are not.
func TestWrapClassifiesNoSpace(t *testing.T) {
	for _, errno := range []error{syscall.ENOSPC, syscall.EDQUOT} {
		err := Wrap("apply", "l1", fmt.Errorf("tar entry %q: write: %w", "f", errno))
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, errno) {
			t.Errorf("Wrap(%v) = %v: want both ErrNoSpace and the errno", errno, err)
		}
		var le *LayerError
		if !errors.As(err, &le) || le.ID != "l1" {
			t.Errorf("Wrap(%v) lost the layer: %v", errno, err)
		}
		if again := Wrap("apply", "l1", err); again != err {
			t.Errorf("wrapped twice: %v", again)
		}
	}
	if err := Wrap("apply", "l1", syscall.EIO); errors.Is(err, ErrNoSpace) {
		t.Errorf("EIO classified as no space: %v", err)
	}
}
