package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/metrics"
)

func newCopyUpFixture(t *testing.T, opts metrics.Options) (*fake, driver.Driver, *prometheus.Registry) {
	t.Helper()
	ctx := context.Background()
	f := newFake()
	reg := prometheus.NewPedanticRegistry()
	d, err := metrics.Instrument(f, reg, opts)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	require.NoError(t, d.Create(ctx, "img", "", nil))
	for _, id := range []string{"c1", "c2"} {
		require.NoError(t, d.Create(ctx, id, "img", &driver.CreateOpts{Writable: true}))
	}
	return f, d, reg
}

// Totals are sums over writable layers only, and read-only layers are
// never asked.
func TestCopyUpTotals(t *testing.T) {
	f, _, reg := newCopyUpFixture(t, metrics.Options{})
	f.setCopyUp("c1", driver.CopyUpStats{CopiedFiles: 7, CopiedBytes: 700, NewFiles: 5, NewBytes: 50})
	f.setCopyUp("c2", driver.CopyUpStats{CopiedFiles: 1, CopiedBytes: 10, NewFiles: 2, NewBytes: 20})
	f.setCopyUp("img", driver.CopyUpStats{CopiedFiles: 1000})

	expected := `
# HELP strata_copyup_bytes Bytes of files copied up from lower layers into writable layers, summed over writable layers.
# TYPE strata_copyup_bytes gauge
strata_copyup_bytes{driver="fake"} 710
# HELP strata_copyup_files Files copied up from lower layers into writable layers, summed over writable layers.
# TYPE strata_copyup_files gauge
strata_copyup_files{driver="fake"} 8
# HELP strata_copyup_stale_layers Writable layers whose copy-up figures are older than the cache TTL or missing because the scrape's time budget ran out.
# TYPE strata_copyup_stale_layers gauge
strata_copyup_stale_layers{driver="fake"} 0
# HELP strata_new_bytes Bytes of files created in writable layers that exist in no lower layer, summed over writable layers.
# TYPE strata_new_bytes gauge
strata_new_bytes{driver="fake"} 70
# HELP strata_new_files Files created in writable layers that exist in no lower layer, summed over writable layers.
# TYPE strata_new_files gauge
strata_new_files{driver="fake"} 7
# HELP strata_writable_layers Writable layers on the driver's root, as last listed.
# TYPE strata_writable_layers gauge
strata_writable_layers{driver="fake"} 2
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"strata_copyup_bytes", "strata_copyup_files", "strata_copyup_stale_layers",
		"strata_new_bytes", "strata_new_files", "strata_writable_layers"))
	assert.Zero(t, f.calls["img"], "read-only layers are not asked")
}

// Within the TTL a scrape reuses the cached figures instead of asking the
// backend again; once it expires the new figures show.
func TestCopyUpCachedForTTL(t *testing.T) {
	f, _, reg := newCopyUpFixture(t, metrics.Options{CopyUpTTL: time.Hour})
	f.setCopyUp("c1", driver.CopyUpStats{CopiedFiles: 1})
	assert.Equal(t, 1.0, value(t, reg, "strata_copyup_files", nil))
	f.setCopyUp("c1", driver.CopyUpStats{CopiedFiles: 2})
	assert.Equal(t, 1.0, value(t, reg, "strata_copyup_files", nil), "cached")
	assert.Equal(t, 1, f.calls["c1"])

	f2, _, reg2 := newCopyUpFixture(t, metrics.Options{CopyUpTTL: -1})
	f2.setCopyUp("c1", driver.CopyUpStats{CopiedFiles: 1})
	assert.Equal(t, 1.0, value(t, reg2, "strata_copyup_files", nil))
	f2.setCopyUp("c1", driver.CopyUpStats{CopiedFiles: 2})
	assert.Equal(t, 2.0, value(t, reg2, "strata_copyup_files", nil), "no cache")
	assert.Equal(t, 2, f2.calls["c1"])
}

// Layers created or removed through the decorator show at the next scrape
// even inside the TTL; their figures go with them.
func TestCopyUpFollowsCreateRemove(t *testing.T) {
	ctx := context.Background()
	f, d, reg := newCopyUpFixture(t, metrics.Options{CopyUpTTL: time.Hour, PerLayer: true})
	f.setCopyUp("c1", driver.CopyUpStats{NewFiles: 1})
	f.setCopyUp("c2", driver.CopyUpStats{NewFiles: 2})
	assert.Equal(t, 3.0, value(t, reg, "strata_new_files", nil))
	require.NoError(t, d.Create(ctx, "c3", "img", &driver.CreateOpts{Writable: true}))
	f.setCopyUp("c3", driver.CopyUpStats{NewFiles: 4})
	assert.Equal(t, 7.0, value(t, reg, "strata_new_files", nil))
	assert.Equal(t, 3.0, value(t, reg, "strata_writable_layers", nil))
	require.NoError(t, d.Remove(ctx, "c1"))
	assert.Equal(t, 6.0, value(t, reg, "strata_new_files", nil))
	assert.Equal(t, 2, testutil.CollectAndCount(reg, "strata_layer_new_files"), "a removed layer's series is gone")
}

// A backend that is slow for one layer cannot hold a scrape past its
// budget: that layer counts as stale, and it goes to the back of the line
// so that it does not starve the others on later scrapes.
func TestCopyUpScrapeBudget(t *testing.T) {
	f, _, reg := newCopyUpFixture(t, metrics.Options{CopyUpTTL: -1, ScrapeBudget: 50 * time.Millisecond})
	f.setCopyUp("c2", driver.CopyUpStats{CopiedBytes: 5})
	f.mu.Lock()
	f.slow["c1"] = true
	f.mu.Unlock()

	// c1 comes first by ID and uses up the whole budget.
	s := scrape(t, reg)
	assert.Equal(t, 0.0, value(t, s, "strata_copyup_bytes", nil))
	assert.Equal(t, 2.0, value(t, s, "strata_copyup_stale_layers", nil))
	assert.Equal(t, 0.0, value(t, s, "strata_copyup_errors_total", nil), "running out of budget is not an error")
	// c2 was not asked yet, so it goes before c1 now.
	s = scrape(t, reg)
	assert.Equal(t, 5.0, value(t, s, "strata_copyup_bytes", nil))
	assert.Equal(t, 1.0, value(t, s, "strata_copyup_stale_layers", nil))

	f.mu.Lock()
	f.slow["c1"] = false
	f.copyup["c1"] = driver.CopyUpStats{CopiedBytes: 1}
	f.mu.Unlock()
	s = scrape(t, reg)
	assert.Equal(t, 6.0, value(t, s, "strata_copyup_bytes", nil))
	assert.Equal(t, 0.0, value(t, s, "strata_copyup_stale_layers", nil))
}

// A backend error for one layer is counted and the layer keeps its last
// figures.
func TestCopyUpErrors(t *testing.T) {
	f, _, reg := newCopyUpFixture(t, metrics.Options{CopyUpTTL: -1})
	f.setCopyUp("c1", driver.CopyUpStats{CopiedFiles: 3})
	assert.Equal(t, 3.0, value(t, reg, "strata_copyup_files", nil))
	f.mu.Lock()
	f.failAll = driver.ErrNoSpace
	f.mu.Unlock()
	s := scrape(t, reg)
	assert.Equal(t, 3.0, value(t, s, "strata_copyup_files", nil))
	assert.Equal(t, 2.0, value(t, s, "strata_copyup_errors_total", nil), "one per writable layer")
	assert.Equal(t, 2.0, value(t, s, "strata_copyup_stale_layers", nil))
}
