package conformance

import (
	"os"
	"testing"
)

// childEnv names the environment variable that turns a re-executed test
// binary into a crash-test child (see Main).
const childEnv = "STRATA_CONFORMANCE_CHILD"

// Main is what a backend's test package calls from TestMain:
//
//	func TestMain(m *testing.M) { conformance.Main(m, backends) }
//
// In the normal run it just runs the tests. The crash cases re-execute the
// test binary with a job in the environment; Main then opens the named
// backend on the given root, runs the job until the parent kills it, and
// never returns. Without Main the crash cases skip.
func Main(m *testing.M, backends func() []Backend) {
	if job := os.Getenv(childEnv); job != "" {
		os.Exit(runChild(job, backends()))
	}
	os.Exit(m.Run())
}

func runChild(job string, backends []Backend) int {
	return 3
}
