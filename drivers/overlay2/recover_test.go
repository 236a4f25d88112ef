package overlay2

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/mount"
	"github.com/stratafs/strata/internal/store"
)

const childEnv = "STRATA_OVERLAY2_TEST_CHILD"

// TestKilledChild is the child half of TestRepairAfterKill: it mounts two
// layers (one volatile), writes through them, says so and waits to be
// killed. It does nothing in a normal run.
func TestKilledChild(t *testing.T) {
	root := os.Getenv(childEnv)
	if root == "" {
		t.Skip("child process of TestRepairAfterKill only")
	}
	dr, err := New(context.Background(), root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := dr.(*Driver)
	m1 := mustGet(t, d, "ctr", nil)
	m2 := mustGet(t, d, "tmp", &driver.MountOpts{Volatile: true})
	writeFile(t, filepath.Join(m1, "kept"), "written before the kill")
	writeFile(t, filepath.Join(m2, "lost"), "volatile")
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Minute)
}

// TestRepairAfterKill kills a process that holds mounts under the root;
// New on the root unmounts them, keeps the normal layer with what was
// written and discards the one that was mounted volatile.
func TestRepairAfterKill(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	mustLayer(t, d, "base", "", mkTar(t, file("f", "x")))
	mustCreate(t, d, "ctr", "base", true)
	mustCreate(t, d, "tmp", "base", true)
	d.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !ready {
		t.Fatal("child did not get ready")
	}
	left, _ := mount.Under(root)
	if len(left) != 2 {
		t.Fatalf("after the kill, %d mounts under the root, want 2 (the test needs a shared mount namespace)", len(left))
	}

	d2 := open(t, root, Options{})
	if left, _ := mount.Under(root); len(left) != 0 {
		t.Errorf("New left %d mounts under the root", len(left))
	}
	if !d2.Exists("ctr") {
		t.Fatal("the normally mounted layer was lost")
	}
	if d2.Exists("tmp") {
		t.Errorf("the layer mounted volatile when its process died was kept")
	}
	if _, err := os.Stat(filepath.Join(root, layersDir, "tmp")); !os.IsNotExist(err) {
		t.Errorf("data of the discarded layer left: %v", err)
	}
	st := d2.Status(context.Background()).Get("Repaired On Open")
	if !strings.Contains(st, "discarded tmp") || !strings.Contains(st, "unmounted") {
		t.Errorf("Status does not tell what was repaired: %q", st)
	}
	m := mustGet(t, d2, "ctr", nil)
	if b, err := os.ReadFile(filepath.Join(m, "kept")); err != nil || string(b) != "written before the kill" {
		t.Errorf("file written before the kill: %q, %v", b, err)
	}
	mustPut(t, d2, "ctr")
}

// TestVolatileAcrossBoots: a layer mounted volatile and put back cleanly
// stays usable in the same boot (the kernel's marker is removed), and is
// discarded when the driver opens after a reboot.
func TestVolatileAcrossBoots(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	mustLayer(t, d, "base", "", mkTar(t, file("f", "x")))
	mustCreate(t, d, "tmp", "base", true)
	for i := 0; i < 2; i++ {
		m := mustGet(t, d, "tmp", &driver.MountOpts{Volatile: true})
		if info, ok, _ := mount.Lookup(m); !ok || !volatileMount(info) {
			t.Fatalf("mount of tmp is not volatile: %+v", info)
		}
		writeFile(t, filepath.Join(m, "x"), "y")
		mustPut(t, d, "tmp")
	}
	d.Close()
	d = open(t, root, Options{})
	if !d.Exists("tmp") {
		t.Fatal("a volatile layer put back cleanly was discarded in the same boot")
	}
	d.Close()
	if err := os.WriteFile(filepath.Join(root, layersDir, "tmp", volatileFile), []byte("another-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = open(t, root, Options{})
	if d.Exists("tmp") {
		t.Errorf("a layer mounted volatile before a reboot was kept")
	}
	if !d.Exists("base") {
		t.Errorf("its parent went too")
	}
}

// TestRecoverOnNew: an interrupted ApplyDiff (record in Applying), layer
// data without a record, a dangling short link and a check dir left by a
// killed Probe are all cleaned up by New; complete layers stay.
func TestRecoverOnNew(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	mustLayer(t, d, "good", "", mkTar(t, file("f", "x")))
	mustCreate(t, d, "half", "", false)
	if err := d.store.Update("half", func(r *store.Record) { r.State = store.Applying }); err != nil {
		t.Fatal(err)
	}
	mustGet(t, d, "good", nil) // left mounted: the process "dies"
	os.MkdirAll(filepath.Join(root, layersDir, "stray", "diff"), 0o755)
	os.Symlink("../layers/nowhere/diff", filepath.Join(root, linksDir, "AAAAAAAAAAAAAAAAAAAAAAAAAA"))
	os.Mkdir(filepath.Join(root, checkPrefix+"123"), 0o700)

	d2 := open(t, root, Options{})
	if !d2.Exists("good") || d2.Exists("half") {
		t.Errorf("after New: good=%v half=%v, want true false", d2.Exists("good"), d2.Exists("half"))
	}
	for _, p := range []string{layersDir + "/half", layersDir + "/stray", linksDir + "/AAAAAAAAAAAAAAAAAAAAAAAAAA", checkPrefix + "123"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("%s left after New: %v", p, err)
		}
	}
	if ok, _ := mount.IsMountPoint(filepath.Join(root, layersDir, "good", "merged")); ok {
		t.Errorf("the mount left by the old driver is still there")
	}
}
