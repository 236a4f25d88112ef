package conformance_test

import (
	"context"

	"github.com/stratafs/strata/conformance"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers/overlay2"
)

// overlay2Backend runs on a directory under /var/tmp (ext4 here); New
// refuses a root on a filesystem overlay cannot use, with the reason.
func overlay2Backend() conformance.Backend {
	return conformance.Backend{
		Name: "overlay2",
		New: func(ctx context.Context, root string) (driver.Driver, error) {
			return overlay2.New(ctx, root, overlay2.Options{})
		},
		Caps: conformance.Caps{
			NativeDiff:    true,
			MaxChainDepth: 500,
			// Overlay marks opaque dirs and copy-up origins itself.
			IgnoreXattrs: []string{"trusted.overlay."},
		},
	}
}
