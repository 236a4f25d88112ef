package conformance_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratafs/strata/conformance"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers/vfs"
	"github.com/stratafs/strata/metrics"
)

// metricsBackend is vfs behind metrics.Instrument: a decorator must pass
// the same suite as what it wraps, optional capabilities included
// (moby#33734 lost them behind a wrapper).
func metricsBackend() conformance.Backend {
	b := vfsBackend()
	b.Name = "vfs+metrics"
	b.New = func(ctx context.Context, root string) (driver.Driver, error) {
		d, err := vfs.New(ctx, root, vfs.Options{})
		if err != nil {
			return nil, err
		}
		m, err := metrics.Instrument(d, prometheus.NewRegistry(), metrics.Options{})
		if err != nil {
			d.Close()
			return nil, err
		}
		return m, nil
	}
	return b
}

// The suite uses optional capabilities only where a driver has them, so
// it cannot see a decorator drop one: check that here.
func TestInstrumentKeepsCapabilities(t *testing.T) {
	ctx := context.Background()
	root := conformance.TempRoot(t)
	plain, err := vfs.New(ctx, root+"/plain", vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	wrapped, err := metricsBackend().New(ctx, root+"/wrapped")
	if err != nil {
		t.Fatal(err)
	}
	defer wrapped.Close()
	for name, has := range map[string]func(driver.Driver) bool{
		"Lister":         func(d driver.Driver) bool { _, ok := d.(driver.Lister); return ok },
		"CopyUpReporter": func(d driver.Driver) bool { _, ok := d.(driver.CopyUpReporter); return ok },
		"Quota":          func(d driver.Driver) bool { _, ok := d.(driver.Quota); return ok },
	} {
		if has(plain) && !has(wrapped) {
			t.Errorf("vfs is a %s, vfs behind metrics.Instrument is not", name)
		}
	}
}
