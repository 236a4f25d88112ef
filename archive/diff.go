package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DiffOptions are the options of WriteDir.
type DiffOptions struct {
	Whiteouts WhiteoutFormat
}

// WriteChanges writes changes as an OCI layer tar to w, taking content
// from dir. Output is deterministic: entries come in path-component order
// whatever the order of changes. Every changed path is preceded by its
// parent directories (as they are in dir), so that applying the tar gives
// them back their mode, owner and mtime, which a change below alters.
// Deletions become .wh.NAME entries.
func WriteChanges(ctx context.Context, w io.Writer, dir string, changes []Change) error {
	if err := isDir(dir); err != nil {
		return err
	}
	v, err := OpenView(dir)
	if err != nil {
		return err
	}
	defer v.Close()
	ch := slices.Clone(changes)
	sortChanges(ch)
	tw := newTarWriter(w, v)
	for _, c := range ch {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := strings.Trim(filepath.ToSlash(filepath.Clean("/"+c.Path)), "/")
		if rel == "" {
			continue // the layer root is not part of a layer
		}
		parent, base := splitName(rel)
		if err := tw.parents(parent); err != nil {
			return err
		}
		if c.Kind == ChangeDelete {
			if err := tw.marker(parent, WhiteoutPrefix+base); err != nil {
				return err
			}
			continue
		}
		m, err := v.meta(rel, tw.xbuf)
		if err != nil {
			return err
		}
		if err := tw.entry(rel, m); err != nil {
			return err
		}
	}
	return tw.close()
}

// WriteDir writes the whole tree under dir as an OCI layer tar. With an
// overlay format, whiteout devices and opaque xattrs become .wh. entries
// and overlay's own xattrs are left out. The root directory itself is not
// written (a layer does not carry the metadata of /), nor are sockets.
// Sparse files are written as regular files, holes as zeros (the tar
// sparse formats are not produced); Apply turns zero runs back into holes.
func WriteDir(ctx context.Context, w io.Writer, dir string, opts DiffOptions) error {
	if err := isDir(dir); err != nil {
		return err
	}
	v, err := OpenView(dir)
	if err != nil {
		return err
	}
	defer v.Close()
	tw := newTarWriter(w, v)
	tw.format = opts.Whiteouts
	if err := tw.walk(ctx, ""); err != nil {
		return err
	}
	return tw.close()
}

type inode struct{ dev, ino uint64 }

type tarWriter struct {
	tw *tar.Writer
	// v is the tree read: every path is resolved in it, never followed.
	v      *View
	format WhiteoutFormat
	buf    []byte // the one content buffer
	xbuf   []byte
	// links maps each multiply-linked inode to the first name written.
	links map[inode]string
	// done holds directories already written, for WriteChanges' parents.
	done map[string]bool
}

func newTarWriter(w io.Writer, v *View) *tarWriter {
	return &tarWriter{
		tw:    tar.NewWriter(w),
		v:     v,
		buf:   make([]byte, copyBufSize),
		xbuf:  make([]byte, 4096),
		links: map[inode]string{},
		done:  map[string]bool{},
	}
}

func (t *tarWriter) close() error { return t.tw.Close() }

// parents writes the directories leading to p that are not written yet.
func (t *tarWriter) parents(p string) error {
	if p == "" || t.done[p] {
		return nil
	}
	parent, _ := splitName(p)
	if err := t.parents(parent); err != nil {
		return err
	}
	m, err := t.v.meta(p, t.xbuf)
	if err != nil {
		return err
	}
	if !m.isDir() {
		return fmt.Errorf("%s: parent of a change is not a directory", filepath.Join(t.v.dir, p))
	}
	return t.entry(p, m)
}

func (t *tarWriter) walk(ctx context.Context, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	names, err := t.v.list(rel)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := n
		if rel != "" {
			p = rel + "/" + n
		}
		m, err := t.v.meta(p, t.xbuf)
		if err != nil {
			return err
		}
		if t.format != OCIWhiteouts && m.isWhiteoutDevice() {
			if err := t.marker(rel, WhiteoutPrefix+n); err != nil {
				return err
			}
			continue
		}
		if err := t.entry(p, m); err != nil {
			return err
		}
		if !m.isDir() {
			continue
		}
		if x := t.format.OpaqueXattr(); x != "" {
			if v, ok := m.xattr(x); ok && v == "y" {
				if err := t.marker(p, WhiteoutOpaque); err != nil {
					return err
				}
			}
		}
		if err := t.walk(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// marker writes an empty whiteout entry; its fixed mtime keeps the
// output deterministic.
func (t *tarWriter) marker(dir, name string) error {
	if dir != "" {
		name = dir + "/" + name
	}
	return t.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	})
}

// entry writes one file: a hardlink entry if its inode was written before
// under another name, else its header and content.
func (t *tarWriter) entry(rel string, m *meta) error {
	hdr, err := m.header(rel)
	if err != nil || hdr == nil {
		return err
	}
	if m.isDir() {
		t.done[rel] = true
	} else if m.st.Nlink > 1 {
		key := inode{m.st.Dev, m.st.Ino}
		if first, ok := t.links[key]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			hdr.PAXRecords = nil
			return t.tw.WriteHeader(hdr)
		}
		t.links[key] = rel
	}
	if hdr.Typeflag != tar.TypeReg {
		return t.tw.WriteHeader(hdr)
	}
	p := filepath.Join(t.v.dir, rel)
	f, err := t.v.openFile(rel, &m.st)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := t.tw.WriteHeader(hdr); err != nil {
		return err
	}
	// The header promised Size bytes: a file that shrank or grew since
	// the lstat would make a corrupt tar, so that is an error.
	n, err := io.CopyBuffer(t.tw, io.LimitReader(onlyReader{f}, hdr.Size), t.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("%s: file shrank from %d to %d bytes while being written", p, hdr.Size, n)
	}
	return nil
}

// onlyReader hides os.File's WriteTo so io.CopyBuffer uses our buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// isDir checks a tree's root up front: the walks treat a missing
// subdirectory as empty, which must not hide a missing tree.
func isDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return &os.PathError{Op: "open", Path: dir, Err: unix.ENOTDIR}
	}
	return nil
}
