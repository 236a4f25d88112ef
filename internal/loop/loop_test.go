package loop

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func attachTemp(t *testing.T, opts Options) (*Device, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("loop devices need root (euid %d)", os.Geteuid())
	}
	// Under /var/tmp: disk-backed, unlike /tmp.
	dir, err := os.MkdirTemp("/var/tmp", "strata-loop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := Attach(context.Background(), img, opts)
	if errors.Is(err, ErrNoFreeDevice) {
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dev, img
}

func TestAttachDetach(t *testing.T) {
	dev, img := attachTemp(t, Options{})
	defer dev.Detach()
	got, err := BackedBy(img)
	if err != nil || len(got) != 1 || got[0] != dev.Path {
		t.Fatalf("BackedBy = %v, %v; want [%s]", got, err, dev.Path)
	}
	if err := dev.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if got, _ := BackedBy(img); len(got) != 0 {
		t.Errorf("still attached after Detach: %v", got)
	}
}

func TestAutoclearOnClose(t *testing.T) {
	dev, img := attachTemp(t, Options{Autoclear: true, ReadOnly: true})
	f, err := os.OpenFile(dev.Path, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Write(make([]byte, 512))
		f.Close()
	}
	if err == nil {
		t.Error("wrote to a read-only loop device")
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	// The kernel detaches an autoclear device at its last close.
	if got, _ := BackedBy(img); len(got) != 0 {
		t.Errorf("autoclear device still attached after the last close: %v", got)
	}
}
