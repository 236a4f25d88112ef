// Package fstree snapshots a directory tree with everything a layer
// promises to keep (content, type, mode, owner, xattrs, symlink targets,
// device numbers, hardlink groups, mtimes) and reports every difference
// between two snapshots at once, the way fstest.TestFS reports every fault.
package fstree

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is one file of a tree.
type Entry struct {
	Path   string      // slash-rooted: "/", "/etc", "/etc/passwd"
	Type   fs.FileMode // fs.ModeDir, fs.ModeSymlink, ... or 0 for a regular file
	Mode   fs.FileMode // permission bits plus setuid, setgid, sticky
	UID    uint32
	GID    uint32
	Size   int64
	Digest string // sha256 of a regular file's content
	Link   string // symlink target
	Rdev   uint64 // device number of char/block devices
	Xattrs map[string]string
	Mtime  time.Time
	Nlink  uint64
	ino    uint64
}

// Tree is a snapshot of a directory.
type Tree struct {
	Root    string
	Entries map[string]*Entry
}

// Snapshot reads dir recursively. It does not follow symlinks.
func Snapshot(dir string) (*Tree, error) {
	t := &Tree{Root: dir, Entries: map[string]*Entry{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := "/"
		if rel != "." {
			name = "/" + filepath.ToSlash(rel)
		}
		e, err := readEntry(p, name)
		if err != nil {
			return err
		}
		t.Entries[name] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fstree: snapshot %s: %w", dir, err)
	}
	return t, nil
}

func readEntry(p, name string) (*Entry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	e := &Entry{
		Path:  name,
		Mode:  fs.FileMode(st.Mode & 0o777),
		UID:   st.Uid,
		GID:   st.Gid,
		Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Nlink: uint64(st.Nlink),
		ino:   st.Ino,
	}
	if st.Mode&unix.S_ISUID != 0 {
		e.Mode |= fs.ModeSetuid
	}
	if st.Mode&unix.S_ISGID != 0 {
		e.Mode |= fs.ModeSetgid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		e.Mode |= fs.ModeSticky
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Size = st.Size
		d, err := digest(p)
		if err != nil {
			return nil, err
		}
		e.Digest = d
	case unix.S_IFDIR:
		e.Type = fs.ModeDir
	case unix.S_IFLNK:
		e.Type = fs.ModeSymlink
		l, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		e.Link = l
	case unix.S_IFCHR:
		e.Type = fs.ModeDevice | fs.ModeCharDevice
		e.Rdev = st.Rdev
	case unix.S_IFBLK:
		e.Type = fs.ModeDevice
		e.Rdev = st.Rdev
	case unix.S_IFIFO:
		e.Type = fs.ModeNamedPipe
	case unix.S_IFSOCK:
		e.Type = fs.ModeSocket
	}
	x, err := xattrs(p)
	if err != nil {
		return nil, err
	}
	e.Xattrs = x
	return e, nil
}

func digest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err}
		}
		buf = buf[:n]
		break
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 256)
		for {
			n, err := unix.Lgetxattr(p, name, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, len(val)*4)
				continue
			}
			if errors.Is(err, unix.ENODATA) {
				val = nil
				break
			}
			if err != nil {
				return nil, &os.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
			}
			val = val[:n]
			break
		}
		if val == nil {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(val)
	}
	return out, nil
}

// Options say what Diff compares.
type Options struct {
	// MtimePrecision rounds mtimes down before comparing them; 0 compares
	// them exactly and a negative value ignores them.
	MtimePrecision time.Duration
	// IgnoreDirMtimes skips the mtimes of directories.
	IgnoreDirMtimes bool
	// IgnoreRoot skips the metadata of the root directory itself.
	IgnoreRoot bool
	// IgnoreXattrPrefixes names xattr prefixes left out of the comparison
	// (e.g. "trusted.overlay." for a backend's own bookkeeping).
	IgnoreXattrPrefixes []string
	// Ignore leaves out a path (and, for a directory, everything below).
	Ignore func(path string) bool
}

// Paths returns the tree's paths in sorted order.
func (t *Tree) Paths() []string {
	ps := make([]string, 0, len(t.Entries))
	for p := range t.Entries {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Diff lists every difference between want and got; nil means equal.
func Diff(want, got *Tree, opts Options) []string {
	var out []string
	ignored := func(p string) bool {
		if opts.Ignore == nil {
			return false
		}
		for q := p; ; q = path.Dir(q) {
			if opts.Ignore(q) {
				return true
			}
			if q == "/" {
				return false
			}
		}
	}
	for _, p := range want.Paths() {
		if ignored(p) {
			continue
		}
		w := want.Entries[p]
		g, ok := got.Entries[p]
		if !ok {
			out = append(out, fmt.Sprintf("%s: missing (want %s)", p, w.describe()))
			continue
		}
		if p == "/" && opts.IgnoreRoot {
			continue
		}
		out = append(out, compare(w, g, opts)...)
		out = append(out, compareLinks(want, got, w, g)...)
	}
	for _, p := range got.Paths() {
		if ignored(p) {
			continue
		}
		if _, ok := want.Entries[p]; !ok {
			out = append(out, fmt.Sprintf("%s: unexpected %s", p, got.Entries[p].describe()))
		}
	}
	return out
}

func compare(w, g *Entry, opts Options) []string {
	var out []string
	add := func(what string, wv, gv any) {
		out = append(out, fmt.Sprintf("%s: %s: want %v, got %v", w.Path, what, wv, gv))
	}
	if w.Type != g.Type {
		add("type", typeName(w.Type), typeName(g.Type))
		return out
	}
	if w.Mode != g.Mode {
		add("mode", w.Mode, g.Mode)
	}
	if w.UID != g.UID || w.GID != g.GID {
		add("owner", fmt.Sprintf("%d:%d", w.UID, w.GID), fmt.Sprintf("%d:%d", g.UID, g.GID))
	}
	if w.Size != g.Size {
		add("size", w.Size, g.Size)
	}
	if w.Digest != g.Digest {
		add("content sha256", short(w.Digest), short(g.Digest))
	}
	if w.Link != g.Link {
		add("symlink target", w.Link, g.Link)
	}
	if w.Rdev != g.Rdev {
		add("rdev", fmt.Sprintf("%d:%d", unix.Major(w.Rdev), unix.Minor(w.Rdev)), fmt.Sprintf("%d:%d", unix.Major(g.Rdev), unix.Minor(g.Rdev)))
	}
	wx, gx := filterXattrs(w.Xattrs, opts), filterXattrs(g.Xattrs, opts)
	if wx != gx {
		add("xattrs", wx, gx)
	}
	if opts.MtimePrecision >= 0 && !(w.Type == fs.ModeDir && opts.IgnoreDirMtimes) {
		wm, gm := w.Mtime, g.Mtime
		if opts.MtimePrecision > 0 {
			wm, gm = wm.Truncate(opts.MtimePrecision), gm.Truncate(opts.MtimePrecision)
		}
		if !wm.Equal(gm) {
			add("mtime", w.Mtime.UTC().Format(time.RFC3339Nano), g.Mtime.UTC().Format(time.RFC3339Nano))
		}
	}
	return out
}

// compareLinks checks that w and g share their inode with the same paths
// in their trees: hardlink groups, not raw link counts, which depend on
// links outside the compared tree.
func compareLinks(want, got *Tree, w, g *Entry) []string {
	if w.Type == fs.ModeDir {
		return nil
	}
	wl, gl := want.linksOf(w), got.linksOf(g)
	if strings.Join(wl, ",") != strings.Join(gl, ",") {
		return []string{fmt.Sprintf("%s: hardlinked with: want %v, got %v", w.Path, wl, gl)}
	}
	return nil
}

func (t *Tree) linksOf(e *Entry) []string {
	if e.Nlink < 2 {
		return nil
	}
	var out []string
	for p, o := range t.Entries {
		if o != e && o.ino == e.ino && o.Type == e.Type && o.Type != fs.ModeDir {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func filterXattrs(x map[string]string, opts Options) string {
	keys := make([]string, 0, len(x))
next:
	for k := range x {
		for _, pre := range opts.IgnoreXattrPrefixes {
			if strings.HasPrefix(k, pre) {
				continue next
			}
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q;", k, x[k])
	}
	return b.String()
}

func (e *Entry) describe() string {
	s := typeName(e.Type) + " " + e.Mode.String()
	switch {
	case e.Type == 0:
		s += fmt.Sprintf(" %d bytes", e.Size)
	case e.Type == fs.ModeSymlink:
		s += " -> " + e.Link
	}
	return s
}

func typeName(t fs.FileMode) string {
	switch t {
	case 0:
		return "file"
	case fs.ModeDir:
		return "dir"
	case fs.ModeSymlink:
		return "symlink"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "chardev"
	case fs.ModeDevice:
		return "blockdev"
	case fs.ModeNamedPipe:
		return "fifo"
	case fs.ModeSocket:
		return "socket"
	}
	return t.String()
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// Dump writes one line per entry, for test failure output.
func (t *Tree) Dump(w io.Writer) {
	for _, p := range t.Paths() {
		e := t.Entries[p]
		fmt.Fprintf(w, "%s %s %d:%d %s", p, e.describe(), e.UID, e.GID, e.Mtime.UTC().Format(time.RFC3339Nano))
		if len(e.Xattrs) > 0 {
			fmt.Fprintf(w, " xattrs=%s", filterXattrs(e.Xattrs, Options{}))
		}
		if e.Nlink > 1 && e.Type != fs.ModeDir {
			fmt.Fprintf(w, " nlink=%d", e.Nlink)
		}
		fmt.Fprintln(w)
	}
}
