package overlay2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/mount"
)

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions([]string{"mountapi=legacy", "overlay2.naivediff=true", "mountopt=xino=off", "skip_mount_check=1"})
	if err != nil {
		t.Fatal(err)
	}
	if o.MountAPI != MountAPILegacy || !o.ForceNaiveDiff || !o.SkipMountCheck || len(o.MountOpts) != 1 || o.MountOpts[0] != "xino=off" {
		t.Errorf("parsed %+v", o)
	}
	for _, bad := range []string{"nokey", "size=10G", "mountapi=fast", "naivediff=maybe", "mountopt=upperdir=/x", "mountopt=volatile"} {
		if _, err := ParseOptions([]string{bad}); err == nil {
			t.Errorf("ParseOptions(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "overlay2") {
			t.Errorf("ParseOptions(%q): error does not name the backend: %v", bad, err)
		}
	}
}

func TestProbeAndStatus(t *testing.T) {
	root := testRoot(t)
	if err := Probe(context.Background(), root); err != nil {
		t.Fatalf("Probe on %s: %v", root, err)
	}
	fresh := filepath.Join(root, "not", "yet")
	if err := Probe(context.Background(), fresh); err != nil {
		t.Fatalf("Probe on %s: %v", fresh, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "not")); !os.IsNotExist(err) {
		t.Errorf("Probe left the directories it created: %v", err)
	}
	d := open(t, root, Options{})
	mustLayer(t, d, "a", "", mkTar(t, file("f", "x")))
	mustCreate(t, d, "b", "a", false)
	mustCreate(t, d, "c", "b", true)
	st := d.Status(context.Background())
	for k, want := range map[string]string{
		"Backing Filesystem": "extfs", "Supports d_type": "true", "Native Overlay Diff": "true",
		"Layers": "3", "Max Chain Depth": "3",
	} {
		if got := st.Get(k); got != want {
			t.Errorf("Status %q = %q, want %q (all: %v)", k, got, want, st.Info)
		}
	}
	if !st.NativeDiff || st.Get("Native Diff Reason") == "" || !strings.Contains(st.Get("Mount API"), "fsconfig") {
		t.Errorf("Status does not say how it diffs and mounts: %v", st.Info)
	}
	// Nothing of the checks is left behind.
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), checkPrefix) {
			t.Errorf("check dir %s left in the root", e.Name())
		}
	}
}

// TestProbeRefusesOverlay puts a root on an overlay mount: overlay cannot
// use it as its upper layer, and the reason says so.
func TestProbeRefusesOverlay(t *testing.T) {
	base := testRoot(t)
	for _, s := range []string{"lower", "upper", "work", "m"} {
		os.Mkdir(filepath.Join(base, s), 0o755)
	}
	m := filepath.Join(base, "m")
	if err := mount.Mount("overlay", m, "overlay", 0, fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", base, base, base)); err != nil {
		t.Skipf("cannot mount an overlay to test on: %v", err)
	}
	t.Cleanup(func() { mount.Unmount(m, unix.MNT_DETACH) })
	err := Probe(context.Background(), filepath.Join(m, "root"))
	if !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "overlay") {
		t.Fatalf("Probe on an overlay mount = %v, want ErrNotSupported naming overlay", err)
	}
	if _, err := New(context.Background(), filepath.Join(m, "root2"), Options{}); !errors.Is(err, driver.ErrNotSupported) {
		t.Fatalf("New on an overlay mount = %v, want ErrNotSupported", err)
	}
}

func TestDTypeCheck(t *testing.T) {
	ok, err := supportsDType(testRoot(t))
	if err != nil || !ok {
		t.Fatalf("supportsDType on ext4 = %v, %v; want true", ok, err)
	}
}

// TestLayout checks the short links and the lower record.
func TestLayout(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	mustLayer(t, d, "a", "", mkTar(t, file("f", "x")))
	mustCreate(t, d, "b", "a", false)
	mustCreate(t, d, "c", "b", true)
	short := func(id string) string {
		b, err := os.ReadFile(filepath.Join(root, layersDir, id, linkFile))
		if err != nil {
			t.Fatal(err)
		}
		if !validShort(string(b)) {
			t.Fatalf("link of %s = %q, want 26 base32 characters", id, b)
		}
		target, err := os.Readlink(filepath.Join(root, linksDir, string(b)))
		if err != nil || target != "../layers/"+id+"/diff" {
			t.Fatalf("l/%s -> %q (%v), want ../layers/%s/diff", b, target, err, id)
		}
		return string(b)
	}
	b, err := os.ReadFile(filepath.Join(root, layersDir, "c", lowerFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := "l/" + short("b") + ":l/" + short("a"); string(b) != want {
		t.Errorf("lower of c = %q, want %q", b, want)
	}
	if _, err := os.Stat(filepath.Join(root, layersDir, "a", lowerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("base layer has a lower record: %v", err)
	}
	short("c")
	if err := d.Remove(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, linksDir))
	if len(ents) != 2 {
		t.Errorf("after Remove(c), l/ has %d links, want 2", len(ents))
	}
}

// TestDeleteThroughMount: deletions made through the mount are whiteout
// devices in diff/ and .wh. entries in Diff; Changes reports them.
func TestDeleteThroughMount(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	mustLayer(t, d, "base", "", mkTar(t, dir("etc"), file("etc/passwd", "root"), file("etc/gone", "x"),
		dir("var"), dir("var/cache"), file("var/cache/a", "a"), file("keep", "k")))
	mustCreate(t, d, "ctr", "base", true)
	m := mustGet(t, d, "ctr", nil)
	if err := os.Remove(filepath.Join(m, "etc/gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(m, "var/cache")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(m, "etc/new"), "new")
	mustPut(t, d, "ctr")
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, layersDir, "ctr", "diff", "etc", "gone"), &st); err != nil || !isWhiteout(&st) {
		t.Errorf("diff/etc/gone is not a 0/0 whiteout device (err %v, mode %o)", err, st.Mode)
	}
	names := diffNames(t, d, "ctr")
	for _, want := range []string{"etc/.wh.gone", "var/.wh.cache", "etc/new"} {
		if !contains(names, want) {
			t.Errorf("Diff lacks %s: %v", want, names)
		}
	}
	for _, n := range names {
		if n == "etc/gone" || strings.HasPrefix(n, "var/cache/") {
			t.Errorf("Diff has %s, which was deleted", n)
		}
	}
	ch, err := d.Changes(context.Background(), "ctr")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(ch)
	want := "[C /etc A /etc/new D /etc/gone D /var/cache C /var]"
	// Sorted by path components: check membership, then order.
	for _, c := range []string{"D /etc/gone", "D /var/cache", "A /etc/new"} {
		if !strings.Contains(got, c) {
			t.Errorf("Changes = %v, missing %s (roughly want %s)", got, c, want)
		}
	}
	// The same tar applied on a fresh child of base gives the same view.
	rc, _ := d.Diff(context.Background(), "ctr")
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	rc.Close()
	mustLayer(t, d, "copy", "base", buf.Bytes())
	v1, v2 := mustGet(t, d, "ctr", &driver.MountOpts{ReadOnly: true}), mustGet(t, d, "copy", &driver.MountOpts{ReadOnly: true})
	if a, b := listTree(t, v1), listTree(t, v2); a != b {
		t.Errorf("view rebuilt from Diff differs:\n%s\nvs\n%s", a, b)
	}
	mustPut(t, d, "ctr")
	mustPut(t, d, "copy")
}

func listTree(t *testing.T, dir string) string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		b := ""
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			b = string(c)
		}
		out = append(out, fmt.Sprintf("%s %v %q", strings.TrimPrefix(p, dir), fi.Mode(), b))
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestRemoveMountedAndRefcount(t *testing.T) {
	d := open(t, testRoot(t), Options{})
	mustLayer(t, d, "base", "", mkTar(t, file("f", "x")))
	mustCreate(t, d, "ctr", "base", true)
	p1 := mustGet(t, d, "ctr", nil)
	p2 := mustGet(t, d, "ctr", nil)
	if p1 != p2 {
		t.Errorf("two Gets returned %s and %s", p1, p2)
	}
	if err := d.Remove(context.Background(), "ctr"); !errors.Is(err, driver.ErrLayerInUse) {
		t.Errorf("Remove of a mounted layer = %v, want ErrLayerInUse", err)
	}
	mustPut(t, d, "ctr")
	if ok, _ := mount.IsMountPoint(p1); !ok {
		t.Errorf("first Put unmounted a layer with two Gets")
	}
	mustPut(t, d, "ctr")
	if ok, _ := mount.IsMountPoint(p1); ok {
		t.Errorf("last Put left the layer mounted")
	}
	if err := d.Put(context.Background(), "ctr"); err == nil {
		t.Errorf("Put without Get succeeded")
	}
	if err := d.Remove(context.Background(), "ctr"); err != nil {
		t.Errorf("Remove after Put: %v", err)
	}
}

func TestSizeLimitRefused(t *testing.T) {
	d := open(t, testRoot(t), Options{})
	err := d.Create(context.Background(), "q", "", &driver.CreateOpts{SizeLimit: 1 << 20})
	if !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "quota") {
		t.Errorf("Create with SizeLimit = %v, want ErrNotSupported naming quota", err)
	}
	if d.Exists("q") {
		t.Errorf("refused Create made the layer")
	}
	if _, err := d.QuotaScope(); !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("QuotaScope = %v, want ErrNotSupported", err)
	}
}

// TestApplyDiffBadTar: a tar that fails half way leaves the layer empty
// and usable.
func TestApplyDiffBadTar(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	mustCreate(t, d, "a", "", false)
	good := mkTar(t, file("one", "1"), file("two", strings.Repeat("2", 5000)))
	if _, err := d.ApplyDiff(context.Background(), "a", bytes.NewReader(good[:len(good)-2048])); err == nil {
		t.Fatal("ApplyDiff of a truncated tar succeeded")
	}
	ents, _ := os.ReadDir(filepath.Join(root, layersDir, "a", "diff"))
	if len(ents) != 0 {
		t.Errorf("failed ApplyDiff left %d entries in diff/", len(ents))
	}
	if _, err := os.Stat(filepath.Join(root, layersDir, "a", "diff.apply")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging dir left behind: %v", err)
	}
	if n, err := d.ApplyDiff(context.Background(), "a", bytes.NewReader(good)); err != nil || n != 5001 {
		t.Fatalf("ApplyDiff after a failed one = %d, %v; want 5001", n, err)
	}
	if n, err := d.DiffSize(context.Background(), "a"); err != nil || n != 5001 {
		t.Errorf("DiffSize = %d, %v; want the recorded 5001", n, err)
	}
}
