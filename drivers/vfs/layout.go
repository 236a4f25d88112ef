package vfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/store"
)

// On-disk layout of a root:
//
//	meta/<id>.json   the layer records (internal/store): a layer exists
//	                 exactly when its record says Ready
//	layers/<id>/     each layer's whole tree
//	staging/<id>/    a Create in progress; renamed into layers/ when whole
//	trash/<n>/       a Remove in progress; the record is already gone
//
// staging/ and trash/ hold only unfinished work, so New empties them.
const (
	metaDir    = "meta"
	layersDir  = "layers"
	stagingDir = "staging"
	trashDir   = "trash"
)

func (d *Driver) layerDir(id string) string { return filepath.Join(d.root, layersDir, id) }

// discard moves a layer's tree out of layers/ in one rename, so that a
// crash during the slow delete leaves it in trash/ (emptied by New)
// rather than as a half-deleted tree under a layer name.
func (d *Driver) discard(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(d.root, trashDir), "rm-")
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(tmp, "tree")); err != nil {
		os.Remove(tmp)
		return err
	}
	return removeTree(tmp)
}

// removeTree is os.RemoveAll that also gets through directories without
// write permission, which layers contain (0555 /proc, /sys) and which a
// non-root owner cannot empty otherwise.
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// recover puts a root back into a consistent state after a crash and
// returns what it did, for Status.
//
//   - staging/ entries are Creates that never published: removed.
//   - trash/ entries are Removes whose record is already gone: removed.
//   - records left Applying are layers an ApplyDiff was writing when the
//     process died: half-written, so removed.
//   - layers/ entries without a record are data of a Create that died
//     between rename and record, or of a Remove that died between record
//     and rename: removed.
func (d *Driver) recover(ctx context.Context) (string, error) {
	var done []string
	count := func(n int, one, many string) {
		switch {
		case n == 1:
			done = append(done, "1 "+one)
		case n > 1:
			done = append(done, fmt.Sprintf("%d %s", n, many))
		}
	}
	for _, sub := range []string{stagingDir, trashDir} {
		n, err := emptyDir(ctx, filepath.Join(d.root, sub))
		if err != nil {
			return "", err
		}
		if sub == stagingDir {
			count(n, "unfinished create", "unfinished creates")
		} else {
			count(n, "unfinished remove", "unfinished removes")
		}
	}
	half := 0
	for _, r := range d.store.List() {
		if r.State != store.Applying {
			continue
		}
		if err := d.store.Delete(r.ID); err != nil {
			return "", fmt.Errorf("removing half-applied layer %s: %w", r.ID, err)
		}
		if err := d.discard(d.layerDir(r.ID)); err != nil {
			return "", fmt.Errorf("removing half-applied layer %s: %w", r.ID, err)
		}
		half++
	}
	count(half, "half-applied layer", "half-applied layers")
	orphans, err := d.store.Sweep(ctx, filepath.Join(d.root, layersDir), nil, func(name string) error {
		return d.discard(d.layerDir(name))
	})
	if err != nil {
		return "", err
	}
	count(len(orphans), "layer directory without a record", "layer directories without a record")
	// A record without its tree cannot come from a crash (the tree is
	// durable before the record is written), only from outside damage.
	// It is reported, not removed: the record is all that is left of the
	// layer, and its children are whole trees of their own.
	d.damaged = nil
	for _, r := range d.store.List() {
		if _, err := os.Lstat(d.layerDir(r.ID)); errors.Is(err, os.ErrNotExist) {
			d.damaged = append(d.damaged, r.ID)
		}
	}
	if len(done) == 0 {
		return "", nil
	}
	return "removed " + strings.Join(done, ", "), nil
}

func emptyDir(ctx context.Context, dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
			return 0, err
		}
	}
	if len(ents) > 0 {
		if err := fsutil.SyncDir(dir); err != nil {
			return 0, err
		}
	}
	return len(ents), nil
}
