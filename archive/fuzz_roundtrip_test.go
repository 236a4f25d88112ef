package archive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/fsutil"
)

// The fuzzer's trees use a few names in a few directories, so that ops
// collide: a file replaces a directory, a link points at a removed file.
var (
	fuzzDirs  = []string{"", "d", "d/e", "x"}
	fuzzNames = []string{"a", "b", "d", "e", "x"}
)

// fuzzOps applies ops (4 bytes each: kind, dir, name, argument) to dir.
// Ops never go through a symlink of the tree (a parent that is not a
// plain directory skips the op), so nothing is written outside dir.
func fuzzOps(dir string, ops []byte) {
	for len(ops) >= 4 {
		kind, d, n, arg := ops[0], ops[1], ops[2], ops[3]
		ops = ops[4:]
		rel := filepath.Join(fuzzDirs[int(d)%len(fuzzDirs)], fuzzNames[int(n)%len(fuzzNames)])
		if !plainParents(dir, rel) {
			continue
		}
		p := filepath.Join(dir, rel)
		other := filepath.Join(dir, fuzzDirs[int(arg>>4)%len(fuzzDirs)], fuzzNames[int(arg)%len(fuzzNames)])
		switch kind % 9 {
		case 0: // write a file (in place when it exists: same inode)
			if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
				os.RemoveAll(p)
			}
			os.WriteFile(p, bytes.Repeat([]byte{arg}, int(arg)*37), 0o644)
		case 1:
			os.Mkdir(p, 0o755)
		case 2: // a relative symlink: its target is never followed here
			os.RemoveAll(p)
			os.Symlink(strings.Repeat("../", int(arg)%3)+fuzzNames[int(arg)%len(fuzzNames)], p)
		case 3: // a hardlink to another regular file
			if fi, err := os.Lstat(other); err == nil && fi.Mode().IsRegular() && plainParents(dir, other[len(dir):]) {
				os.RemoveAll(p)
				os.Link(other, p)
			}
		case 4:
			os.RemoveAll(p)
		case 5:
			unix.Fchmodat(unix.AT_FDCWD, p, uint32(arg)&0o7777|0o400, unix.AT_SYMLINK_NOFOLLOW)
		case 6:
			unix.Lchown(p, int(arg)%3*1000, int(arg>>2)%3*1000)
		case 7:
			if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink == 0 {
				unix.Lsetxattr(p, "user.f"+string(rune('a'+arg%3)), []byte{arg}, 0)
			}
		case 8:
			if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink == 0 {
				unix.Lremovexattr(p, "user.f"+string(rune('a'+arg%3)))
			}
		}
	}
}

// plainParents says whether every parent of rel in dir is a real
// directory (no symlink), so that an op on rel stays in dir.
func plainParents(dir, rel string) bool {
	parent := filepath.Dir(filepath.Clean("/" + rel))
	for q := parent; q != "/"; q = filepath.Dir(q) {
		fi, err := os.Lstat(filepath.Join(dir, q))
		if err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// FuzzDiffRoundTrip: a parent tree made by ops, a layer made by copying it
// and applying more ops (as a container writes through a view), then
// Changes + WriteChanges re-applied onto a copy of the parent gives the
// layer back, byte for byte.
func FuzzDiffRoundTrip(f *testing.F) {
	f.Add([]byte{0, 0, 0, 5, 1, 0, 1, 0, 0, 1, 0, 7}, []byte{0, 0, 0, 9, 4, 1, 0, 0})
	f.Add([]byte{1, 0, 1, 0, 0, 1, 0, 3, 3, 0, 0, 0x10}, []byte{4, 1, 0, 0, 0, 0, 0, 8})
	f.Add([]byte{1, 0, 4, 0, 2, 0, 0, 1, 7, 0, 0, 1}, []byte{8, 0, 0, 1, 5, 3, 4, 0o7, 6, 0, 4, 5})
	f.Add([]byte{0, 0, 2, 1, 3, 0, 3, 2}, []byte{0, 0, 2, 9, 4, 0, 3, 0, 1, 0, 2, 0})
	f.Fuzz(func(t *testing.T, parentOps, layerOps []byte) {
		if os.Geteuid() != 0 {
			t.Skip("needs root: the ops chown and set trusted xattrs")
		}
		if len(parentOps) > 256 || len(layerOps) > 256 {
			return // longer op lists add cost, not new shapes
		}
		sb := sandbox(t)
		parent, layer, rebuilt := filepath.Join(sb, "parent"), filepath.Join(sb, "layer"), filepath.Join(sb, "rebuilt")
		must(t, os.Mkdir(parent, 0o755))
		fuzzOps(parent, parentOps)
		ctx := context.Background()
		for _, dst := range []string{layer, rebuilt} {
			if _, err := fsutil.CopyTree(ctx, parent, dst); err != nil {
				t.Fatalf("copy: %v", err)
			}
		}
		fuzzOps(layer, layerOps)
		ch, err := Changes(ctx, parent, layer)
		if err != nil {
			t.Fatalf("Changes: %v", err)
		}
		var tb bytes.Buffer
		if err := WriteChanges(ctx, &tb, layer, ch); err != nil {
			t.Fatalf("WriteChanges: %v", err)
		}
		if _, err := Apply(ctx, rebuilt, bytes.NewReader(tb.Bytes()), ApplyOptions{}); err != nil {
			t.Fatalf("Apply of the diff: %v", err)
		}
		want, got := snapshot(t, layer), snapshot(t, rebuilt)
		// Directory mtimes are not a change on their own (moby#9874: Changes
		// compares a directory without them), so a directory removed and made
		// again with the same metadata keeps the parent's mtime.
		if d := fstree.Diff(want, got, fstree.Options{IgnoreRoot: true, IgnoreDirMtimes: true}); len(d) > 0 {
			t.Fatalf("the diff re-applied on the parent differs from the layer:\n%s\nchanges: %v\ntar: %v",
				strings.Join(d, "\n"), ch, tarNames(t, tb.Bytes()))
		}
	})
}
