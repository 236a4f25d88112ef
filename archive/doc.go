// Package archive reads and writes OCI layer tars.
//
// Apply unpacks a layer (plain, gzip or zstd) onto a directory; Changes
// compares two trees; WriteChanges and WriteDir write a layer from a
// list of changes or from a whole tree. Whiteouts come in two forms:
// the OCI one in tars (.wh.NAME, .wh..wh..opq) and, on disk for overlay,
// char 0/0 devices and an opaque xattr (see WhiteoutFormat).
//
// Security: Apply reaches the target only through a directory fd and
// resolves every parent with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS),
// then creates the last component relative to that parent without
// following it (mkdirat, openat O_EXCL|O_NOFOLLOW, symlinkat, linkat,
// mknodat). Symlinks in the layer, absolute ones included, resolve inside
// the target, so "/usr/bin/x -> /bin/x" works and "s -> /" cannot reach
// the host. Names that climb out with "..", hardlinks or whiteouts aimed
// outside, absurd sizes and names, unknown entry types and truncated
// streams are refused with an *EntryError naming the entry and wrapping
// ErrUnsafePath, ErrInvalidTar or ErrNotAllowed. A stream is whole only
// if archive/tar read its two end-of-archive blocks. Sparse entries cost
// time for their holes, not disk: the holes of a tar are bounded by
// ApplyOptions.MaxHoleBytes (ErrTooLarge past it).
//
// Diff side: Changes, WriteChanges and WriteDir read a tree that a running
// container may be changing. They go through a View: every path resolved
// beneath an fd of the root with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS), metadata read from the parent directory's fd, and
// a file's content read only if it is the inode that was stat'ed; a
// writer swapping a directory for a symlink to the host makes them fail,
// never read the host (CVE-2018-15664).
//
// Memory: content is streamed through one 1 MiB buffer each way; what
// grows with a layer is bookkeeping per entry (paths written, directory
// times, hardlinked inodes), never file content.
package archive
