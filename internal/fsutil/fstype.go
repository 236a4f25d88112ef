package fsutil

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FSName names a statfs(2) f_type. ext2, ext3 and ext4 share one magic
// number, hence "extfs" (the name moby's Status uses too).
func FSName(magic int64) string {
	switch uint32(magic) {
	case unix.EXT4_SUPER_MAGIC:
		return "extfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.ECRYPTFS_SUPER_MAGIC:
		return "ecryptfs"
	case unix.SQUASHFS_MAGIC:
		return "squashfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.BCACHEFS_SUPER_MAGIC:
		return "bcachefs"
	case 0x61756673:
		return "aufs"
	case 0x2fc12fc1:
		return "zfs"
	case 0xff534d42, 0xfe534d42:
		return "cifs"
	}
	return fmt.Sprintf("unknown(%#x)", uint32(magic))
}

// BackingFS names the filesystem path lives on.
func BackingFS(path string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return FSName(st.Type), nil
}
