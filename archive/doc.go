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
// ErrUnsafePath, ErrInvalidTar or ErrNotAllowed.
//
// Memory: content is streamed through one 1 MiB buffer each way; what
// grows with a layer is bookkeeping per entry (paths written, directory
// times, hardlinked inodes), never file content.
package archive
