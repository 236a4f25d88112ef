package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/metrics"
)

func TestLifecycleFake(t *testing.T) { checkLifecycle(t, withCaps(newFake(), true, true, true)) }

func TestErrorKindsFake(t *testing.T) { checkErrorKinds(t, withCaps(newFake(), true, true, true)) }

func TestErrorKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		kind string
	}{
		{driver.ErrLayerNotFound, "not_found"},
		{driver.ErrLayerExists, "exists"},
		{driver.ErrLayerInUse, "in_use"},
		{driver.ErrHasChildren, "has_children"},
		{driver.ErrInvalidID, "invalid_id"},
		{driver.ErrNoSpace, "no_space"},
		{driver.ErrNotSupported, "not_supported"},
		{driver.ErrClosed, "other"},
		{errors.New("disk on fire"), "other"},
	} {
		wrapped := driver.Wrap("apply", "x", fmt.Errorf("deep: %w", c.err))
		assert.Equal(t, c.kind, metrics.ErrorKind(wrapped), "%v", c.err)
	}
}

// Errors no real backend here can be made to return on demand (a full
// disk, an unsupported option) are counted under their kind too.
func TestErrorKindsCounted(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	reg := prometheus.NewPedanticRegistry()
	d, err := metrics.Instrument(f, reg, metrics.Options{})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.Create(ctx, "a", "", nil))
	f.failAll = driver.ErrNoSpace
	_, err = d.ApplyDiff(ctx, "a", readerOf(nil))
	require.ErrorIs(t, err, driver.ErrNoSpace)
	f.failAll = fmt.Errorf("quota: %w", driver.ErrNotSupported)
	require.Error(t, d.Create(ctx, "b", "", &driver.CreateOpts{SizeLimit: 1}))
	f.failAll = driver.ErrClosed
	_, err = d.Get(ctx, "a", nil)
	require.Error(t, err)

	expected := `
# HELP strata_operation_errors_total Driver operations that failed, by operation and error kind (not_found, exists, in_use, has_children, invalid_id, no_space, not_supported, other).
# TYPE strata_operation_errors_total counter
strata_operation_errors_total{driver="fake",kind="no_space",op="apply"} 1
strata_operation_errors_total{driver="fake",kind="not_supported",op="create"} 1
strata_operation_errors_total{driver="fake",kind="other",op="get"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected), "strata_operation_errors_total"))
}

// Every combination of optional capabilities survives the decorator, and
// none appears that the inner driver lacks (moby#33734).
func TestCapabilitiesForwarded(t *testing.T) {
	ctx := context.Background()
	for mask := 0; mask < 8; mask++ {
		l, c, q := mask&1 != 0, mask&2 != 0, mask&4 != 0
		t.Run(fmt.Sprintf("lister=%v,copyup=%v,quota=%v", l, c, q), func(t *testing.T) {
			f := newFake()
			inner := withCaps(f, l, c, q)
			reg := prometheus.NewPedanticRegistry()
			d, err := metrics.Instrument(inner, reg, metrics.Options{})
			require.NoError(t, err)
			defer d.Close()
			require.NoError(t, d.Create(ctx, "a", "", &driver.CreateOpts{Writable: true}))
			f.setCopyUp("a", driver.CopyUpStats{CopiedFiles: 3})

			dl, ok := d.(driver.Lister)
			require.Equal(t, l, ok, "Lister")
			if ok {
				ls, err := dl.Layers(ctx)
				require.NoError(t, err)
				require.Len(t, ls, 1)
				assert.Equal(t, 1.0, value(t, reg, "strata_operation_duration_seconds", map[string]string{"op": metrics.OpLayers}))
			}
			dc, ok := d.(driver.CopyUpReporter)
			require.Equal(t, c, ok, "CopyUpReporter")
			if ok {
				st, err := dc.CopyUp(ctx, "a")
				require.NoError(t, err)
				assert.Equal(t, int64(3), st.CopiedFiles)
				assert.Equal(t, 1.0, value(t, reg, "strata_operation_duration_seconds", map[string]string{"op": metrics.OpCopyUp}))
			}
			dq, ok := d.(driver.Quota)
			require.Equal(t, q, ok, "Quota")
			if ok {
				scope, err := dq.QuotaScope()
				require.NoError(t, err)
				assert.Equal(t, driver.QuotaLayerData, scope)
				_, err = dq.QuotaUsage(ctx, "missing")
				require.ErrorIs(t, err, driver.ErrLayerNotFound)
				assert.Equal(t, 1.0, value(t, reg, "strata_operation_errors_total", map[string]string{"op": metrics.OpQuotaUsed, "kind": "not_found"}))
			}
			// The copy-up collector needs both a list of layers and the
			// figures; with either missing its metrics are absent, not zero.
			_, present := families(t, reg)["strata_copyup_files"]
			assert.Equal(t, l && c, present, "copy-up metrics")

			u, ok := d.(interface{ Unwrap() driver.Driver })
			require.True(t, ok)
			assert.Equal(t, inner, u.Unwrap())
		})
	}
}

func TestTwoDriversOneRegistry(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	a, err := metrics.Instrument(newFake(), reg, metrics.Options{ConstLabels: prometheus.Labels{"root": "/a"}})
	require.NoError(t, err)
	defer a.Close()

	// The same backend again with the same labels collides, and the
	// failed call leaves nothing of itself behind.
	before := testutil.CollectAndCount(reg)
	_, err = metrics.Instrument(newFake(), reg, metrics.Options{ConstLabels: prometheus.Labels{"root": "/a"}})
	require.ErrorContains(t, err, "ConstLabels")
	assert.Equal(t, before, testutil.CollectAndCount(reg))

	b, err := metrics.Instrument(newFake(), reg, metrics.Options{ConstLabels: prometheus.Labels{"root": "/b"}})
	require.NoError(t, err)
	defer b.Close()
	c, err := metrics.Instrument(newFake(), reg, metrics.Options{Namespace: "other"})
	require.NoError(t, err)
	defer c.Close()

	require.NoError(t, a.Create(ctx, "x", "", nil))
	require.NoError(t, b.Create(ctx, "x", "", nil))
	require.NoError(t, b.Create(ctx, "y", "", nil))
	assert.Equal(t, 1.0, value(t, reg, "strata_layers", map[string]string{"root": "/a"}))
	assert.Equal(t, 2.0, value(t, reg, "strata_layers", map[string]string{"root": "/b"}))
	assert.Equal(t, 0.0, value(t, reg, "other_layers", nil))

	_, err = metrics.Instrument(newFake(), reg, metrics.Options{ConstLabels: prometheus.Labels{"driver": "x"}})
	require.Error(t, err, "the driver label is the backend's name")
}

// After Close the metrics are gone from the registry, so a daemon can
// reopen the driver and instrument it again.
func TestCloseUnregisters(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	f := newFake()
	d, err := metrics.Instrument(withCaps(f, true, true, false), reg, metrics.Options{})
	require.NoError(t, err)
	require.Positive(t, testutil.CollectAndCount(reg))
	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "Close twice")
	assert.Equal(t, 0, testutil.CollectAndCount(reg))
	f.closed = false
	d, err = metrics.Instrument(withCaps(f, true, true, false), reg, metrics.Options{})
	require.NoError(t, err)
	require.NoError(t, d.Close())
}

// Layers already on the root when the daemon starts are counted.
func TestLayersCountedAtStart(t *testing.T) {
	ctx := context.Background()
	for _, withLister := range []bool{true, false} {
		f := newFake()
		require.NoError(t, f.Create(ctx, "a", "", nil))
		require.NoError(t, f.Create(ctx, "b", "a", nil))
		reg := prometheus.NewPedanticRegistry()
		d, err := metrics.Instrument(withCaps(f, withLister, false, false), reg, metrics.Options{})
		require.NoError(t, err)
		assert.Equal(t, 2.0, value(t, reg, "strata_layers", nil), "lister=%v", withLister)
		d.Close()
	}
}

// Layer IDs are unbounded, so no series carries one unless asked.
func TestNoIDLabelUnlessPerLayer(t *testing.T) {
	for _, perLayer := range []bool{false, true} {
		t.Run(fmt.Sprintf("PerLayer=%v", perLayer), func(t *testing.T) {
			ctx := context.Background()
			f := newFake()
			reg := prometheus.NewPedanticRegistry()
			d, err := metrics.Instrument(f, reg, metrics.Options{PerLayer: perLayer, CopyUpTTL: -1})
			require.NoError(t, err)
			defer d.Close()
			// Touch every operation, failing ones included, so that every
			// series exists.
			require.NoError(t, d.Create(ctx, "base", "", nil))
			require.NoError(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true}))
			f.setCopyUp("ctr", driver.CopyUpStats{CopiedFiles: 1, CopiedBytes: 2, NewFiles: 3, NewBytes: 4})
			_, _ = d.ApplyDiff(ctx, "base", readerOf([]byte("x")))
			_, _ = d.Get(ctx, "ctr", nil)
			_ = d.Put(ctx, "ctr")
			_ = d.Put(ctx, "ctr")
			_, _ = d.Get(ctx, "missing", nil)

			withID := 0
			for name, mf := range families(t, reg) {
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						if lp.GetName() != "id" {
							continue
						}
						withID++
						assert.True(t, perLayer, "%s has an id label without PerLayer", name)
						assert.True(t, strings.HasPrefix(name, "strata_layer_"), "%s: only per-layer gauges carry an id", name)
						assert.Equal(t, "ctr", lp.GetValue(), name)
					}
				}
			}
			assert.Positive(t, value(t, reg, "strata_operation_errors_total", map[string]string{"op": "get"}))
			assert.Equal(t, 1.0, value(t, reg, "strata_copyup_files", nil))
			if perLayer {
				assert.Equal(t, 4, withID, "four per-layer gauges for the one writable layer")
				assert.Equal(t, 3.0, value(t, reg, "strata_layer_new_files", map[string]string{"id": "ctr"}))
			}
		})
	}
}

// Get and Put are all timed until TimedAfterScrape calls since the last
// scrape, then one call in SampleEvery; every call is counted. With
// SampleEvery 1 every call is timed.
func TestSampling(t *testing.T) {
	ctx := context.Background()
	const k = metrics.TimedAfterScrape
	for _, c := range []struct {
		every       int
		calls       int // before a scrape, then 3 more after it
		timedBefore int
	}{
		{1, 100, 100},
		{4, 40, k + 6},  // 17, 21, ..., 37
		{0, 200, k + 3}, // 65, 129, 193
		{0, 10, 10},     // never busy: all timed
		{0, k + 1, k},   // the 17th is busy and not 1 mod 64
	} {
		f := newFake()
		require.NoError(t, f.Create(ctx, "a", "", nil))
		reg := prometheus.NewPedanticRegistry()
		d, err := metrics.Instrument(f, reg, metrics.Options{SampleEvery: c.every})
		require.NoError(t, err)
		getPut := func(n int) {
			for range n {
				_, err := d.Get(ctx, "a", nil)
				require.NoError(t, err)
				require.NoError(t, d.Put(ctx, "a"))
			}
		}
		getPut(c.calls)
		s := scrape(t, reg)
		for _, op := range []string{metrics.OpGet, metrics.OpPut} {
			assert.Equal(t, float64(c.calls), value(t, s, "strata_operations_total", map[string]string{"op": op}), "%+v", c)
			assert.Equal(t, float64(c.timedBefore), value(t, s, "strata_operation_duration_seconds", map[string]string{"op": op}), "%+v", c)
		}
		getPut(3) // just after a scrape: timed
		s = scrape(t, reg)
		assert.Equal(t, float64(c.timedBefore+3), value(t, s, "strata_operation_duration_seconds", map[string]string{"op": metrics.OpGet}), "%+v", c)
		require.NoError(t, d.Close())
	}
}
