package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/stratafs/strata/driver"
)

// cmdMount makes layer id's whole view available at <root>/mnt/ID until a
// matching strata umount, and prints that path. A writable layer is
// mounted read-write, an image layer read-only.
func cmdMount(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("mount")
	pos, err := parse(fs, args, 1, "ID")
	if err != nil {
		return err
	}
	id := pos[0]
	if err := driver.ValidateID(id); err != nil {
		return usageError{err.Error()}
	}
	d, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	if !d.Exists(id) {
		return driver.Wrap("mount", id, driver.ErrLayerNotFound)
	}
	mt := e.mounts()
	unlock, err := mt.lock()
	if err != nil {
		return err
	}
	defer unlock()
	n, err := mt.countLocked(id)
	if err != nil {
		return err
	}
	if n == 0 {
		if err := bindLayer(ctx, d, mt, id); err != nil {
			return err
		}
	}
	if err := mt.write(id, mountRecord{Driver: d.Name(), Count: n + 1}); err != nil {
		if n == 0 {
			err = errors.Join(err, mt.unbind(id))
		}
		return err
	}
	return e.printMount(id, mt.path(id), n+1)
}

// bindLayer takes the backend's view of id just long enough to bind-mount
// it; see mounts.go for why the backend's own mount is not kept.
func bindLayer(ctx context.Context, d driver.Driver, mt *mountTable, id string) error {
	rw, err := isWritable(ctx, d, id)
	if err != nil {
		return err
	}
	src, err := d.Get(ctx, id, nil)
	if err != nil {
		return err
	}
	berr := mt.bind(id, src, rw)
	if err := d.Put(ctx, id); err != nil {
		return errors.Join(berr, err)
	}
	return berr
}

func isWritable(ctx context.Context, d driver.Driver, id string) (bool, error) {
	layers, err := listLayers(ctx, d)
	if err != nil {
		return false, err
	}
	for _, l := range layers {
		if l.ID == id {
			return l.Writable, nil
		}
	}
	return false, driver.Wrap("mount", id, driver.ErrLayerNotFound)
}

func (e *env) printMount(id, path string, count int) error {
	if e.json {
		return writeJSON(e.stdout, struct {
			ID    string `json:"id"`
			Path  string `json:"path"`
			Count int    `json:"count"`
		}{id, path, count})
	}
	fmt.Fprintln(e.stdout, path)
	return nil
}

// cmdUmount undoes one strata mount; the last one removes the mount. It
// does not need the backend: the bind mount is the CLI's own.
func cmdUmount(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("umount")
	pos, err := parse(fs, args, 1, "ID")
	if err != nil {
		return err
	}
	id := pos[0]
	if err := driver.ValidateID(id); err != nil {
		return usageError{err.Error()}
	}
	mt := e.mounts()
	unlock, err := mt.lock()
	if err != nil {
		return err
	}
	defer unlock()
	n, err := mt.countLocked(id)
	if err != nil {
		return err
	}
	if n == 0 {
		// Clear a record left by a mount that was undone outside strata.
		if err := mt.write(id, mountRecord{}); err != nil {
			return err
		}
		return fmt.Errorf("umount %s: not mounted by strata mount", id)
	}
	r, err := mt.read(id)
	if err != nil {
		return err
	}
	if n == 1 {
		if err := mt.unbind(id); err != nil {
			return err
		}
	}
	r.Count = n - 1
	if err := mt.write(id, r); err != nil {
		return err
	}
	if e.json {
		return writeJSON(e.stdout, struct {
			ID    string `json:"id"`
			Count int    `json:"count"`
		}{id, n - 1})
	}
	if n > 1 {
		fmt.Fprintf(e.stdout, "%s still mounted (%d more umount to go)\n", id, n-1)
	}
	return nil
}
