//go:build linux && cgo

package btrfs

// Raw btrfs ioctls for what github.com/containerd/btrfs/v2 does not offer
// (tree search, quotas, subvolume flags, deletion without a full walk).
// Layouts are the kernel ABI of include/uapi/linux/btrfs.h and
// btrfs_tree.h; they are written out here rather than taken through cgo
// because Debian's headers predate parts of it (simple quotas) and the
// on-disk items are packed structs that cgo cannot express.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	iocSync          = 0x9408
	iocSnapDestroy   = 0x5000940f
	iocTreeSearchV2  = 0xc0709411
	iocInoLookup     = 0xd0009412
	iocSubvolGetFlag = 0x80089419
	iocSubvolSetFlag = 0x4008941a
	iocQuotaCtl      = 0xc0109428
	iocQgroupCreate  = 0x4010942a
	iocQgroupLimit   = 0x8030942b
	iocRescanWait    = 0x942e
	iocGetSubvolInfo = 0x81f8943c

	subvolRdonly = 1 << 1

	quotaCtlEnable       = 1
	quotaCtlEnableSimple = 4 // Linux 6.7+
	qgroupLimitMaxExcl   = 1 << 1

	// Tree IDs and item key types (btrfs_tree.h).
	rootTreeID  = 1
	quotaTreeID = 8
	firstFreeID = 256 // the root directory inode of every subvolume

	keyInodeItem   = 1
	keyInodeRef    = 12
	keyInodeExtref = 13
	keyExtentData  = 108
	keyRootItem    = 132
	keyRootRef     = 156
	keyQgroupStat  = 240
	keyQgroupInfo  = 242
	keyQgroupLimit = 244

	fileExtentInline = 0

	volNameMax = 4087 // BTRFS_PATH_NAME_MAX
)

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// openDir opens a directory for ioctls; the caller closes it.
func openDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// searchKey is struct btrfs_ioctl_search_key.
type searchKey struct {
	TreeID                 uint64
	MinObjectID, MaxObjID  uint64
	MinOffset, MaxOffset   uint64
	MinTransid, MaxTransid uint64
	MinType, MaxType       uint32
	NrItems                uint32
	_                      uint32
	_                      [4]uint64
}

// item is one search result: its key, the transid of the leaf it lives in
// and its raw bytes (valid until the next search call).
type item struct {
	Transid  uint64
	ObjectID uint64
	Offset   uint64
	Type     uint32
	Data     []byte
}

const searchBuf = 256 << 10

// treeSearch walks the items between the key bounds of k (inclusive, in
// key order), calling fn for each. It uses TREE_SEARCH_V2 with a large
// buffer: a diff of a big layer then costs a few syscalls, not thousands.
// min_transid only skips tree blocks older than it; the items of a newer
// leaf all come back, whatever their own age.
func treeSearch(f *os.File, k searchKey, fn func(it item) error) error {
	return treeSearchBuf(f, k, nil, fn)
}

// treeSearchBuf is treeSearch with a buffer the caller keeps across many
// small lookups (*bufp nil: a fresh one of the usual size is made). The
// buffer grows when one item does not fit.
func treeSearchBuf(f *os.File, k searchKey, bufp *[]byte, fn func(it item) error) error {
	var buf []byte
	if bufp != nil {
		buf = *bufp
	}
	if len(buf) <= 112 {
		buf = make([]byte, 112+searchBuf)
	}
	for {
		k.NrItems = 1 << 30
		*(*searchKey)(unsafe.Pointer(&buf[0])) = k
		binary.NativeEndian.PutUint64(buf[104:], uint64(len(buf)-112))
		err := ioctl(f.Fd(), iocTreeSearchV2, unsafe.Pointer(&buf[0]))
		if errors.Is(err, unix.EOVERFLOW) {
			// Not even one item fitted; the kernel says how much it needs.
			need := max(binary.NativeEndian.Uint64(buf[104:]), 2*uint64(len(buf)-112))
			buf = make([]byte, 112+need)
			if bufp != nil {
				*bufp = buf
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("tree search (tree %d): %w", k.TreeID, err)
		}
		n := (*searchKey)(unsafe.Pointer(&buf[0])).NrItems
		if n == 0 {
			return nil
		}
		data := buf[112:]
		var last item
		for i := uint32(0); i < n; i++ {
			h := data[:32]
			l := binary.NativeEndian.Uint32(h[28:])
			last = item{
				Transid:  binary.NativeEndian.Uint64(h[0:]),
				ObjectID: binary.NativeEndian.Uint64(h[8:]),
				Offset:   binary.NativeEndian.Uint64(h[16:]),
				Type:     binary.NativeEndian.Uint32(h[24:]),
				Data:     data[32 : 32+l],
			}
			data = data[32+l:]
			if err := fn(last); err != nil {
				return err
			}
		}
		// Continue just past the last key returned.
		k.MinObjectID, k.MinType, k.MinOffset = last.ObjectID, last.Type, last.Offset
		switch {
		case k.MinOffset < ^uint64(0):
			k.MinOffset++
		case k.MinType < 255:
			k.MinType++
			k.MinOffset = 0
		case k.MinObjectID < ^uint64(0):
			k.MinObjectID++
			k.MinType, k.MinOffset = 0, 0
		default:
			return nil
		}
		if k.MinObjectID > k.MaxObjID {
			return nil
		}
	}
}

// subvolInfo is the part of struct btrfs_ioctl_get_subvol_info_args we use.
type subvolInfo struct {
	TreeID     uint64
	Generation uint64 // last transaction that changed the subvolume's tree
	Flags      uint64
	Otransid   uint64 // transaction that created it (snapshot time)
}

func getSubvolInfo(f *os.File) (subvolInfo, error) {
	var buf [504]byte
	if err := ioctl(f.Fd(), iocGetSubvolInfo, unsafe.Pointer(&buf[0])); err != nil {
		return subvolInfo{}, fmt.Errorf("GET_SUBVOL_INFO: %w", err)
	}
	le := binary.NativeEndian
	return subvolInfo{
		TreeID:     le.Uint64(buf[0:]),
		Generation: le.Uint64(buf[280:]),
		Flags:      le.Uint64(buf[288:]),
		Otransid:   le.Uint64(buf[352:]),
	}, nil
}

func subvolInfoPath(path string) (subvolInfo, error) {
	f, err := openDir(path)
	if err != nil {
		return subvolInfo{}, err
	}
	defer f.Close()
	return getSubvolInfo(f)
}

// setReadOnly sets or clears a subvolume's read-only flag.
func setReadOnly(path string, ro bool) error {
	f, err := openDir(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var flags uint64
	if err := ioctl(f.Fd(), iocSubvolGetFlag, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("SUBVOL_GETFLAGS %s: %w", path, err)
	}
	if (flags&subvolRdonly != 0) == ro {
		return nil
	}
	flags ^= subvolRdonly
	if err := ioctl(f.Fd(), iocSubvolSetFlag, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("SUBVOL_SETFLAGS %s: %w", path, err)
	}
	return nil
}

// inoLookup returns the path of directory ino inside subvolume tree
// (0: the subvolume f is in), relative to its root, with a trailing slash
// ("" for the root itself).
func inoLookup(f *os.File, tree, ino uint64) (string, error) {
	var buf [4096]byte
	binary.NativeEndian.PutUint64(buf[0:], tree)
	binary.NativeEndian.PutUint64(buf[8:], ino)
	if err := ioctl(f.Fd(), iocInoLookup, unsafe.Pointer(&buf[0])); err != nil {
		return "", fmt.Errorf("INO_LOOKUP %d: %w", ino, err)
	}
	name := buf[16:]
	for i, c := range name {
		if c == 0 {
			return string(name[:i]), nil
		}
	}
	return string(name), nil
}

// snapDestroy deletes the subvolume name inside the directory dir.
func snapDestroy(dir *os.File, name string) error {
	if len(name) > volNameMax {
		return fmt.Errorf("subvolume name %q too long", name)
	}
	var buf [4096]byte
	copy(buf[8:], name)
	if err := ioctl(dir.Fd(), iocSnapDestroy, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("SNAP_DESTROY %s: %w", name, err)
	}
	return nil
}
