package drivers_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/conformance/fixtures"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers"
)

// These tests use the real backends on a root under /var/tmp.

func tempRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "strata-drivers-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func open(t *testing.T, root string, opts drivers.Options) driver.Driver {
	t.Helper()
	d, err := drivers.Open(context.Background(), root, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func verdict(t *testing.T, vs []drivers.Verdict, name string) drivers.Verdict {
	t.Helper()
	for _, v := range vs {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no verdict for %s in %+v", name, vs)
	return drivers.Verdict{}
}

// requireUsable skips unless backend name works on root, printing why.
func requireUsable(t *testing.T, root, name string) {
	t.Helper()
	if v := verdict(t, drivers.Probe(context.Background(), root), name); !v.Usable {
		t.Skipf("%s is not usable on this host: %s", name, v.Reason)
	}
}

func TestNamesInPriorityOrder(t *testing.T) {
	want := []string{"overlay2", "btrfs", "vfs"}
	if got := drivers.Names(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
}

func TestProbeEveryVerdictHasAReason(t *testing.T) {
	root := tempRoot(t)
	vs := drivers.Probe(context.Background(), root)
	if len(vs) != len(drivers.Names()) {
		t.Fatalf("%d verdicts for %d backends", len(vs), len(drivers.Names()))
	}
	chosen := 0
	for i, v := range vs {
		t.Logf("%-8s usable=%-5v chosen=%-5v %s", v.Name, v.Usable, v.Chosen, v.Reason)
		if v.Name != drivers.Names()[i] {
			t.Errorf("verdict %d is %s, want priority order %v", i, v.Name, drivers.Names())
		}
		if strings.TrimSpace(v.Reason) == "" {
			t.Errorf("%s: empty reason", v.Name)
		}
		if v.Chosen {
			chosen++
		}
	}
	if chosen != 1 {
		t.Errorf("%d backends chosen on a fresh root, want 1 (vfs works everywhere)", chosen)
	}
	// Deterministic: the same host and disk give the same verdicts.
	if again := drivers.Probe(context.Background(), root); !reflect.DeepEqual(vs, again) {
		t.Errorf("second probe differs:\n%+v\n%+v", vs, again)
	}
}

func TestOpenPicksFirstUsableInPriorityOrder(t *testing.T) {
	root := tempRoot(t)
	vs := drivers.Probe(context.Background(), root)
	want := ""
	for _, v := range vs {
		if v.Usable {
			want = v.Name
			break
		}
	}
	d := open(t, root, drivers.Options{})
	if d.Name() != want {
		t.Fatalf("Open chose %s, want %s (verdicts %+v)", d.Name(), want, vs)
	}
	if v := verdict(t, vs, "overlay2"); v.Usable && d.Name() != "overlay2" {
		t.Errorf("overlay2 usable but %s chosen", d.Name())
	}
}

func TestOpenUnsupportedNameFailsWithReason(t *testing.T) {
	root := tempRoot(t)
	var name string
	var reason string
	for _, v := range drivers.Probe(context.Background(), root) {
		if !v.Usable {
			name, reason = v.Name, v.Reason
			break
		}
	}
	if name == "" {
		t.Skip("every backend is usable on this host's /var/tmp: no unsupported one to ask for")
	}
	// Start from an empty root again: probing let backends make their dirs.
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(root, e.Name()))
	}
	d, err := drivers.Open(context.Background(), root, drivers.Options{Driver: name})
	if err == nil {
		d.Close()
		t.Fatalf("Open(%s) succeeded on a root where it is unusable", name)
	}
	if !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("error does not wrap ErrNotSupported: %v", err)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Errorf("error %q does not give the probe's reason %q", err, reason)
	}
	// No fallback: no other backend made anything on the root.
	for _, other := range drivers.Names() {
		if other == name {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, other)); err == nil {
			t.Errorf("Open(%s) touched %s's directory: a fallback?", name, other)
		}
	}
}

func TestOpenUnknownName(t *testing.T) {
	root := filepath.Join(tempRoot(t), "r")
	_, err := drivers.Open(context.Background(), root, drivers.Options{Driver: "zzz"})
	if err == nil || !strings.Contains(err.Error(), `unknown driver "zzz"`) || !strings.Contains(err.Error(), "overlay2, btrfs, vfs") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a bad name created the root")
	}
}

func TestOptionsRejectUnknownKeys(t *testing.T) {
	for _, name := range drivers.Names() {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(tempRoot(t), "r")
			for _, kv := range [][]string{{"nosuchkey=1"}, {"novalue"}} {
				opts := drivers.Options{Driver: name, BackendOptions: kv}
				err := drivers.ValidateOptions(opts)
				if err == nil {
					t.Fatalf("%v accepted", kv)
				}
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error does not name the backend: %v", err)
				}
				if _, err := drivers.Open(context.Background(), root, opts); err == nil {
					t.Fatalf("Open with %v succeeded", kv)
				}
			}
			if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("bad options created the root")
			}
			if err := drivers.ValidateOptions(drivers.Options{Driver: name}); err != nil {
				t.Errorf("no options rejected: %v", err)
			}
		})
	}
}

func TestStateOnDiskWins(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	requireUsable(t, root, "vfs")
	d, err := drivers.Open(ctx, root, drivers.Options{Driver: "vfs"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, "l1", "", nil); err != nil {
		t.Fatal(err)
	}
	d.Close()

	vs := drivers.Probe(ctx, root)
	v := verdict(t, vs, "vfs")
	if !v.Chosen || !v.State || !strings.Contains(v.Reason, "already holds") {
		t.Errorf("vfs verdict %+v: its layers are on disk, it must be chosen", v)
	}
	d = open(t, root, drivers.Options{})
	if d.Name() != "vfs" {
		t.Fatalf("reopened with %s, want vfs: the root holds vfs layers", d.Name())
	}
	if !d.Exists("l1") {
		t.Error("layer l1 not seen after reopening")
	}
}

func TestOpeningOnceDoesNotPinTheRoot(t *testing.T) {
	// New makes empty layout directories; without layers they are no state.
	ctx := context.Background()
	root := tempRoot(t)
	requireUsable(t, root, "vfs")
	d, err := drivers.Open(ctx, root, drivers.Options{Driver: "vfs"})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, v := range drivers.Probe(ctx, root) {
		if v.State {
			t.Errorf("%s has state after an open without layers", v.Name)
		}
	}
}

func TestTwoBackendsWithStateFail(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	requireUsable(t, root, "overlay2")
	requireUsable(t, root, "vfs")
	for _, name := range []string{"overlay2", "vfs"} {
		d, err := drivers.Open(ctx, root, drivers.Options{Driver: name})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Create(ctx, "l-"+name, "", nil); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	d, err := drivers.Open(ctx, root, drivers.Options{})
	if err == nil {
		d.Close()
		t.Fatalf("Open chose %s with two backends' layers on disk", d.Name())
	}
	if !strings.Contains(err.Error(), "overlay2, vfs") {
		t.Errorf("error does not list both backends: %v", err)
	}
	for _, v := range drivers.Probe(ctx, root) {
		if v.Chosen {
			t.Errorf("%s chosen", v.Name)
		}
	}
	// Naming one still works.
	d = open(t, root, drivers.Options{Driver: "vfs"})
	if !d.Exists("l-vfs") {
		t.Error("vfs layer missing")
	}
}

func TestBtrfsRoot(t *testing.T) {
	// On a btrfs root both overlay2 and btrfs can work; overlay2 comes
	// first, btrfs opens when asked for, and its layers then pin the root.
	ctx := context.Background()
	mnt := fixtures.Btrfs(t, fixtures.MinBtrfsSize)
	root := filepath.Join(mnt, "strata")
	vs := drivers.Probe(ctx, root)
	for _, v := range vs {
		t.Logf("%-8s usable=%-5v chosen=%-5v %s", v.Name, v.Usable, v.Chosen, v.Reason)
	}
	b := verdict(t, vs, "btrfs")
	if !b.Usable {
		t.Skipf("btrfs unusable on a btrfs root here: %s", b.Reason)
	}
	if o := verdict(t, vs, "overlay2"); o.Usable && !o.Chosen {
		t.Errorf("overlay2 usable but not chosen on a fresh btrfs root")
	}
	d, err := drivers.Open(ctx, root, drivers.Options{Driver: "btrfs"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, "l1", "", nil); err != nil {
		d.Close()
		t.Fatal(err)
	}
	d.Close()
	d = open(t, root, drivers.Options{})
	if d.Name() != "btrfs" {
		t.Errorf("reopened with %s, want btrfs (its layers are on disk)", d.Name())
	}
}

func TestBtrfsUnusableOffBtrfs(t *testing.T) {
	root := tempRoot(t)
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.BTRFS_SUPER_MAGIC {
		t.Skip("/var/tmp is on btrfs here")
	}
	v := verdict(t, drivers.Probe(context.Background(), root), "btrfs")
	if v.Usable || v.Chosen || v.Reason == "" {
		t.Errorf("btrfs on a non-btrfs root: %+v", v)
	}
}
