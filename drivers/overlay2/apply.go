package overlay2

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/store"
)

// ApplyDiff implements driver.Driver. The tar is unpacked in a staging
// directory that replaces diff/ only when complete, so a bad tar leaves
// the layer as it was.
func (d *Driver) ApplyDiff(ctx context.Context, id string, r io.Reader) (int64, error) {
	if err := d.check("apply", id); err != nil {
		return 0, err
	}
	unlock := d.locks.Lock(id)
	defer unlock()
	if _, err := d.store.BeginApply(id, d.refs.Count(id)); err != nil {
		return 0, driver.Wrap("apply", id, err)
	}
	n, err := d.apply(ctx, id, r)
	if err != nil {
		// Back to Ready: the staging dir is gone, diff/ is untouched.
		if uerr := d.store.Update(id, func(r *store.Record) { r.State = store.Ready }); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return 0, driver.Wrap("apply", id, err)
	}
	err = d.store.Update(id, func(r *store.Record) {
		r.State = store.Ready
		sized := r.Extra[extraSized] != ""
		if sized {
			r.Size += n
		}
	})
	d.copyups.forget(id)
	return n, driver.Wrap("apply", id, err)
}

func (d *Driver) apply(ctx context.Context, id string, r io.Reader) (int64, error) {
	diff := d.diffDir(id)
	opts, err := d.applyOptions(id)
	if err != nil {
		return 0, err
	}
	empty, err := isEmptyDir(diff)
	if err != nil {
		return 0, err
	}
	stage := filepath.Join(d.layerDir(id), "diff.apply")
	if err := os.RemoveAll(stage); err != nil {
		return 0, err
	}
	if empty {
		err = os.Mkdir(stage, 0o755)
	} else {
		// A layer with content is unpacked on a copy of its own diff/
		// (reflinked where the filesystem can): only this layer's data,
		// never the image below it.
		_, err = fsutil.CopyTree(ctx, diff, stage)
	}
	var n int64
	if err == nil {
		n, err = archive.Apply(ctx, stage, r, opts)
	}
	if err == nil {
		err = d.pruneWhiteouts(ctx, id, stage)
	}
	if err == nil {
		err = swapDir(stage, diff, empty)
	}
	// After a swap the stage holds the old diff/; otherwise the failed
	// attempt. Either way it goes.
	if rerr := os.RemoveAll(stage); err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	// One syncfs makes the whole unpacked tree durable before the record
	// says Ready.
	if err := fsutil.Syncfs(diff); err != nil {
		return 0, err
	}
	return n, fsutil.SyncDir(d.layerDir(id))
}

// swapDir puts the complete stage in place of dir in one atomic step:
// rename(2) replaces an empty directory (os.Rename refuses any directory),
// and RENAME_EXCHANGE swaps a full one, leaving the old content at stage.
func swapDir(stage, dir string, dirEmpty bool) error {
	var err error
	if dirEmpty {
		err = unix.Rename(stage, dir)
	} else {
		err = unix.Renameat2(unix.AT_FDCWD, stage, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: stage, New: dir, Err: err}
	}
	return nil
}
