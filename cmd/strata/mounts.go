package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/mount"
)

// Mounts made by "strata mount" must outlive the process, but a driver's
// refcounts live in its process, and a backend opened again treats mounts
// it did not make as debris from a crash (overlay2 unmounts them in New).
// So the CLI does not keep the backend's own mount. It takes the view with
// Get, bind-mounts it at <root>/mnt/ID, and releases it with Put at once:
// the bind mount holds the same superblock (for overlay) or directory (vfs,
// btrfs), lives outside every backend's directory, and so survives later
// processes opening the backend. Its count is kept in <root>/mnt/.refs/ID,
// guarded by a lock file, so mount/umount pairs nest across processes.

const mntDir = "mnt"

type mountTable struct {
	dir string // <root>/mnt
}

type mountRecord struct {
	Driver string `json:"driver"`
	Count  int    `json:"count"`
}

func (e *env) mounts() *mountTable {
	return &mountTable{dir: filepath.Join(e.root, mntDir)}
}

// path is where layer id is bind-mounted.
func (m *mountTable) path(id string) string { return filepath.Join(m.dir, id) }

func (m *mountTable) refPath(id string) string { return filepath.Join(m.dir, ".refs", id) }

// lock serialises CLI processes working on the table.
func (m *mountTable) lock() (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Join(m.dir, ".refs"), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(m.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// read returns id's record; a missing one is a zero count.
func (m *mountTable) read(id string) (mountRecord, error) {
	var r mountRecord
	data, err := os.ReadFile(m.refPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("mount record %s: %w", m.refPath(id), err)
	}
	return r, nil
}

func (m *mountTable) write(id string, r mountRecord) error {
	if r.Count <= 0 {
		err := os.Remove(m.refPath(id))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(m.refPath(id), data, 0o600)
}

// mounted reports whether id's bind mount is in place.
func (m *mountTable) mounted(id string) (bool, error) {
	ok, err := mount.IsMountPoint(m.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return ok, err
}

// count is the number of strata mount calls not yet matched by umount, or
// 1 for a bind mount left without a record by an interrupted command.
func (m *mountTable) count(id string) (int, error) {
	if _, err := os.Stat(m.dir); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	unlock, err := m.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	return m.countLocked(id)
}

func (m *mountTable) countLocked(id string) (int, error) {
	r, err := m.read(id)
	if err != nil {
		return 0, err
	}
	ok, err := m.mounted(id)
	if err != nil {
		return 0, err
	}
	switch {
	case !ok:
		return 0, nil
	case r.Count < 1:
		return 1, nil
	}
	return r.Count, nil
}

// bind mounts src at id's path, read-only unless rw.
func (m *mountTable) bind(id, src string, rw bool) error {
	dst := m.path(id)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := mount.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if !rw {
		// A bind mount takes its read-only flag only on a remount.
		if err := mount.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return errors.Join(err, mount.Unmount(dst, 0))
		}
	}
	return nil
}

// unbind removes id's bind mount and its mount point.
func (m *mountTable) unbind(id string) error {
	dst := m.path(id)
	if err := unix.Unmount(dst, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: %w: a process is still using it", dst, driver.ErrLayerInUse)
		}
		return &os.PathError{Op: "unmount", Path: dst, Err: err}
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
