//go:build !linux || !cgo

package btrfs

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stratafs/strata/driver"
)

// Run with CGO_ENABLED=0: the package still builds and says why btrfs is
// unavailable.
func TestWithoutCgo(t *testing.T) {
	err := Probe(context.Background(), "/var/tmp")
	if !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "without cgo") {
		t.Errorf("Probe = %v, want ErrNotSupported saying built without cgo", err)
	}
	if _, err := New(context.Background(), "/var/tmp", Options{}); !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("New = %v, want ErrNotSupported", err)
	}
}
