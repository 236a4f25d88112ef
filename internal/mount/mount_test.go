package mount

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const sample = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
90 27 0:50 / /var/tmp/r/layers/a\040b/merged rw,relatime shared:7 master:2 - overlay overlay rw,lowerdir=/x:/y,upperdir=/u,workdir=/w,fsync=volatile
91 90 0:51 / /var/tmp/r/layers/a\040b/merged/proc rw - proc proc rw
92 27 0:52 / /var/tmp/rr rw - tmpfs tmpfs rw
`

func TestParse(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 5 {
		t.Fatalf("%d mounts, want 5", len(ms))
	}
	m := ms[2]
	if m.ID != 90 || m.Parent != 27 || m.Major != 0 || m.Minor != 50 || m.Mountpoint != "/var/tmp/r/layers/a b/merged" ||
		m.FSType != "overlay" || m.Optional != "shared:7 master:2" || !m.HasOption("fsync=volatile") || !m.HasOption("lowerdir=") || m.HasOption("volatile") {
		t.Errorf("parsed %+v", m)
	}
	under := filterUnder(ms, "/var/tmp/r")
	if len(under) != 2 || under[0].ID != 91 || under[1].ID != 90 {
		t.Errorf("Under /var/tmp/r = %+v, want 91 then 90 (deepest first, not /var/tmp/rr)", under)
	}
	for _, bad := range []string{"1 2 3", "x 1 0:1 / / rw - a b c", "1 1 0:1 / / rw -"} {
		if _, err := Parse(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestSelfHasRoot(t *testing.T) {
	if _, ok, err := Lookup("/"); err != nil || !ok {
		t.Fatalf("Lookup(/) = %v, %v", ok, err)
	}
}

func tempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/var/tmp", "strata-mount-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { UnmountAll(dir); os.RemoveAll(dir) })
	return dir
}

// TestFSContext mounts an overlay through fsconfig and checks that a
// refused key reports the kernel's own message.
func TestFSContext(t *testing.T) {
	if err := HasNewAPI("overlay"); err != nil {
		t.Skipf("no new mount API here: %v", err)
	}
	dir := tempDir(t)
	for _, d := range []string{"l1", "l2", "m"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "l2", "f"), []byte("x"), 0o644)
	c, err := Open("overlay")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, l := range []string{"l1", "l2"} {
		if err := c.SetString("lowerdir+", filepath.Join(dir, l)); err != nil {
			t.Skipf("no lowerdir+ (Linux 6.8+): %v", err)
		}
	}
	m := filepath.Join(dir, "m")
	if err := c.MountAt(m, unix.MOUNT_ATTR_RDONLY); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(m, "f")); err != nil {
		t.Errorf("file of the lower layer not visible: %v", err)
	}
	if ok, _ := IsMountPoint(m); !ok {
		t.Errorf("IsMountPoint(%s) = false", m)
	}
	if err := Unmount(m, 0); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(m, 0); err != nil {
		t.Errorf("Unmount of a path no longer mounted = %v, want nil", err)
	}

	c2, _ := Open("overlay")
	defer c2.Close()
	err = c2.SetString("no_such_option", "1")
	var me *Error
	if !errors.As(err, &me) || me.Log == "" {
		t.Errorf("refused lowerdir+ = %v; want an *Error carrying the kernel's log", err)
	}
}

func TestUnmountAllBusyFallsBackToDetach(t *testing.T) {
	dir := tempDir(t)
	m := filepath.Join(dir, "m")
	os.Mkdir(m, 0o755)
	if err := Mount("tmpfs", m, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	f, err := os.Create(filepath.Join(m, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done, err := UnmountAll(dir)
	if err != nil || len(done) != 1 {
		t.Fatalf("UnmountAll with a busy mount = %v, %v", done, err)
	}
	if ok, _ := IsMountPoint(m); ok {
		t.Errorf("busy mount still attached")
	}
}
