// Package layergen makes OCI layer tars for tests and benchmarks: small
// hand-written ones from a list of entries, a realistic deterministic
// base layer of any size (streamed, never held in memory) and a corpus of
// hostile tars that a safe extractor must refuse or contain.
package layergen

import (
	"archive/tar"
	"bytes"
	"io"
	"time"
)

// DefaultTime is the mtime of entries that do not set one; it has
// nanoseconds so that tests notice a writer or reader that drops them.
func DefaultTime() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC) }

// Entry is one tar entry for Tar/WriteTar.
type Entry struct {
	Name string
	// Type is a tar typeflag; 0 means a regular file.
	Type byte
	// Mode 0 means 0644 for files and 0755 for directories.
	Mode     int64
	UID, GID int
	Content  []byte
	// Size, when larger than len(Content), is what the header claims:
	// the stream then ends early (a truncated tar).
	Size         int64
	Link         string // symlink or hardlink target
	Major, Minor int64
	ModTime      time.Time // zero means DefaultTime()
	Xattrs       map[string]string
	PAX          map[string]string // extra PAX records
}

// File, Dir, Symlink, Hardlink and Whiteout are shorthands for common entries.
func File(name, content string) Entry { return Entry{Name: name, Content: []byte(content)} }
func Dir(name string) Entry           { return Entry{Name: name, Type: tar.TypeDir} }
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Link: target, Mode: 0o777}
}
func Hardlink(name, target string) Entry { return Entry{Name: name, Type: tar.TypeLink, Link: target} }

// Whiteout is the OCI deletion marker for name ("dir/x" gives "dir/.wh.x").
func Whiteout(name string) Entry {
	dir, base := "", name
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			dir, base = name[:i+1], name[i+1:]
			break
		}
	}
	return Entry{Name: dir + ".wh." + base, Mode: 0o600}
}

// Opaque is the OCI opaque marker of directory dir ("" for the root).
func Opaque(dir string) Entry {
	if dir != "" {
		dir += "/"
	}
	return Entry{Name: dir + ".wh..wh..opq", Mode: 0o600}
}

// Tar returns the tar of entries. A truncated entry (Size beyond
// Content) ends the tar right there.
func Tar(entries ...Entry) []byte {
	var b bytes.Buffer
	_ = WriteTar(&b, entries...)
	return b.Bytes()
}

// WriteTar writes entries as a PAX tar. It stops after a truncated entry
// without writing the end-of-archive blocks.
func WriteTar(w io.Writer, entries ...Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := e.header()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if len(e.Content) > 0 {
			if _, err := tw.Write(e.Content); err != nil {
				return err
			}
		}
		if hdr.Size > int64(len(e.Content)) {
			return nil // truncated on purpose: the header went out, the rest does not
		}
	}
	return tw.Close()
}

func (e Entry) header() *tar.Header {
	typ := e.Type
	if typ == 0 {
		typ = tar.TypeReg
	}
	mode := e.Mode
	if mode == 0 {
		mode = 0o644
		if typ == tar.TypeDir {
			mode = 0o755
		}
	}
	mt := e.ModTime
	if mt.IsZero() {
		mt = DefaultTime()
	}
	size := int64(len(e.Content))
	if e.Size > size {
		size = e.Size
	}
	hdr := &tar.Header{
		Typeflag: typ,
		Name:     e.Name,
		Linkname: e.Link,
		Mode:     mode,
		Uid:      e.UID,
		Gid:      e.GID,
		ModTime:  mt,
		Devmajor: e.Major,
		Devminor: e.Minor,
		Format:   tar.FormatPAX,
	}
	if typ == tar.TypeReg || typ == tar.TypeCont {
		hdr.Size = size
	}
	for k, v := range e.Xattrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = v
	}
	for k, v := range e.PAX {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[k] = v
	}
	return hdr
}
