package metrics_test

import (
	"archive/tar"
	"bytes"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// value returns the value of the one series of family name whose labels
// include want: a counter's or gauge's value, a histogram's sample count.
// A series that is absent reads as 0 (a counter vector shows a label
// combination only once it moved).
func value(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var found []*dto.Metric
		for _, m := range mf.GetMetric() {
			if hasLabels(m, want) {
				found = append(found, m)
			}
		}
		require.LessOrEqual(t, len(found), 1, "%s%v matches %d series", name, want, len(found))
		if len(found) == 0 {
			return 0
		}
		m := found[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
		t.Fatalf("%s: unexpected metric type", name)
	}
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// families returns the names of the gathered metric families.
func families(t testing.TB, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// tarFile is one regular file of a test layer.
type tarFile struct {
	name string
	data []byte
}

// layerTar builds an uncompressed OCI layer tar of regular files (and the
// directories they need, which must be listed first by the caller).
func layerTar(t testing.TB, dirs []string, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirs {
		require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}))
	}
	for _, f := range files {
		require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data))}))
		_, err := tw.Write(f.data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func readerOf(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// scrape gathers g once, so that several values can be read from one
// scrape (each Gather of a copy-up collector is a scrape that may ask the
// backend).
func scrape(t testing.TB, g prometheus.Gatherer) prometheus.Gatherer {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return mfs, nil })
}
