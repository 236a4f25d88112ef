package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers/overlay2"
	"github.com/stratafs/strata/drivers/vfs"
	"github.com/stratafs/strata/metrics"
)

// backend opens a real backend on a fresh root under /var/tmp.
type backend struct {
	name string
	open func(ctx context.Context, root string) (driver.Driver, error)
}

func backends() []backend {
	return []backend{
		{"vfs", func(ctx context.Context, root string) (driver.Driver, error) {
			if err := vfs.Probe(ctx, root); err != nil {
				return nil, err
			}
			return vfs.New(ctx, root, vfs.Options{})
		}},
		{"overlay2", func(ctx context.Context, root string) (driver.Driver, error) {
			if err := overlay2.Probe(ctx, root); err != nil {
				return nil, err
			}
			return overlay2.New(ctx, root, overlay2.Options{})
		}},
	}
}

func testRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "strata-metrics-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "root")
}

// openBackend opens b on a fresh root, closed after the test; a backend
// this host cannot run skips with its probe's reason.
func openBackend(t testing.TB, b backend) driver.Driver {
	t.Helper()
	d, err := b.open(context.Background(), testRoot(t))
	if errors.Is(err, driver.ErrNotSupported) {
		t.Skipf("%s cannot run here: %v", b.name, err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func TestLifecycleBackends(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { checkLifecycle(t, openBackend(t, b)) })
	}
}

func TestErrorKindsBackends(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { checkErrorKinds(t, openBackend(t, b)) })
	}
}

// The copy-up example of the issue on a real kernel overlay: a container
// modifies 7 files of its image and creates 5, and a scrape over HTTP
// shows exactly that.
func TestCopyUpOverlay2(t *testing.T) {
	ctx := context.Background()
	inner := openBackend(t, backends()[1])
	reg := prometheus.NewPedanticRegistry()
	d, err := metrics.Instrument(inner, reg, metrics.Options{CopyUpTTL: -1, PerLayer: true})
	require.NoError(t, err)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	var lower []tarFile
	for i := range 9 { // two stay untouched
		lower = append(lower, tarFile{fmt.Sprintf("etc/f%d", i), make([]byte, 1000*(i+1))})
	}
	require.NoError(t, d.Create(ctx, "img", "", nil))
	_, err = d.ApplyDiff(ctx, "img", readerOf(layerTar(t, []string{"etc"}, lower)))
	require.NoError(t, err)
	require.NoError(t, d.Create(ctx, "ctr", "img", &driver.CreateOpts{Writable: true}))
	require.NoError(t, d.Create(ctx, "idle", "img", &driver.CreateOpts{Writable: true}))

	dir, err := d.Get(ctx, "ctr", nil)
	require.NoError(t, err)
	var copied, created int64
	for _, f := range lower[:7] {
		fh, err := os.OpenFile(filepath.Join(dir, f.name), os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = fh.WriteString("changed")
		require.NoError(t, errors.Join(err, fh.Close()))
		copied += int64(len(f.data) + len("changed"))
	}
	for i := range 5 {
		data := make([]byte, 100*(i+1))
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("etc/new%d", i)), data, 0o644))
		created += int64(len(data))
	}
	require.NoError(t, d.Put(ctx, "ctr"))

	expected := fmt.Sprintf(`
# HELP strata_copyup_bytes Bytes of files copied up from lower layers into writable layers, summed over writable layers.
# TYPE strata_copyup_bytes gauge
strata_copyup_bytes{driver="overlay2"} %d
# HELP strata_copyup_files Files copied up from lower layers into writable layers, summed over writable layers.
# TYPE strata_copyup_files gauge
strata_copyup_files{driver="overlay2"} 7
# HELP strata_new_bytes Bytes of files created in writable layers that exist in no lower layer, summed over writable layers.
# TYPE strata_new_bytes gauge
strata_new_bytes{driver="overlay2"} %d
# HELP strata_new_files Files created in writable layers that exist in no lower layer, summed over writable layers.
# TYPE strata_new_files gauge
strata_new_files{driver="overlay2"} 5
# HELP strata_layer_copyup_files Files copied up from lower layers into this writable layer.
# TYPE strata_layer_copyup_files gauge
strata_layer_copyup_files{driver="overlay2",id="ctr"} 7
strata_layer_copyup_files{driver="overlay2",id="idle"} 0
# HELP strata_writable_layers Writable layers on the driver's root, as last listed.
# TYPE strata_writable_layers gauge
strata_writable_layers{driver="overlay2"} 2
`, copied, created)
	require.NoError(t, testutil.ScrapeAndCompare(srv.URL, strings.NewReader(expected),
		"strata_copyup_bytes", "strata_copyup_files", "strata_new_bytes", "strata_new_files",
		"strata_layer_copyup_files", "strata_writable_layers"))
	require.NoError(t, d.Close())
}

// vfs copies the whole parent when it creates a layer: that copy is what
// its copy-up gauges show, before anything is written.
func TestCopyUpVFS(t *testing.T) {
	ctx := context.Background()
	inner := openBackend(t, backends()[0])
	reg := prometheus.NewPedanticRegistry()
	d, err := metrics.Instrument(inner, reg, metrics.Options{CopyUpTTL: -1})
	require.NoError(t, err)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	files := []tarFile{{"a", make([]byte, 1234)}, {"d/b", make([]byte, 4321)}, {"d/c", []byte("c")}}
	require.NoError(t, d.Create(ctx, "img", "", nil))
	_, err = d.ApplyDiff(ctx, "img", readerOf(layerTar(t, []string{"d"}, files)))
	require.NoError(t, err)
	require.NoError(t, d.Create(ctx, "ctr", "img", &driver.CreateOpts{Writable: true}))

	expected := `
# HELP strata_copyup_bytes Bytes of files copied up from lower layers into writable layers, summed over writable layers.
# TYPE strata_copyup_bytes gauge
strata_copyup_bytes{driver="vfs"} 5556
# HELP strata_copyup_files Files copied up from lower layers into writable layers, summed over writable layers.
# TYPE strata_copyup_files gauge
strata_copyup_files{driver="vfs"} 3
`
	require.NoError(t, testutil.ScrapeAndCompare(srv.URL, strings.NewReader(expected), "strata_copyup_bytes", "strata_copyup_files"))
	require.NoError(t, d.Remove(ctx, "ctr"))
	expected = strings.ReplaceAll(strings.ReplaceAll(expected, "} 5556", "} 0"), "} 3", "} 0")
	require.NoError(t, testutil.ScrapeAndCompare(srv.URL, strings.NewReader(expected), "strata_copyup_bytes", "strata_copyup_files"))
}

// Two backends in one registry need no options: the driver label tells
// them apart. Two roots of the same backend need ConstLabels, with the
// same keys on every driver of the registry (a Prometheus rule: one name,
// one set of label names).
func TestTwoBackendsOneRegistry(t *testing.T) {
	ctx := context.Background()
	vfsB, ovlB := backends()[0], backends()[1]
	reg := prometheus.NewPedanticRegistry()
	for _, b := range []backend{vfsB, ovlB} {
		_, err := metrics.Instrument(openBackend(t, b), reg, metrics.Options{})
		require.NoError(t, err, b.name)
	}
	_, err := metrics.Instrument(openBackend(t, vfsB), reg, metrics.Options{})
	require.ErrorContains(t, err, "ConstLabels")

	reg = prometheus.NewPedanticRegistry()
	var ds []driver.Driver
	for _, c := range []struct {
		b    backend
		root string
	}{{vfsB, "a"}, {ovlB, "a"}, {vfsB, "b"}} {
		d, err := metrics.Instrument(openBackend(t, c.b), reg, metrics.Options{ConstLabels: prometheus.Labels{"root": c.root}})
		require.NoError(t, err)
		ds = append(ds, d)
	}
	_, err = metrics.Instrument(openBackend(t, vfsB), reg, metrics.Options{ConstLabels: prometheus.Labels{"root": "a"}})
	require.ErrorContains(t, err, "ConstLabels")
	_, err = metrics.Instrument(openBackend(t, vfsB), reg, metrics.Options{ConstLabels: prometheus.Labels{"other": "c"}})
	require.ErrorContains(t, err, "same ConstLabels keys")

	for i, d := range ds {
		for j := 0; j <= i; j++ {
			require.NoError(t, d.Create(ctx, fmt.Sprintf("l%d", j), "", nil))
		}
	}
	require.Equal(t, 1.0, value(t, reg, "strata_layers", map[string]string{"driver": "vfs", "root": "a"}))
	require.Equal(t, 2.0, value(t, reg, "strata_layers", map[string]string{"driver": "overlay2", "root": "a"}))
	require.Equal(t, 3.0, value(t, reg, "strata_layers", map[string]string{"driver": "vfs", "root": "b"}))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
	for _, d := range ds {
		require.NoError(t, d.Close())
	}
}
