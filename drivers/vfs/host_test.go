package vfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
)

func TestReflinkOnXFS(t *testing.T) {
	mnt := loopFS(t, 512<<20, "mkfs.xfs", "-q", "-m", "reflink=1")
	testReflink(t, mnt, "xfs")
}

func TestReflinkOnBtrfs(t *testing.T) {
	mnt := loopFS(t, 512<<20, "mkfs.btrfs", "-q")
	testReflink(t, mnt, "btrfs")
}

func testReflink(t *testing.T, mnt, fsname string) {
	ctx := context.Background()
	for _, mode := range []CopyMode{CopyAuto, CopyReflink} {
		t.Run(string(mode), func(t *testing.T) {
			d := openDriver(t, filepath.Join(mnt, string(mode)), Options{CopyMode: mode})
			s := d.Status(ctx)
			if s.BackingFS != fsname || s.Get("Reflink") != "yes" {
				t.Fatalf("Status on %s: backing %q, reflink %q", fsname, s.BackingFS, s.Get("Reflink"))
			}
			base := filledBase(t, d)
			must(t, os.WriteFile(filepath.Join(base, "big"), []byte(strings.Repeat("0123456789abcdef", 1<<20)), 0o644))
			must(t, d.Create(ctx, "child", "base", nil))
			requireSameTree(t, base, d.layerDir("child"))
			rec, _ := d.store.Get("child")
			// Every regular file of the tree has content, so each is cloned.
			if rec.Extra[extraReflinked] != "6" || rec.Extra[extraCopiedFiles] != "6" {
				t.Errorf("record extra %v: want 6 of 6 files reflinked", rec.Extra)
			}
			// The clone shares blocks: the 16 MiB of "big" cost next to nothing.
			var before, after unix.Statfs_t
			must(t, unix.Statfs(mnt, &before))
			must(t, d.Create(ctx, "child2", "base", nil))
			must(t, unix.Statfs(mnt, &after))
			if used := int64(before.Bfree-after.Bfree) * before.Bsize; used > 4<<20 {
				t.Errorf("reflinked child used %d bytes of disk", used)
			}
		})
	}
	t.Run("copy", func(t *testing.T) {
		d := openDriver(t, filepath.Join(mnt, "copy"), Options{CopyMode: CopyPlain})
		filledBase(t, d)
		must(t, d.Create(ctx, "child", "base", nil))
		if rec, _ := d.store.Get("child"); rec.Extra[extraReflinked] != "0" {
			t.Errorf("copymode=copy reflinked: %v", rec.Extra)
		}
	})
}

func TestReflinkModeRefusedWithoutReflink(t *testing.T) {
	root := tempRoot(t)
	if ok, _ := probeReflink(root); ok {
		t.Skipf("%s (%s) supports reflink; this case needs one that does not", root, backingFS(root))
	}
	_, err := New(context.Background(), filepath.Join(root, "r"), Options{CopyMode: CopyReflink})
	if !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "cannot clone") {
		t.Fatalf("New with copymode=reflink on %s = %v, want ErrNotSupported with the reason", backingFS(root), err)
	}
	// Refused before anything is made (the probe's own temporary
	// directory is gone again; only root's mtime shows it was there).
	if ents := listDir(t, root); len(ents) != 0 {
		t.Errorf("refused New left %v in %s", ents, root)
	}
}

func TestProbe(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	if err := Probe(ctx, filepath.Join(root, "not/yet/made")); err != nil {
		t.Errorf("Probe under a writable dir: %v", err)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("Probe left %v behind", ents)
	}
	file := filepath.Join(root, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	if err := Probe(ctx, filepath.Join(file, "root")); !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Probe under a file = %v", err)
	}
	needRoot(t)
	ro := filepath.Join(root, "ro")
	must(t, os.Mkdir(ro, 0o755))
	must(t, unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=1m"))
	t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
	if err := Probe(ctx, filepath.Join(ro, "root")); !errors.Is(err, driver.ErrNotSupported) || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("Probe on a read-only fs = %v", err)
	}
}

func TestParseOptions(t *testing.T) {
	good := map[string]CopyMode{
		"copymode=auto":         CopyAuto,
		"vfs.copymode=reflink":  CopyReflink,
		"CopyMode=COPY":         CopyPlain,
		" vfs.copy_mode = copy": CopyPlain,
	}
	for in, want := range good {
		o, err := ParseOptions([]string{in})
		if err != nil || o.CopyMode != want {
			t.Errorf("ParseOptions(%q) = %+v, %v; want %s", in, o, err, want)
		}
	}
	if o, err := ParseOptions(nil); err != nil || o != (Options{}) {
		t.Errorf("ParseOptions(nil) = %+v, %v", o, err)
	}
	_, err := ParseOptions([]string{"size=10G", "copymode=fast", "novalue"})
	for _, want := range []string{`unknown key "size"`, `"fast"`, `"novalue": want key=value`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseOptions error %v does not mention %s", err, want)
		}
	}
	if _, err := New(context.Background(), tempRoot(t), Options{CopyMode: "fast"}); err == nil {
		t.Error("New accepted copy mode \"fast\"")
	}
}
