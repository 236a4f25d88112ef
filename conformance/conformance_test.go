package conformance_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/stratafs/strata/conformance"
)

var driverFlag = flag.String("driver", "", "comma-separated backends to test (default: every backend usable here)")

// backends lists every backend the suite knows; each is defined in its own
// backend_<name>_test.go.
func backends() []conformance.Backend {
	return []conformance.Backend{vfsBackend(), overlay2Backend(), btrfsBackend(), metricsBackend()}
}

// selected returns the backends chosen with -driver, failing on an unknown
// name so that a typo does not pass as "nothing to test".
func selected(tb testing.TB) []conformance.Backend {
	all := backends()
	if *driverFlag == "" {
		return all
	}
	var out []conformance.Backend
	for _, name := range strings.Split(*driverFlag, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, b := range all {
			if b.Name == name {
				out = append(out, b)
				found = true
			}
		}
		if !found {
			var names []string
			for _, b := range all {
				names = append(names, b.Name)
			}
			tb.Fatalf("-driver=%s: unknown backend %q (known: %s)", *driverFlag, name, strings.Join(names, ", "))
		}
	}
	return out
}

func TestMain(m *testing.M) { conformance.Main(m, backends) }

func TestConformance(t *testing.T) {
	for _, b := range selected(t) {
		t.Run(b.Name, func(t *testing.T) { conformance.Run(t, b) })
	}
}

func BenchmarkConformance(b *testing.B) {
	for _, be := range selected(b) {
		b.Run(be.Name, func(b *testing.B) { conformance.Bench(b, be) })
	}
}
