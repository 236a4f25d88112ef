package conformance

import "testing"

// Bench runs the suite's benchmarks against be, one sub-benchmark each.
func Bench(b *testing.B, be Backend) {
	b.Skip("conformance benchmarks: not written yet")
}
