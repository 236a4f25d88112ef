//go:build linux && cgo

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/store"
)

// ApplyDiff unpacks a layer tar onto layer id. It unpacks into a fresh
// snapshot of the layer (O(1)) and swaps that in only when the whole tar
// went in and reached the disk, so a bad or hostile tar leaves the layer
// exactly as it was. The record says Applying meanwhile, so after a crash
// New removes the layer rather than keep one whose ApplyDiff never
// returned.
func (d *Driver) ApplyDiff(ctx context.Context, id string, r io.Reader) (int64, error) {
	if err := d.check("apply", id); err != nil {
		return 0, err
	}
	unlock := d.locks.Lock(id)
	defer unlock()
	// Applying from the first byte: if we are killed anywhere from here to
	// the final Put, New removes the layer rather than keep a layer whose
	// content the caller never got confirmed.
	rec, err := d.store.BeginApply(id, d.refs.Count(id))
	if err != nil {
		return 0, driver.Wrap("apply", id, err)
	}
	path := d.layerPath(id)
	oldID, err := cbtrfs.SubvolID(path)
	if err != nil {
		return 0, driver.Wrap("apply", id, d.ready(rec, err))
	}
	stage := filepath.Join(d.staging, id+"."+randomSuffix())
	if err := cbtrfs.SubvolSnapshot(stage, path, false); err != nil {
		return 0, driver.Wrap("apply", id, d.ready(rec, err))
	}
	n, err := d.fill(ctx, stage, r, rec)
	if err != nil {
		return 0, driver.Wrap("apply", id, d.unstage(ctx, rec, stage, err))
	}
	old := filepath.Join(d.trash, id+"."+randomSuffix())
	if err := moveSubvol(path, old); err != nil {
		return 0, driver.Wrap("apply", id, d.unstage(ctx, rec, stage, errors.Join(err, d.restoreFlag(path, rec))))
	}
	if err := os.Rename(stage, path); err != nil {
		if rerr := moveSubvol(old, path); rerr != nil {
			// Leave it Applying: New removes the layer.
			return 0, driver.Wrap("apply", id, errors.Join(err, rerr))
		}
		return 0, driver.Wrap("apply", id, d.unstage(ctx, rec, stage, errors.Join(err, d.restoreFlag(path, rec))))
	}
	// A read-only subvolume cannot be moved, so the flag goes on in place.
	if !rec.Writable {
		err = setReadOnly(path, true)
	}
	if err == nil {
		err = fsutil.Syncfs(path)
	}
	if err == nil {
		rec.State = store.Ready
		rec.Size += n
		err = d.store.Put(rec)
	}
	if err != nil {
		return 0, driver.Wrap("apply", id, err)
	}
	// The replaced subvolume is deleted before returning, not in the
	// background: it is normally the empty layer Create made, so this is
	// cheap, and the caller finds the root as tidy as before.
	if err := d.deleteWithQgroup(context.WithoutCancel(ctx), old, oldID); err != nil {
		return n, driver.Wrap("apply", id, err)
	}
	return n, nil
}

// restoreFlag makes a read-only layer's subvolume read-only again after
// a failed move cleared the flag.
func (d *Driver) restoreFlag(path string, rec store.Record) error {
	if rec.Writable {
		return nil
	}
	return setReadOnly(path, true)
}

// unstage undoes a failed apply: the staging snapshot is deleted and the
// record goes back to Ready, the layer being untouched.
func (d *Driver) unstage(ctx context.Context, rec store.Record, stage string, cause error) error {
	if err := deleteSubvol(context.WithoutCancel(ctx), stage); err != nil {
		cause = errors.Join(cause, fmt.Errorf("cleanup: %w", err))
	}
	return d.ready(rec, cause)
}

// ready puts the record back to Ready after a failure that left the
// layer's data as it was, and returns cause.
func (d *Driver) ready(rec store.Record, cause error) error {
	rec.State = store.Ready
	if err := d.store.Put(rec); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// fill unpacks r into the staging snapshot and makes it durable and, for a
// read-only layer, read-only.
func (d *Driver) fill(ctx context.Context, stage string, r io.Reader, rec store.Record) (int64, error) {
	if rec.SizeLimit > 0 {
		f, err := openDir(stage)
		if err != nil {
			return 0, err
		}
		info, err := getSubvolInfo(f)
		if err == nil {
			err = qgroupLimit(f, info.TreeID, rec.SizeLimit)
		}
		f.Close()
		if err != nil {
			return 0, err
		}
	}
	n, err := archive.Apply(ctx, stage, r, archive.ApplyOptions{})
	if err != nil {
		return 0, noSpace(err)
	}
	if err := fsutil.Syncfs(stage); err != nil {
		return 0, noSpace(err)
	}
	return n, nil
}

// discardRenamed deletes a subvolume already moved into the trash, in the
// background.
func (d *Driver) discardRenamed(path string, svid uint64) error {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		if err := d.deleteWithQgroup(context.Background(), path, svid); err != nil {
			d.bgErrMu.Lock()
			d.bgErr = err
			d.bgErrMu.Unlock()
		}
	}()
	return nil
}

// noSpace adds driver.ErrNoSpace to errors that mean the filesystem or the
// layer's qgroup limit is full.
func noSpace(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		if !errors.Is(err, driver.ErrNoSpace) {
			return fmt.Errorf("%w: %w", driver.ErrNoSpace, err)
		}
	}
	return err
}
