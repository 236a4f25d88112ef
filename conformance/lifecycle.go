package conformance

import (
	"errors"
	"testing"

	"github.com/stratafs/strata/driver"
)

func lifecycleCases() []testCase {
	return []testCase{
		{"CreateRemoveExists", testCreateRemoveExists},
	}
}

func testCreateRemoveExists(t *testing.T, e *env) {
	d := e.d
	if d.Exists("base") {
		t.Fatalf("Exists(base) before Create")
	}
	if err := d.Create(e.ctx, "base", "", nil); err != nil {
		t.Fatalf("Create(base): %v", err)
	}
	if !d.Exists("base") {
		t.Errorf("Exists(base) = false after Create")
	}
	if err := d.Remove(e.ctx, "base"); err != nil {
		t.Fatalf("Remove(base): %v", err)
	}
	if d.Exists("base") {
		t.Errorf("Exists(base) = true after Remove")
	}
	if err := d.Remove(e.ctx, "base"); !errors.Is(err, driver.ErrLayerNotFound) {
		t.Errorf("second Remove(base) = %v, want ErrLayerNotFound", err)
	}
}
