package metrics_test

import (
	"context"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/metrics"
)

// checkLifecycle drives inner through a container's life behind the
// decorator and checks that each metric moves by exactly what each call
// did. inner must be empty.
func checkLifecycle(t *testing.T, inner driver.Driver) {
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	d, err := metrics.Instrument(inner, reg, metrics.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	name := inner.Name()
	_, l1 := inner.(driver.Lister)
	_, l2 := d.(driver.Lister)
	_, c1 := inner.(driver.CopyUpReporter)
	_, c2 := d.(driver.CopyUpReporter)
	_, q1 := inner.(driver.Quota)
	_, q2 := d.(driver.Quota)
	assert.Equal(t, [3]bool{l1, c1, q1}, [3]bool{l2, c2, q2}, "capabilities kept")
	// op is how often op was called; timed how often it was timed.
	op := func(op string) float64 {
		return value(t, reg, "strata_operations_total", map[string]string{"driver": name, "op": op})
	}
	timed := func(op string) float64 {
		return value(t, reg, "strata_operation_duration_seconds", map[string]string{"driver": name, "op": op})
	}
	gauge := func(metric string) float64 {
		return value(t, reg, metric, map[string]string{"driver": name})
	}

	assert.Equal(t, 0.0, gauge("strata_layers"))
	require.NoError(t, d.Create(ctx, "base", "", nil))
	assert.Equal(t, 1.0, op(metrics.OpCreate))
	assert.Equal(t, 1.0, gauge("strata_layers"))

	tarball := layerTar(t, []string{"etc", "usr"}, []tarFile{
		{"etc/hostname", []byte("strata\n")},
		{"usr/blob", make([]byte, 100000)},
		{"etc/motd", []byte("hello from a layer\n")},
	})
	n, err := d.ApplyDiff(ctx, "base", readerOf(tarball))
	require.NoError(t, err)
	require.Positive(t, n)
	assert.Equal(t, 1.0, op(metrics.OpApply))
	assert.Equal(t, float64(n), gauge("strata_applied_bytes_total"), "bytes applied = ApplyDiff's count")

	require.NoError(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true}))
	assert.Equal(t, 2.0, gauge("strata_layers"))

	_, err = d.Get(ctx, "ctr", nil)
	require.NoError(t, err)
	assert.Equal(t, 1.0, gauge("strata_active_mounts"))
	_, err = d.Get(ctx, "ctr", nil)
	require.NoError(t, err)
	assert.Equal(t, 2.0, gauge("strata_active_mounts"))
	require.NoError(t, d.Put(ctx, "ctr"))
	assert.Equal(t, 1.0, gauge("strata_active_mounts"))
	require.NoError(t, d.Put(ctx, "ctr"))
	assert.Equal(t, 0.0, gauge("strata_active_mounts"))
	assert.Equal(t, 2.0, op(metrics.OpGet))
	assert.Equal(t, 2.0, op(metrics.OpPut))
	assert.Equal(t, 2.0, timed(metrics.OpGet), "Gets are all timed until they get busy")
	assert.Equal(t, 2.0, timed(metrics.OpPut))

	rc, err := d.Diff(ctx, "base")
	require.NoError(t, err)
	half := make([]byte, 512)
	_, err = io.ReadFull(rc, half)
	require.NoError(t, err)
	assert.Equal(t, 512.0, gauge("strata_diffed_bytes_total"), "counted as read")
	assert.Equal(t, 1.0, op(metrics.OpDiff))
	assert.Equal(t, 0.0, timed(metrics.OpDiff), "a diff is timed until its stream closes")
	rest, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, float64(512+len(rest)), gauge("strata_diffed_bytes_total"))
	assert.Equal(t, 1.0, timed(metrics.OpDiff))
	require.NoError(t, rc.Close(), "second Close")
	assert.Equal(t, 1.0, timed(metrics.OpDiff), "a second Close is not a second diff")

	_, err = d.Changes(ctx, "ctr")
	require.NoError(t, err)
	assert.Equal(t, 1.0, op(metrics.OpChanges))
	_, err = d.DiffSize(ctx, "base")
	require.NoError(t, err)
	assert.Equal(t, 1.0, op(metrics.OpDiffSize))

	require.NoError(t, d.Remove(ctx, "ctr"))
	assert.Equal(t, 1.0, gauge("strata_layers"))
	require.NoError(t, d.Remove(ctx, "base"))
	assert.Equal(t, 0.0, gauge("strata_layers"))
	assert.Equal(t, 2.0, op(metrics.OpRemove))
	for _, o := range []string{metrics.OpCreate, metrics.OpApply, metrics.OpChanges, metrics.OpDiffSize, metrics.OpRemove} {
		assert.Equal(t, op(o), timed(o), "%s is timed on every call", o)
	}

	assert.Equal(t, 0, testutil.CollectAndCount(reg, "strata_operation_errors_total"), "no errors happened")
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
}

// checkErrorKinds provokes each error a backend can be made to return
// through its API and checks it is counted once, under its op and kind.
func checkErrorKinds(t *testing.T, inner driver.Driver) {
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	d, err := metrics.Instrument(inner, reg, metrics.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	errs := func(op, kind string) float64 {
		return value(t, reg, "strata_operation_errors_total", map[string]string{"driver": inner.Name(), "op": op, "kind": kind})
	}

	_, err = d.Get(ctx, "missing", nil)
	require.ErrorIs(t, err, driver.ErrLayerNotFound)
	assert.Equal(t, 1.0, errs(metrics.OpGet, "not_found"))

	require.NoError(t, d.Create(ctx, "base", "", nil))
	require.ErrorIs(t, d.Create(ctx, "base", "", nil), driver.ErrLayerExists)
	assert.Equal(t, 1.0, errs(metrics.OpCreate, "exists"))

	require.ErrorIs(t, d.Create(ctx, "no/slash", "", nil), driver.ErrInvalidID)
	assert.Equal(t, 1.0, errs(metrics.OpCreate, "invalid_id"))

	require.NoError(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true}))
	require.ErrorIs(t, d.Remove(ctx, "base"), driver.ErrHasChildren)
	assert.Equal(t, 1.0, errs(metrics.OpRemove, "has_children"))

	_, err = d.Get(ctx, "ctr", nil)
	require.NoError(t, err)
	require.ErrorIs(t, d.Remove(ctx, "ctr"), driver.ErrLayerInUse)
	assert.Equal(t, 1.0, errs(metrics.OpRemove, "in_use"))
	require.NoError(t, d.Put(ctx, "ctr"))

	require.Error(t, d.Put(ctx, "ctr"), "Put without Get")
	assert.Equal(t, 1.0, errs(metrics.OpPut, "other"))

	_, err = d.Diff(ctx, "missing")
	require.ErrorIs(t, err, driver.ErrLayerNotFound)
	assert.Equal(t, 1.0, errs(metrics.OpDiff, "not_found"))

	_, err = d.ApplyDiff(ctx, "missing", readerOf(nil))
	require.ErrorIs(t, err, driver.ErrLayerNotFound)
	assert.Equal(t, 1.0, errs(metrics.OpApply, "not_found"))
	assert.Equal(t, 0.0, value(t, reg, "strata_applied_bytes_total", nil), "a failed ApplyDiff adds no bytes")

	// Failed calls are timed as well as counted.
	assert.Equal(t, 4.0, value(t, reg, "strata_operations_total", map[string]string{"op": metrics.OpCreate}), "two failed creates and two that worked")
	assert.Equal(t, 4.0, value(t, reg, "strata_operation_duration_seconds", map[string]string{"op": metrics.OpCreate}))
	assert.Equal(t, 8, testutil.CollectAndCount(reg, "strata_operation_errors_total"), "one series per provoked error")

	require.NoError(t, d.Remove(ctx, "ctr"))
	require.NoError(t, d.Remove(ctx, "base"))
	assert.Equal(t, 0.0, value(t, reg, "strata_layers", nil), "failed creates and removes leave the gauge alone")
}
