//go:build !linux || !cgo

package btrfs

import (
	"context"
	"fmt"

	"github.com/stratafs/strata/driver"
)

// github.com/containerd/btrfs/v2 needs cgo (it includes linux/btrfs.h), so
// a build without it has no btrfs backend; it still compiles and says why.

// Probe reports that btrfs is unavailable in this build.
func Probe(ctx context.Context, root string) error {
	return fmt.Errorf("btrfs: built without cgo (or not for Linux): %w", driver.ErrNotSupported)
}

// New fails like Probe.
func New(ctx context.Context, root string, opts Options) (driver.Driver, error) {
	return nil, Probe(ctx, root)
}
