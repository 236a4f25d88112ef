//go:build linux && cgo

package btrfs

// The fast diff. A child layer is a snapshot of its parent taken in
// transaction base; every inode the child changed since has an inode item
// whose transid is newer, and btrfs's tree search can skip every tree
// block older than that (as `btrfs subvolume find-new` does). So instead
// of comparing both trees file by file, we
//
//  1. list the child's inodes with transid > base,
//  2. resolve each to all its paths (INODE_REF/INODE_EXTREF items and
//     INO_LOOKUP for the directories),
//  3. for each changed directory that is the same directory in the parent
//     (same inode at the same path), compare its entry names with the
//     parent's: names only in the parent are deletions, names only in the
//     child are candidates,
//  4. for a directory that is new, moved or replaced, compare its whole
//     subtree with archive.Changes (the naive comparison), since files
//     inside it may be unchanged inodes at new paths,
//  5. decide each candidate with archive.Differs, the very test
//     archive.Changes applies, and sort as it does.
//
// An inode the child did not touch is shared with the parent, so it is
// identical at the same path; everything else is decided by the naive
// rules, hence the result equals archive.Changes(parent, child). Where the
// premise fails we return errNoFastDiff and the caller runs the naive
// diff: the parent changed after the snapshot (a writable parent), or
// either side holds nested subvolumes (their contents live in other
// trees).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/store"
)

var errNoFastDiff = errors.New("btrfs: fast diff not applicable")

// inode is what the scan learns about one changed inode.
type inode struct {
	gen      uint64 // transaction that created it
	transid  uint64 // last transaction that changed it
	mode     uint32
	raw      []byte // the inode item
	changed  bool   // its inode item is newer than base
	newBytes int64  // bytes of file extents written after base
}

// scanChanged reads the items of the subvolume at dir that live in tree
// blocks newer than base and returns the inodes changed after base; with
// extents, also the bytes of the data extents written after base.
//
// It commits the running transaction first (syncfs): btrfs keeps inode
// updates as delayed items in memory and writes file data lazily, and a
// tree search sees neither until they reach the tree. A commit with
// nothing dirty is cheap.
func scanChanged(ctx context.Context, dir string, base uint64, extents bool) (map[uint64]*inode, error) {
	f, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := syncFS(f); err != nil {
		return nil, err
	}
	return scanChangedFile(ctx, f, base, extents)
}

func scanChangedFile(ctx context.Context, f *os.File, base uint64, extents bool) (map[uint64]*inode, error) {
	maxType := uint32(keyInodeItem)
	if extents {
		maxType = keyExtentData
	}
	out := map[uint64]*inode{}
	get := func(ino uint64) *inode {
		in := out[ino]
		if in == nil {
			in = &inode{}
			out[ino] = in
		}
		return in
	}
	le := binary.LittleEndian
	n := 0
	err := treeSearch(f, searchKey{
		MinObjectID: firstFreeID, MaxObjID: ^uint64(0) - 256, // BTRFS_LAST_FREE_OBJECTID
		MinType: keyInodeItem, MaxType: maxType,
		MaxOffset:  ^uint64(0),
		MinTransid: base + 1, MaxTransid: ^uint64(0),
	}, func(it item) error {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		switch {
		case it.Type == keyInodeItem && len(it.Data) >= 160:
			if tr := le.Uint64(it.Data[8:]); tr > base {
				in := get(it.ObjectID)
				in.gen, in.transid, in.mode, in.changed = le.Uint64(it.Data), tr, le.Uint32(it.Data[52:]), true
				in.raw = append([]byte(nil), it.Data[:160]...)
			}
		case extents && it.Type == keyExtentData && len(it.Data) >= 21:
			if le.Uint64(it.Data) <= base {
				return nil
			}
			if it.Data[20] == fileExtentInline {
				get(it.ObjectID).newBytes += int64(len(it.Data) - 21)
			} else if len(it.Data) >= 53 && le.Uint64(it.Data[21:]) != 0 { // not a hole
				get(it.ObjectID).newBytes += int64(le.Uint64(it.Data[45:]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for ino, in := range out {
		if !in.changed && in.newBytes == 0 {
			delete(out, ino)
		}
	}
	return out, nil
}

// inodePaths returns every path of inode ino in the subvolume of f
// (relative, slash-separated, no leading slash), using dirs to cache
// directory lookups.
func inodePaths(f *os.File, ino uint64, dirs map[uint64]string, buf *[]byte) ([]string, error) {
	type ref struct {
		dir  uint64
		name string
	}
	var refs []ref
	le := binary.LittleEndian
	err := treeSearchBuf(f, searchKey{
		MinObjectID: ino, MaxObjID: ino,
		MinType: keyInodeRef, MaxType: keyInodeExtref,
		MaxOffset: ^uint64(0), MaxTransid: ^uint64(0),
	}, buf, func(it item) error {
		d := it.Data
		switch it.Type {
		case keyInodeRef: // {index u64, name_len u16, name}...
			for len(d) >= 10 {
				l := int(le.Uint16(d[8:]))
				if 10+l > len(d) {
					return fmt.Errorf("short INODE_REF of inode %d", ino)
				}
				refs = append(refs, ref{it.Offset, string(d[10 : 10+l])})
				d = d[10+l:]
			}
		case keyInodeExtref: // {parent u64, index u64, name_len u16, name}...
			for len(d) >= 18 {
				l := int(le.Uint16(d[16:]))
				if 18+l > len(d) {
					return fmt.Errorf("short INODE_EXTREF of inode %d", ino)
				}
				refs = append(refs, ref{le.Uint64(d), string(d[18 : 18+l])})
				d = d[18+l:]
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		dp, ok := dirs[r.dir]
		if !ok {
			if dp, err = inoLookup(f, 0, r.dir); err != nil {
				return nil, err
			}
			dirs[r.dir] = dp
		}
		out = append(out, dp+r.name)
	}
	return out, nil
}

// fastChanges computes archive.Changes(pdir, dir) from generation numbers,
// or returns errNoFastDiff when that would not be exact.
func fastChanges(ctx context.Context, pdir, dir string, rec store.Record) ([]driver.Change, error) {
	base, err := strconv.ParseUint(rec.Extra[extraBaseGen], 10, 64)
	if err != nil || base == 0 {
		return nil, errNoFastDiff
	}
	for _, d := range []string{pdir, dir} {
		kids, err := nestedSubvols(d)
		if err != nil {
			return nil, err
		}
		if len(kids) > 0 {
			return nil, errNoFastDiff
		}
	}
	pchanged, err := scanChanged(ctx, pdir, base, false)
	if err != nil {
		return nil, err
	}
	f, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if moved, err := parentMoved(f, pchanged, base); err != nil || moved {
		if err == nil {
			err = errNoFastDiff
		}
		return nil, err
	}
	changed, err := scanChangedFile(ctx, f, base, false)
	if err != nil {
		return nil, err
	}
	// The child may be a running container's layer: its paths are read
	// through an fd of its root, never followed (CVE-2018-15664).
	v, err := archive.OpenView(dir)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	fd := &finder{ctx: ctx, pdir: pdir, dir: dir, v: v, cands: map[string]bool{}, subtrees: map[string]bool{}}
	dirs := map[uint64]string{firstFreeID: ""}
	buf := make([]byte, 112+16<<10) // one leaf's worth: these lookups are small
	for ino, in := range changed {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		isDir := in.mode&unix.S_IFMT == unix.S_IFDIR
		if ino == firstFreeID {
			if err := fd.sameDir(""); err != nil {
				return nil, err
			}
			continue
		}
		paths, err := inodePaths(f, ino, dirs, &buf)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			p = "/" + p
			fd.cands[p] = true
			if !isDir {
				continue
			}
			same, err := fd.isSameDir(p, ino, in.gen <= base)
			if err != nil {
				return nil, err
			}
			if same {
				err = fd.sameDir(p)
			} else {
				fd.subtrees[p] = true
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return fd.result()
}

// parentMoved reports whether the parent changed after the child's
// snapshot. Reading a writable parent updates atimes, which rewrites its
// inode items without changing anything a diff sees; so an inode whose
// item differs from the child's untouched copy (taken at the snapshot) in
// nothing but atime and transid does not count. When the child changed
// that inode too there is no copy to compare with and we must assume the
// worst. Read-only parents (image layers) never get here: their atimes do
// not move.
func parentMoved(child *os.File, pchanged map[uint64]*inode, base uint64) (bool, error) {
	buf := make([]byte, 112+4096)
	for ino, in := range pchanged {
		if !in.changed {
			continue
		}
		var copyAtSnapshot []byte
		err := treeSearchBuf(child, searchKey{
			MinObjectID: ino, MaxObjID: ino,
			MinType: keyInodeItem, MaxType: keyInodeItem,
			MaxTransid: ^uint64(0),
		}, &buf, func(it item) error {
			if it.Type == keyInodeItem && len(it.Data) >= 160 {
				copyAtSnapshot = append([]byte(nil), it.Data[:160]...)
			}
			return nil
		})
		if err != nil {
			return false, err
		}
		if copyAtSnapshot == nil || binary.LittleEndian.Uint64(copyAtSnapshot[8:]) > base || !atimeOnly(in.raw, copyAtSnapshot) {
			return true, nil
		}
	}
	return false, nil
}

// atimeOnly reports whether two btrfs_inode_items differ at most in
// transid (bytes 8-16) and atime (112-124).
func atimeOnly(a, b []byte) bool {
	return bytes.Equal(a[:8], b[:8]) && bytes.Equal(a[16:112], b[16:112]) && bytes.Equal(a[124:160], b[124:160])
}

type finder struct {
	ctx       context.Context
	pdir, dir string
	v         *archive.View   // dir, read in-root
	cands     map[string]bool // paths to decide one by one
	subtrees  map[string]bool // directories whose contents are compared in full
	out       []driver.Change
}

// isSameDir reports whether p is, in the parent, a directory with inode
// ino that the child inherited (old) rather than created.
func (fd *finder) isSameDir(p string, ino uint64, old bool) (bool, error) {
	if !old {
		return false, nil
	}
	var st unix.Stat_t
	err := unix.Lstat(filepath.Join(fd.pdir, p), &st)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == ino, nil
}

// sameDir compares the names in directory p of the parent and the child.
func (fd *finder) sameDir(p string) error {
	pn, err := names(filepath.Join(fd.pdir, p))
	if err != nil {
		return err
	}
	cl, err := fd.v.ReadDirNames(p)
	if err != nil {
		return err
	}
	cn := make(map[string]bool, len(cl))
	for _, n := range cl {
		cn[n] = true
	}
	for n := range pn {
		if !cn[n] {
			fd.out = append(fd.out, driver.Change{Path: p + "/" + n, Kind: archive.ChangeDelete})
		}
	}
	for n := range cn {
		if !pn[n] {
			// A new name always comes with a changed inode (link and
			// rename update it), so this is a safety net, not a need.
			fd.cands[p+"/"+n] = true
		}
	}
	return nil
}

// names lists a directory without touching its atime: an atime update
// on a writable parent would be a change of the parent for the next scan.
func names(dir string) (map[string]bool, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) { // O_NOATIME needs ownership or CAP_FOWNER
		f, err = os.Open(dir)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ns, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(ns))
	for _, n := range ns {
		m[n] = true
	}
	return m, nil
}

// under reports whether p lies strictly inside a subtree compared in full.
func (fd *finder) under(p string) bool {
	for q := filepath.Dir(p); q != "/" && q != "."; q = filepath.Dir(q) {
		if fd.subtrees[q] {
			return true
		}
	}
	return false
}

func (fd *finder) result() ([]driver.Change, error) {
	var out []driver.Change
	for _, c := range fd.out {
		if !fd.under(c.Path) {
			out = append(out, c)
		}
	}
	for p := range fd.cands {
		if err := fd.ctx.Err(); err != nil {
			return nil, err
		}
		if fd.under(p) {
			continue
		}
		c, ok, err := fd.decide(p)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, c)
		}
	}
	for p := range fd.subtrees {
		if fd.under(p) {
			continue
		}
		old := filepath.Join(fd.pdir, p)
		var st unix.Stat_t
		if err := unix.Lstat(old, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			old = "" // nothing of it in the parent: all of it is added
		}
		sub, err := archive.ChangesIn(fd.ctx, old, fd.v, p)
		if err != nil {
			return nil, err
		}
		for _, c := range sub {
			c.Path = p + c.Path
			out = append(out, c)
		}
	}
	return archive.CompleteChanges(out), nil
}

// decide says whether candidate p is added or modified, as
// archive.Changes would.
func (fd *finder) decide(p string) (driver.Change, bool, error) {
	_, perr := os.Lstat(filepath.Join(fd.pdir, p))
	switch {
	case errors.Is(perr, os.ErrNotExist) || errors.Is(perr, unix.ENOTDIR):
		return driver.Change{Path: p, Kind: archive.ChangeAdd}, true, nil
	case perr != nil:
		return driver.Change{}, false, perr
	}
	diff, err := archive.DiffersIn(filepath.Join(fd.pdir, p), fd.v, p)
	if err != nil {
		return driver.Change{}, false, err
	}
	return driver.Change{Path: p, Kind: archive.ChangeModify}, diff, nil
}
