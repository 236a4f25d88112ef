package overlay2

import (
	"context"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
)

// copyUpCache remembers, per writable layer and per directory of its
// diff/, which entries were copied up and which were created. Overlay
// copies up whole files and a copy-up or a creation always adds a name to
// a directory, which changes the directory's ctime and mtime: a directory
// whose times and inode are unchanged since the last scrape has the same
// names, so only its files' sizes are read again (one lstat each) and the
// look-ups in the lower layers are skipped.
type copyUpCache struct {
	mu     sync.Mutex
	layers map[string]*layerCopyUps
}

type layerCopyUps struct {
	mu   sync.Mutex
	dirs map[string]*dirCopyUps
}

type dirCopyUps struct {
	ino          uint64
	mtime, ctime unix.Timespec
	entries      []copyUpEntry
}

type copyUpEntry struct {
	name   string
	dir    bool
	copied bool
}

func (c *copyUpCache) layer(id string) *layerCopyUps {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.layers == nil {
		c.layers = map[string]*layerCopyUps{}
	}
	l := c.layers[id]
	if l == nil {
		l = &layerCopyUps{dirs: map[string]*dirCopyUps{}}
		c.layers[id] = l
	}
	return l
}

func (c *copyUpCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.layers, id)
}

// CopyUp implements driver.CopyUpReporter. For a writable layer a file in
// its diff/ was copied up when it carries overlay's origin xattr or its
// path exists in the parent's view; otherwise the container created it.
// Whiteouts and directories are not counted. A read-only layer was filled
// by ApplyDiff, not by copy-up, and reports zeros.
func (d *Driver) CopyUp(ctx context.Context, id string) (driver.CopyUpStats, error) {
	if err := d.check("copyup", id); err != nil {
		return driver.CopyUpStats{}, err
	}
	r, err := d.ready(id)
	if err != nil {
		return driver.CopyUpStats{}, driver.Wrap("copyup", id, err)
	}
	if !r.Writable {
		return driver.CopyUpStats{}, nil
	}
	ls, err := d.lowersOf(r)
	if err != nil {
		return driver.CopyUpStats{}, driver.Wrap("copyup", id, err)
	}
	lc := d.copyups.layer(id)
	lc.mu.Lock()
	defer lc.mu.Unlock()
	var s driver.CopyUpStats
	seen := map[string]bool{}
	if err := lc.scan(ctx, d.diffDir(id), "", ls, &s, seen); err != nil {
		if _, ok := d.store.Get(id); !ok {
			err = driver.ErrLayerNotFound
		}
		return driver.CopyUpStats{}, driver.Wrap("copyup", id, err)
	}
	for rel := range lc.dirs {
		if !seen[rel] {
			delete(lc.dirs, rel)
		}
	}
	return s, nil
}

func (lc *layerCopyUps) scan(ctx context.Context, root, rel string, ls lowers, s *driver.CopyUpStats, seen map[string]bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Join(root, rel)
	// Stat entries relative to the directory: one path component per
	// call instead of the whole path from /.
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: dir, Err: err}
	}
	seen[rel] = true
	dc := lc.dirs[rel]
	if dc == nil || dc.ino != st.Ino || dc.mtime != st.Mtim || dc.ctime != st.Ctim {
		var err error
		if dc, err = classify(dir, rel, &st, ls); err != nil {
			return err
		}
		lc.dirs[rel] = dc
	}
	for _, e := range dc.entries {
		if e.dir {
			if err := lc.scan(ctx, root, filepath.Join(rel, e.name), ls, s, seen); err != nil {
				return err
			}
			continue
		}
		var fst unix.Stat_t
		if err := unix.Fstatat(fd, e.name, &fst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			// Removed since the directory was read: it changed the
			// directory's times, so the next call sees it gone.
			continue
		}
		size := int64(0)
		if fst.Mode&unix.S_IFMT == unix.S_IFREG {
			size = fst.Size
		}
		if e.copied {
			s.CopiedFiles++
			s.CopiedBytes += size
		} else {
			s.NewFiles++
			s.NewBytes += size
		}
	}
	return nil
}

// classify reads one directory of diff/ and sorts its entries.
func classify(dir, rel string, st *unix.Stat_t, ls lowers) (*dirCopyUps, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	dc := &dirCopyUps{ino: st.Ino, mtime: st.Mtim, ctime: st.Ctim}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var fst unix.Stat_t
		if unix.Lstat(p, &fst) != nil {
			continue
		}
		if isWhiteout(&fst) {
			continue
		}
		ce := copyUpEntry{name: e.Name(), dir: isDir(&fst)}
		if !ce.dir {
			if _, ok := hasXattr(p, xattrOrigin); ok {
				ce.copied = true
			} else if _, _, ok := ls.lookup(filepath.Join(rel, e.Name())); ok {
				ce.copied = true
			}
		}
		dc.entries = append(dc.entries, ce)
	}
	return dc, nil
}
