//go:build linux && cgo

package btrfs

// Quotas. Every subvolume gets a level-0 qgroup (0/<subvolume id>) from the
// kernel once quotas are on; a layer's size limit is that qgroup's
// exclusive limit, i.e. the data only this layer references: what it wrote
// itself, not what it shares with its parent snapshot.
//
// What qgroups cost (why they are off until a limit is asked for): with
// full accounting every transaction commit walks the back-references of
// each extent it changed to decide which qgroups share it, so writes,
// snapshot creation and especially subvolume deletion get slower as the
// number of snapshots sharing extents grows; deleting a big snapshot can
// make the kernel mark the numbers inconsistent and need a rescan. Simple
// quotas (quota=simple, Linux 6.7+) charge an extent to the subvolume that
// allocated it and skip the walks, at the price of not moving charges when
// the owner is deleted.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// quotaEnabled reports whether quotas are on for the filesystem of f: the
// quota tree exists and holds its status item.
func quotaEnabled(f *os.File) (bool, error) {
	found := false
	err := treeSearch(f, searchKey{
		TreeID:  quotaTreeID,
		MinType: keyQgroupStat, MaxType: keyQgroupStat,
		MaxOffset: ^uint64(0), MaxTransid: ^uint64(0),
	}, func(it item) error {
		if it.Type == keyQgroupStat {
			found = true
		}
		return nil
	})
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return found, err
}

// enableQuota turns quotas on and waits for the initial rescan, which
// creates the qgroups of the subvolumes that already exist.
func enableQuota(f *os.File, simple bool) error {
	args := [2]uint64{quotaCtlEnable, 0}
	if simple {
		args[0] = quotaCtlEnableSimple
	}
	if err := ioctl(f.Fd(), iocQuotaCtl, unsafe.Pointer(&args[0])); err != nil {
		if simple && errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("enable simple quotas (needs Linux 6.7+): %w", err)
		}
		return fmt.Errorf("enable quotas: %w", err)
	}
	if err := ioctl(f.Fd(), iocRescanWait, nil); err != nil && !errors.Is(err, unix.ENOTCONN) {
		return fmt.Errorf("wait for quota rescan: %w", err)
	}
	return nil
}

// qgroupCreate makes the level-0 qgroup of subvolume id. The kernel makes
// it itself for subvolumes created while quotas are on, hence EEXIST is
// fine.
func qgroupCreate(f *os.File, id uint64) error {
	args := [2]uint64{1, id}
	if err := ioctl(f.Fd(), iocQgroupCreate, unsafe.Pointer(&args[0])); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create qgroup 0/%d: %w", id, err)
	}
	return nil
}

// qgroupDestroy removes the qgroup of a deleted subvolume, which the
// kernel would otherwise keep. It fails with EBUSY while the cleaner has
// not yet dropped the subvolume's tree; the sweep at New retries.
func qgroupDestroy(f *os.File, id uint64) error {
	args := [2]uint64{0, id}
	err := ioctl(f.Fd(), iocQgroupCreate, unsafe.Pointer(&args[0]))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("destroy qgroup 0/%d: %w", id, err)
	}
	return nil
}

// qgroupLimit sets the exclusive-bytes limit of subvolume id (0: none).
// The kernel makes the level-0 qgroup itself when quotas are enabled and
// for each subvolume created after; only if it is missing do we create it
// (recent kernels refuse to create one that is not missing, with EINVAL).
func qgroupLimit(f *os.File, id uint64, maxExcl int64) error {
	var args [6]uint64 // qgroupid, flags, max_rfer, max_excl, rsv_rfer, rsv_excl
	args[0] = id
	args[1] = qgroupLimitMaxExcl
	args[3] = uint64(maxExcl)
	if maxExcl == 0 {
		args[3] = ^uint64(0) // the kernel reads all-ones as "no limit"
	}
	err := ioctl(f.Fd(), iocQgroupLimit, unsafe.Pointer(&args[0]))
	if errors.Is(err, unix.ENOENT) {
		if err = qgroupCreate(f, id); err == nil {
			err = ioctl(f.Fd(), iocQgroupLimit, unsafe.Pointer(&args[0]))
		}
	}
	if err != nil {
		return fmt.Errorf("limit qgroup 0/%d: %w", id, err)
	}
	return nil
}

// qgroupUsage is a level-0 qgroup's counters.
type qgroupUsage struct {
	Referenced, Exclusive uint64
	MaxExcl               uint64 // 0: no limit
}

// qgroups reads the counters of every level-0 qgroup from the quota tree.
// The kernel updates them at transaction commit, so callers that need
// fresh numbers sync first.
func qgroups(f *os.File) (map[uint64]qgroupUsage, error) {
	out := map[uint64]qgroupUsage{}
	err := treeSearch(f, searchKey{
		TreeID:  quotaTreeID,
		MinType: keyQgroupInfo, MaxType: keyQgroupLimit,
		MaxOffset: 1<<48 - 1, MaxTransid: ^uint64(0),
	}, func(it item) error {
		u := out[it.Offset]
		le := binary.LittleEndian
		switch {
		case it.Type == keyQgroupInfo && len(it.Data) >= 40:
			u.Referenced = le.Uint64(it.Data[8:])
			u.Exclusive = le.Uint64(it.Data[24:])
		case it.Type == keyQgroupLimit && len(it.Data) >= 40:
			if le.Uint64(it.Data)&qgroupLimitMaxExcl != 0 && le.Uint64(it.Data[16:]) != ^uint64(0) {
				u.MaxExcl = le.Uint64(it.Data[16:])
			}
		default:
			return nil
		}
		out[it.Offset] = u
		return nil
	})
	if errors.Is(err, unix.ENOENT) {
		return out, nil
	}
	return out, err
}

// syncFS commits the current transaction so qgroup numbers are current.
func syncFS(f *os.File) error {
	return unix.Syncfs(int(f.Fd()))
}

// subvolExists reports whether subvolume id has a root item.
func subvolExists(f *os.File, id uint64) (bool, error) {
	found := false
	err := treeSearch(f, searchKey{
		TreeID:      rootTreeID,
		MinObjectID: id, MaxObjID: id,
		MinType: keyRootItem, MaxType: keyRootItem,
		MaxOffset: ^uint64(0), MaxTransid: ^uint64(0),
	}, func(it item) error {
		if it.Type == keyRootItem {
			found = true
		}
		return nil
	})
	return found, err
}

// sweepQgroups destroys level-0 qgroups whose subvolume is gone: kernels
// before 6.10 keep them forever, and a crash can leave ours behind.
func sweepQgroups(f *os.File) error {
	qg, err := qgroups(f)
	if err != nil {
		return err
	}
	for id := range qg {
		if id < firstFreeID {
			continue
		}
		ok, err := subvolExists(f, id)
		if err != nil {
			return err
		}
		if !ok {
			if err := qgroupDestroy(f, id); err != nil && !errors.Is(err, unix.EBUSY) {
				return err
			}
		}
	}
	return nil
}
