package conformance_test

import (
	"context"
	"fmt"

	"github.com/stratafs/strata/conformance"
	"github.com/stratafs/strata/driver"
)

// vfsBackend: placeholder until drivers/vfs lands.
func vfsBackend() conformance.Backend {
	return conformance.Backend{
		Name: "vfs",
		New: func(ctx context.Context, root string) (driver.Driver, error) {
			return nil, fmt.Errorf("vfs: %w: drivers/vfs not written yet", driver.ErrNotSupported)
		},
	}
}
