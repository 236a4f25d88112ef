package conformance

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stratafs/strata/driver"
)

// Backend is what the suite needs to know about one backend.
type Backend struct {
	Name string
	// Root makes a fresh, empty root directory for one case on the
	// filesystem the backend needs (nil: a temporary directory under
	// /var/tmp). It skips the test with the reason when it cannot, and
	// registers its own cleanup with t.Cleanup.
	Root func(t testing.TB) string
	// New opens the backend on root. The suite calls it again on the same
	// root to test reopening and crash recovery, also from a child process
	// (see Main).
	New func(ctx context.Context, root string) (driver.Driver, error)
	// Caps says what the backend cannot do or does differently.
	Caps Caps
}

// Caps is capability data. The zero value claims everything: exact
// timestamps, device nodes, no depth limit.
type Caps struct {
	// MtimePrecision is the granularity of stored modification times
	// (0: nanoseconds). Trees are compared with mtimes truncated to it.
	MtimePrecision time.Duration
	// NativeDiff marks a backend whose Diff/Changes read only the layer's
	// own changes; the suite then checks them against the naive diff
	// (moby#38111).
	NativeDiff bool
	// MaxChainDepth is the deepest parent chain the backend supports
	// (0: no limit the suite needs to respect).
	MaxChainDepth int
	// NoDevices: the backend cannot store char/block device nodes (for
	// example when it runs without CAP_MKNOD); cases skip device entries.
	NoDevices bool
	// IgnoreXattrs lists xattr name prefixes the backend itself puts on
	// files of a view (they are left out of tree comparisons).
	IgnoreXattrs []string
}

// Run runs every case against b. Each case is its own parallel subtest
// with a fresh root.
//
// Before the cases, Run opens the backend once on a fresh root: when Root
// skips or New fails with driver.ErrNotSupported, the whole backend skips
// with that reason; any other failure there fails the run.
func Run(t *testing.T, b Backend) {
	if !usable(t, b) {
		return
	}
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, newEnv(t, b))
		})
	}
}

func usable(t testing.TB, b Backend) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		// Layers carry other users' files, device nodes and (for most
		// backends) mounts: without root the cases would test the host.
		t.Skipf("the conformance suite needs root (file owners, device nodes, mounts); running as uid %d", os.Geteuid())
		return false
	}
	root := makeRoot(t, b)
	d, err := b.New(context.Background(), root)
	if errors.Is(err, driver.ErrNotSupported) {
		t.Skipf("%s is not usable here: %v", b.Name, err)
		return false
	}
	if err != nil {
		t.Fatalf("New(%s): %v", root, err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return true
}

// testCase is one named case of the suite.
type testCase struct {
	name string
	fn   func(t *testing.T, e *env)
}

// cases lists the suite in order: lifecycle first, then content, then the
// hostile and crash cases, then named regressions.
func cases() []testCase {
	var all []testCase
	all = append(all, lifecycleCases()...)
	all = append(all, diffCases()...)
	all = append(all, faultCases()...)
	all = append(all, crashCases()...)
	all = append(all, regressionCases()...)
	return all
}

// env is one case's world: a backend, a fresh root and an open driver.
type env struct {
	t    testing.TB
	b    Backend
	root string
	ctx  context.Context
	d    driver.Driver
}

func newEnv(t testing.TB, b Backend) *env {
	t.Helper()
	root := makeRoot(t, b)
	e := &env{t: t, b: b, root: root, ctx: context.Background()}
	e.d = e.open()
	t.Cleanup(func() {
		if e.d != nil {
			if err := e.d.Close(); err != nil {
				t.Errorf("Close at cleanup: %v", err)
			}
		}
	})
	return e
}

func makeRoot(t testing.TB, b Backend) string {
	t.Helper()
	if b.Root != nil {
		return b.Root(t)
	}
	return TempRoot(t)
}

// TempRoot makes an empty directory under /var/tmp (disk-backed, unlike
// /tmp on many hosts) that is removed when the test ends.
func TempRoot(t testing.TB) string {
	t.Helper()
	base := "/var/tmp"
	if _, err := os.Stat(base); err != nil {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "strata-conformance-")
	if err != nil {
		t.Fatalf("temp root: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing temp root: %v", err)
		}
	})
	return dir
}

// open opens a driver on the env's root, failing the test if it cannot.
func (e *env) open() driver.Driver {
	e.t.Helper()
	d, err := e.b.New(e.ctx, e.root)
	if err != nil {
		e.t.Fatalf("New(%s): %v", e.root, err)
	}
	return d
}

// reopen closes the env's driver and opens a new one on the same root.
func (e *env) reopen() {
	e.t.Helper()
	if err := e.d.Close(); err != nil {
		e.t.Fatalf("Close before reopen: %v", err)
	}
	e.d = nil
	e.d = e.open()
}
