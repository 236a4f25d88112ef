package conformance_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/conformance"
	"github.com/stratafs/strata/conformance/fixtures"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers/btrfs"
)

// btrfsBackend runs each case on its own btrfs: a 1 GiB sparse file under
// /var/tmp on a loop device, torn down after the case. The fixture skips
// with the reason when not root, without mkfs.btrfs or without a free loop
// device; a build without cgo skips through New's ErrNotSupported.
func btrfsBackend() conformance.Backend {
	return conformance.Backend{
		Name: "btrfs",
		Root: func(t testing.TB) string {
			return filepath.Join(fixtures.Btrfs(t, 1<<30), "btrfs")
		},
		New: func(ctx context.Context, root string) (driver.Driver, error) {
			return btrfs.New(ctx, root, btrfs.Options{})
		},
		Caps: conformance.Caps{NativeDiff: true},
	}
}
