package conformance_test

import (
	"context"

	"github.com/stratafs/strata/conformance"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers/vfs"
)

// vfsBackend runs on a plain directory under /var/tmp: it needs nothing
// from the kernel, stores every attribute a layer has, and keeps mtimes
// to the nanosecond.
func vfsBackend() conformance.Backend {
	return conformance.Backend{
		Name: "vfs",
		New: func(ctx context.Context, root string) (driver.Driver, error) {
			return vfs.New(ctx, root, vfs.Options{})
		},
	}
}
