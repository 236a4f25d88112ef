package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/store"
)

// freshSet holds the layers that are still exactly what Create made (a
// copy of the parent, or an empty directory): nothing has been applied to
// them and no Get has handed out their path. Such a layer can be rebuilt
// from its parent, so ApplyDiff unpacks into it in place and rebuilds it
// if the tar turns out bad. It lives in memory only: after a reopen a
// layer counts as not fresh, which is merely slower (see ApplyDiff).
type freshSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (f *freshSet) add(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids == nil {
		f.ids = map[string]bool{}
	}
	f.ids[id] = true
}

func (f *freshSet) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ids, id)
}

func (f *freshSet) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids[id]
}

// ApplyDiff unpacks an OCI layer tar onto the layer. vfs layers are whole
// trees, so whiteouts delete from the copy of the parent right away.
//
// A bad tar leaves the layer as it was. A layer fresh from Create (the
// usual import: Create, then ApplyDiff) is unpacked in place and, if the
// tar fails, rebuilt from its parent; any other layer is copied to
// staging/ (cloned where the filesystem can), unpacked there and swapped
// in only when whole.
//
// The record says Applying until the result is synced, so a crash in the
// middle leaves a layer that the next New removes as half-applied.
func (d *Driver) ApplyDiff(ctx context.Context, id string, r io.Reader) (int64, error) {
	const op = "apply"
	if err := d.check(op, id); err != nil {
		return 0, err
	}
	defer d.locks.Lock(id)()
	rec, err := d.store.BeginApply(id, d.refs.Count(id)+d.views.Count(id))
	if err != nil {
		return 0, driver.Wrap(op, id, err)
	}
	fresh := d.fresh.has(id)
	var n int64
	if fresh {
		n, err = d.applyInPlace(ctx, rec, r)
	} else {
		n, err = d.applyStaged(ctx, rec, r)
	}
	if err != nil {
		return 0, driver.Wrap(op, id, err)
	}
	d.fresh.remove(id)
	rec.State = store.Ready
	rec.Size += n
	if err := d.store.Put(rec); err != nil {
		return 0, driver.Wrap(op, id, err)
	}
	return n, nil
}

// unchanged marks rec Ready again after a failed apply that left its tree as
// it was, and returns applyErr.
func (d *Driver) unchanged(rec store.Record, applyErr error) error {
	rec.State = store.Ready
	if err := d.store.Put(rec); err != nil {
		return errors.Join(applyErr, err)
	}
	return applyErr
}

func (d *Driver) applyInPlace(ctx context.Context, rec store.Record, r io.Reader) (int64, error) {
	dir := d.layerDir(rec.ID)
	// A base layer's root is rebuilt with the owner, mode and times it has
	// now; a child's comes from its parent, as at Create.
	var root unix.Stat_t
	if err := unix.Lstat(dir, &root); err != nil {
		return 0, d.unchanged(rec, err)
	}
	n, err := archive.Apply(ctx, dir, r, archive.ApplyOptions{})
	if err == nil {
		err = fsutil.Syncfs(dir)
	}
	if err == nil {
		return n, nil
	}
	// The rebuild must finish even if ctx was what stopped Apply.
	if rerr := d.rebuild(context.WithoutCancel(ctx), rec, &root); rerr != nil {
		return 0, fmt.Errorf("%w; restoring the layer failed too (the next New removes it): %v", err, rerr)
	}
	return 0, d.unchanged(rec, err)
}

// rebuild makes the layer again as Create made it and swaps it in for the
// half-applied tree.
func (d *Driver) rebuild(ctx context.Context, rec store.Record, root *unix.Stat_t) error {
	staging := filepath.Join(d.root, stagingDir, rec.ID)
	if err := removeTree(staging); err != nil {
		return err
	}
	var err error
	if rec.Parent == "" {
		err = os.Mkdir(staging, 0o755)
		if err == nil {
			err = os.Lchown(staging, int(root.Uid), int(root.Gid))
		}
		if err == nil {
			err = unix.Chmod(staging, root.Mode&0o7777)
		}
		if err == nil {
			err = unix.UtimesNano(staging, []unix.Timespec{root.Atim, root.Mtim})
		}
	} else {
		// The parent cannot change meanwhile: it has a child (this layer).
		_, err = fsutil.CopyTreeWith(ctx, d.layerDir(rec.Parent), staging, fsutil.CopyOptions{Mode: d.mode})
	}
	if err == nil {
		err = d.swapIn(staging, d.layerDir(rec.ID))
	}
	if err != nil {
		removeTree(staging)
	}
	return err
}

func (d *Driver) applyStaged(ctx context.Context, rec store.Record, r io.Reader) (int64, error) {
	dir := d.layerDir(rec.ID)
	staging := filepath.Join(d.root, stagingDir, rec.ID)
	if err := removeTree(staging); err != nil {
		return 0, d.unchanged(rec, err)
	}
	_, err := fsutil.CopyTreeWith(ctx, dir, staging, fsutil.CopyOptions{Mode: d.mode})
	var n int64
	if err == nil {
		n, err = archive.Apply(ctx, staging, r, archive.ApplyOptions{})
	}
	if err == nil {
		err = d.swapIn(staging, dir)
	}
	if err != nil {
		removeTree(staging)
		return 0, d.unchanged(rec, err)
	}
	return n, nil
}

// swapIn makes the tree at staging durable and puts it at dir in one
// step (RENAME_EXCHANGE), then deletes the old tree, now at staging.
func (d *Driver) swapIn(staging, dir string) error {
	if err := fsutil.Syncfs(staging); err != nil {
		return err
	}
	err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No exchange on this filesystem: two renames. A crash between
		// them leaves no tree at dir, but the record still says Applying,
		// so the next New removes the layer rather than trust it.
		if err = d.discard(dir); err == nil {
			err = os.Rename(staging, dir)
		}
	} else if err == nil {
		removeTree(staging)
	}
	if err != nil {
		return &os.LinkError{Op: "swap", Old: staging, New: dir, Err: err}
	}
	return fsutil.SyncDir(filepath.Dir(dir))
}
