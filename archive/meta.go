package archive

import (
	"archive/tar"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// meta is what a layer keeps of one file, read without following symlinks.
type meta struct {
	st     unix.Stat_t
	link   string  // symlink target
	xattrs []xattr // sorted by name, overlay's own included
}

type xattr struct{ name, value string }

func (m *meta) typ() uint32  { return m.st.Mode & unix.S_IFMT }
func (m *meta) isDir() bool  { return m.typ() == unix.S_IFDIR }
func (m *meta) perm() uint32 { return m.st.Mode & 0o7777 }

func (m *meta) mtime() time.Time { return time.Unix(m.st.Mtim.Sec, m.st.Mtim.Nsec) }

// isWhiteoutDevice says whether the file is overlay's deletion marker.
func (m *meta) isWhiteoutDevice() bool {
	return m.typ() == unix.S_IFCHR && m.st.Rdev == 0
}

func (m *meta) xattr(name string) (string, bool) {
	i, ok := slices.BinarySearchFunc(m.xattrs, name, func(x xattr, n string) int { return strings.Compare(x.name, n) })
	if !ok {
		return "", false
	}
	return m.xattrs[i].value, true
}

func readXattrs(p string, buf []byte) ([]xattr, error) {
	n, err := unix.Llistxattr(p, buf)
	if err == unix.ERANGE {
		sz, err2 := unix.Llistxattr(p, nil)
		if err2 != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err2}
		}
		buf = make([]byte, sz)
		n, err = unix.Llistxattr(p, buf)
	}
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	var out []xattr
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v, err := getXattr(p, name)
		if err == unix.ENODATA {
			continue // removed since the listing
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		out = append(out, xattr{name, v})
	}
	slices.SortFunc(out, func(a, b xattr) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func getXattr(p, name string) (string, error) {
	v := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, v)
		if err == unix.ERANGE {
			sz, err := unix.Lgetxattr(p, name, nil)
			if err != nil {
				return "", err
			}
			v = make([]byte, sz)
			continue
		}
		if err != nil {
			return "", err
		}
		return string(v[:n]), nil
	}
}

// header builds the deterministic tar header of m named name: numeric
// owner only, mtime with nanoseconds, no atime/ctime, PAX format, and no
// overlay xattrs (they describe the backend, not the layer). Sockets have
// no place in a layer (GNU tar skips them too): the header is nil.
func (m *meta) header(name string) (*tar.Header, error) {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(m.perm()),
		Uid:     int(m.st.Uid),
		Gid:     int(m.st.Gid),
		ModTime: m.mtime(),
		Format:  tar.FormatPAX,
	}
	switch m.typ() {
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = m.st.Size
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = m.link
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if m.typ() == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(m.st.Rdev))
		hdr.Devminor = int64(unix.Minor(m.st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFSOCK:
		return nil, nil
	default:
		return nil, fmt.Errorf("%s: unknown file type %#o", name, m.typ())
	}
	for _, x := range m.xattrs {
		if isOverlayXattr(x.name) {
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[paxXattr+x.name] = x.value
	}
	return hdr, nil
}
