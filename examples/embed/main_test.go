package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The example runs as documented and its scrape shows the work it did.
func TestExampleOnce(t *testing.T) {
	base, err := os.MkdirTemp("/var/tmp", "strata-embed-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	root := filepath.Join(base, "root")

	for round := 1; round <= 2; round++ { // the second round reuses the layers on disk
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), []string{"--root", root, "--driver", "vfs", "--once"}, &out))
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(&out)
		require.NoError(t, err)
		get := func(name string) float64 {
			mf, ok := mfs[name]
			require.True(t, ok, "%s missing", name)
			m := mf.GetMetric()[0]
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			assert.Equal(t, "vfs", labels["driver"], name)
			assert.Equal(t, "root", labels["root"], name)
			if m.Gauge != nil {
				return m.Gauge.GetValue()
			}
			return m.Counter.GetValue()
		}
		assert.Equal(t, 2.0, get("strata_layers"), "round %d", round)
		assert.Equal(t, 1.0, get("strata_writable_layers"), "round %d", round)
		assert.Equal(t, 0.0, get("strata_active_mounts"), "round %d", round)
		assert.Positive(t, get("strata_diffed_bytes_total"), "round %d", round)
		// vfs copies the image's one file into the container at Create.
		assert.Equal(t, 1.0, get("strata_copyup_files"), "round %d", round)
		assert.Equal(t, float64(len("welcome\n")), get("strata_copyup_bytes"), "round %d", round)
		if round == 1 {
			assert.Equal(t, float64(len("welcome\n")), get("strata_applied_bytes_total"))
		} else {
			_, applied := mfs["strata_applied_bytes_total"]
			assert.True(t, applied)
			assert.Equal(t, 0.0, get("strata_applied_bytes_total"), "nothing applied on the second round")
		}
	}
}
