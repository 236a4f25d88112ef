package overlay2

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/driver"
)

// chain makes n layers: the bottom one holds bottom.txt, every tenth one
// a file of its own, the rest are empty.
func chain(t *testing.T, d *Driver, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%03d", i)
		parent := ""
		if i > 0 {
			parent = ids[i-1]
		}
		switch {
		case i == 0:
			mustLayer(t, d, ids[i], parent, mkTar(t, file("bottom.txt", "from the bottom layer\n")))
		case i%10 == 0:
			mustLayer(t, d, ids[i], parent, mkTar(t, file(fmt.Sprintf("f%03d", i), "x")))
		default:
			mustCreate(t, d, ids[i], parent, false)
		}
	}
	return ids
}

func (d *Driver) mountedHow(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mounts[id].how
}

// TestChain500 mounts the deepest chain the kernel stacks (500 lower
// layers) through fsconfig "lowerdir+" and reads the bottom layer's file.
func TestChain500(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 500 layers")
	}
	d := open(t, testRoot(t), Options{})
	if !d.host.fsconfig {
		t.Skipf("kernel has no fsconfig lowerdir+ (%s): chains stop at one page of mount options, see TestLegacyLimit", d.host.fsconfigReason)
	}
	ids := chain(t, d, maxLowers)
	top := ids[len(ids)-1]
	// Read-only: all 500 layers are lower layers.
	m := mustGet(t, d, top, &driver.MountOpts{ReadOnly: true})
	if how := d.mountedHow(top); how != "fsconfig" {
		t.Errorf("500-layer chain mounted with %q, want fsconfig", how)
	}
	b, err := os.ReadFile(filepath.Join(m, "bottom.txt"))
	if err != nil || string(b) != "from the bottom layer\n" {
		t.Fatalf("bottom.txt through a 500-layer mount = %q, %v", b, err)
	}
	for i := 10; i < maxLowers; i += 10 {
		if _, err := os.Stat(filepath.Join(m, fmt.Sprintf("f%03d", i))); err != nil {
			t.Errorf("layer %d's file: %v", i, err)
		}
	}
	mustPut(t, d, top)
	if got := d.Status(context.Background()).Get("Max Chain Depth"); got != "500" {
		t.Errorf("Status Max Chain Depth = %s, want 500", got)
	}
	// A 501st layer would need 501 lower layers for its read-only view.
	err = d.Create(context.Background(), "c500", top, nil)
	if !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "500") {
		t.Errorf("Create of layer 501 = %v, want ErrNotSupported naming the limit", err)
	}
	// A writable layer on 499: 499 lowers plus its own upper dir.
	mustCreate(t, d, "w", ids[maxLowers-2], true)
	m = mustGet(t, d, "w", nil)
	if b, err := os.ReadFile(filepath.Join(m, "bottom.txt")); err != nil || len(b) == 0 {
		t.Errorf("bottom.txt through a writable 500-deep mount: %v", err)
	}
	writeFile(t, filepath.Join(m, "bottom.txt"), "changed")
	mustPut(t, d, "w")
}

// TestMountWays: a chain whose options fit in a page uses mount(2); one
// past a page with absolute paths uses fsconfig, or, with
// mountapi=legacy, relative paths from the root; past what relative paths
// fit, legacy mode refuses with the documented limit.
func TestMountWays(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	ids := chain(t, d, 160)
	// Absolute: len(root)+30 bytes per layer.
	perLayer := len(d.root) + 1 + len("l/") + 26 + 1
	fits := (pageLimit() - 200) / perLayer
	get := func(d *Driver, id string) string {
		t.Helper()
		mustGet(t, d, id, &driver.MountOpts{ReadOnly: true})
		how := d.mountedHow(id)
		mustPut(t, d, id)
		return how
	}
	if how := get(d, ids[fits/2]); how != "mount" {
		t.Errorf("%d layers: mounted with %q, want mount", fits/2+1, how)
	}
	if d.host.fsconfig {
		if how := get(d, ids[fits+20]); how != "fsconfig" {
			t.Errorf("%d layers: mounted with %q, want fsconfig", fits+21, how)
		}
	}
	d.Close()
	legacy := open(t, root, Options{MountAPI: MountAPILegacy})
	if how := get(legacy, ids[fits+20]); how != "mount-relative" {
		t.Errorf("legacy, %d layers: mounted with %q, want mount-relative", fits+21, how)
	}
	m := mustGet(t, legacy, ids[fits+20], &driver.MountOpts{ReadOnly: true})
	if _, err := os.Stat(filepath.Join(m, "bottom.txt")); err != nil {
		t.Errorf("relative mount does not show the bottom layer: %v", err)
	}
	mustPut(t, legacy, ids[fits+20])
	// 160 layers at 29 bytes each are more than a page.
	_, err := legacy.Get(context.Background(), ids[159], &driver.MountOpts{ReadOnly: true})
	if !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "mount(2) takes") {
		t.Errorf("legacy, 160 layers: Get = %v, want ErrNotSupported with the page limit", err)
	}
	legacy.Close()
	// A kernel without "lowerdir+" (before 6.8): auto mode falls back to
	// relative paths, and past a page says why.
	old := open(t, root, Options{})
	old.host.fsconfig, old.host.fsconfigReason = false, "simulated pre-6.8 kernel"
	if how := get(old, ids[fits+20]); how != "mount-relative" {
		t.Errorf("no fsconfig, %d layers: mounted with %q, want mount-relative", fits+21, how)
	}
	_, err = old.Get(context.Background(), ids[159], &driver.MountOpts{ReadOnly: true})
	if !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "simulated pre-6.8 kernel") {
		t.Errorf("no fsconfig, 160 layers: Get = %v, want ErrNotSupported with the reason", err)
	}
	// The working directory of the process is untouched by the chdir
	// fallback.
	if wd, _ := os.Getwd(); strings.HasPrefix(wd, root) {
		t.Errorf("process cwd moved to %s", wd)
	}
}
