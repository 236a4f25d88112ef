// Package vfs is the plain-directory backend: every layer is a whole
// directory tree, and Create copies the parent's tree into the new layer
// (cloning files with FICLONE where the filesystem can). It works on any
// filesystem and needs no kernel feature, at the price of disk space and
// create time on filesystems without reflink; it is also the reference
// the other backends are compared with.
//
// Get returns the layer's directory itself: nothing is mounted, so
// MountOpts.ReadOnly cannot be enforced (it is accepted and advisory) and
// size limits cannot be enforced at all (Create with a SizeLimit fails
// with ErrNotSupported). A read-only layer's path handed out by Get can
// be written, as overlay2's read-write mount of one can: its DiffSize is
// then measured rather than taken from the record, so it stays true.
package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/store"
)

// Name is the backend's name.
const Name = "vfs"

// Driver is a vfs backend on one root. Besides driver.Driver it implements
// driver.Lister and driver.CopyUpReporter.
type Driver struct {
	root      string
	opts      Options
	mode      fsutil.CopyMode
	store     *store.Store
	locks     driver.Locker
	refs      driver.RefCounter // Get/Put
	views     driver.RefCounter // Diff/Changes streams in flight
	fresh     freshSet
	naive     driver.NaiveDiff
	backingFS string
	reflink   string // probe result for Status
	recovered string
	damaged   []string // records found at New without their tree
	closed    atomic.Bool
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.Lister         = (*Driver)(nil)
	_ driver.CopyUpReporter = (*Driver)(nil)
)

// Keys of store.Record.Extra holding what Create copied.
const (
	extraCopiedFiles = "copiedFiles"
	extraCopiedBytes = "copiedBytes"
	extraReflinked   = "reflinkedFiles"
	// extraHandedOut marks a read-only layer whose path a Get handed out
	// for writing: its recorded size may be stale, so DiffSize measures
	// it as it measures a writable layer (overlay2 does the same).
	extraHandedOut = "handedOut"
)

// New opens (creating if needed) a vfs driver on root and recovers from
// any crash of an earlier driver there (see recover). One root must be
// used by one driver at a time.
func New(ctx context.Context, root string, opts Options) (driver.Driver, error) {
	d, err := open(ctx, root, opts)
	if err != nil {
		return nil, driver.Wrap("new", "", err)
	}
	return d, nil
}

func open(ctx context.Context, root string, opts Options) (*Driver, error) {
	mode, err := opts.CopyMode.fsutil()
	if err != nil {
		return nil, err
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	// Probed first, so that a refused copymode=reflink leaves nothing on
	// disk: in staging/ on a root already in use, else in the nearest
	// existing directory (root's filesystem, or the one it will be on).
	probeDir := filepath.Join(root, stagingDir)
	if _, err := os.Stat(probeDir); err != nil {
		if probeDir, err = nearestDir(root); err != nil {
			return nil, err
		}
	}
	reflink, perr := probeReflink(probeDir)
	if !reflink && mode == fsutil.CopyReflink {
		return nil, fmt.Errorf("%w: copymode=reflink, but %s (%s) cannot clone files: %v",
			driver.ErrNotSupported, root, backingFS(probeDir), perr)
	}
	// 0700: layers hold setuid binaries and device nodes that only their
	// containers should reach.
	for _, sub := range []string{"", layersDir, stagingDir, trashDir} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			return nil, err
		}
	}
	st, err := store.Open(filepath.Join(root, metaDir))
	if err != nil {
		return nil, err
	}
	d := &Driver{root: root, opts: opts, mode: mode, store: st, backingFS: backingFS(root), reflink: "yes"}
	if !reflink {
		d.reflink = fmt.Sprintf("no (%v)", perr)
	}
	d.naive = driver.NaiveDiff{View: d.view, Parent: d.parentOf}
	if d.recovered, err = d.recover(ctx); err != nil {
		return nil, fmt.Errorf("recovering %s: %w", root, err)
	}
	if mode == fsutil.CopyPlain {
		d.reflink += ", not used: copymode=copy"
	}
	return d, nil
}

// Name returns "vfs".
func (d *Driver) Name() string { return Name }

func (d *Driver) check(op, id string) error {
	if d.closed.Load() {
		return driver.Wrap(op, id, driver.ErrClosed)
	}
	if err := driver.ValidateID(id); err != nil {
		return driver.Wrap(op, id, err)
	}
	return nil
}

// ready returns id's record if id is a complete layer.
func (d *Driver) ready(id string) (store.Record, error) {
	r, ok := d.store.Get(id)
	if !ok || r.State != store.Ready {
		return store.Record{}, driver.ErrLayerNotFound
	}
	return r, nil
}

// Create makes layer id as a copy of parent's tree (an empty directory for
// a base layer). The copy is built in staging/, synced, renamed into
// layers/ and then published by writing its record, so a crash at any
// point leaves either no layer or a whole one.
func (d *Driver) Create(ctx context.Context, id, parent string, opts *driver.CreateOpts) error {
	const op = "create"
	if err := d.check(op, id); err != nil {
		return err
	}
	if parent != "" {
		if err := driver.ValidateID(parent); err != nil {
			// Both: no such parent can exist, and the name is why.
			return driver.Wrap(op, id, fmt.Errorf("parent: %w: %w", driver.ErrLayerNotFound, err))
		}
	}
	var o driver.CreateOpts
	if opts != nil {
		o = *opts
	}
	if o.SizeLimit < 0 {
		return driver.Errorf(op, id, "negative size limit %d", o.SizeLimit)
	}
	if o.SizeLimit > 0 {
		return driver.Errorf(op, id, "size limit %d: %w: vfs layers are plain directories and vfs enforces no quota", o.SizeLimit, driver.ErrNotSupported)
	}
	if parent != "" {
		// Held while the parent is copied: an ApplyDiff or Remove of the
		// parent waits until the child is reserved (and then refuses).
		defer d.locks.RLock(parent)()
	}
	release, err := d.store.Reserve(id, parent)
	if err != nil {
		return driver.Wrap(op, id, err)
	}
	defer release()
	stats, err := d.build(ctx, id, parent)
	if err != nil {
		return driver.Wrap(op, id, err)
	}
	rec := store.Record{
		ID:       id,
		Parent:   parent,
		Writable: o.Writable,
		State:    store.Ready,
		Created:  time.Now().UTC(),
		Labels:   o.Labels,
		Extra: map[string]string{
			extraCopiedFiles: strconv.FormatInt(stats.Files, 10),
			extraCopiedBytes: strconv.FormatInt(stats.Bytes, 10),
			extraReflinked:   strconv.FormatInt(stats.Reflinked, 10),
		},
	}
	if err := d.store.Put(rec); err != nil {
		d.discard(d.layerDir(id))
		return driver.Wrap(op, id, err)
	}
	d.fresh.add(id)
	return nil
}

// build makes layers/<id> from parent's tree, durably, without a record.
func (d *Driver) build(ctx context.Context, id, parent string) (stats fsutil.CopyStats, err error) {
	staging := filepath.Join(d.root, stagingDir, id)
	// Left by an earlier failed Create of this ID in this process, if its
	// cleanup failed too; Reserve makes sure no other Create uses it now.
	if err := removeTree(staging); err != nil {
		return stats, err
	}
	defer func() {
		if err != nil {
			removeTree(staging)
		}
	}()
	if parent == "" {
		err = os.Mkdir(staging, 0o755)
	} else {
		stats, err = fsutil.CopyTreeWith(ctx, d.layerDir(parent), staging, fsutil.CopyOptions{Mode: d.mode})
	}
	if err != nil {
		return stats, err
	}
	if err := fsutil.Syncfs(staging); err != nil {
		return stats, err
	}
	dst := d.layerDir(id)
	if err := os.Rename(staging, dst); err != nil {
		return stats, err
	}
	// The rename must be on disk before the record that points at it.
	if err := fsutil.SyncDir(filepath.Dir(dst)); err != nil {
		d.discard(dst)
		return stats, err
	}
	return stats, nil
}

// Remove deletes a layer that is neither mounted nor a parent. The record
// goes first (the layer stops existing), then the tree is moved to trash/
// and deleted there.
func (d *Driver) Remove(ctx context.Context, id string) error {
	const op = "remove"
	if err := d.check(op, id); err != nil {
		return err
	}
	defer d.locks.Lock(id)()
	if n := d.refs.Count(id) + d.views.Count(id); n > 0 {
		return driver.Errorf(op, id, "%w: %d Get or Diff still open", driver.ErrLayerInUse, n)
	}
	if err := d.store.Delete(id); err != nil {
		return driver.Wrap(op, id, err)
	}
	d.fresh.remove(id)
	// The layer is gone once its record is; a tree that cannot be deleted
	// now stays in trash/ and the next New deletes it.
	d.discard(d.layerDir(id))
	return nil
}

// Exists reports whether id is a complete layer.
func (d *Driver) Exists(id string) bool {
	return !d.closed.Load() && d.store.Exists(id)
}

// Get returns the layer's directory. Nothing is mounted; the count only
// keeps Remove and ApplyDiff away while it is in use. Of MountOpts,
// ReadOnly is advisory (a plain directory cannot be made read-only for one
// user), Volatile is honoured trivially (vfs never syncs what is written
// through the path) and MountLabel is ignored (there is no mount to label).
func (d *Driver) Get(ctx context.Context, id string, opts *driver.MountOpts) (string, error) {
	const op = "get"
	if err := d.check(op, id); err != nil {
		return "", err
	}
	defer d.locks.RLock(id)()
	rec, err := d.ready(id)
	if err != nil {
		return "", driver.Wrap(op, id, err)
	}
	// Whoever has the path may write: the layer can no longer be rebuilt
	// from its parent (see ApplyDiff), and its recorded size may go stale.
	d.fresh.remove(id)
	if !rec.Writable && (opts == nil || !opts.ReadOnly) && rec.Extra[extraHandedOut] == "" {
		err := d.store.Update(id, func(r *store.Record) {
			if r.Extra == nil {
				r.Extra = map[string]string{}
			}
			r.Extra[extraHandedOut] = "1"
		})
		if err != nil {
			return "", driver.Wrap(op, id, err)
		}
	}
	d.refs.Increment(id)
	return d.layerDir(id), nil
}

// Put releases one Get.
func (d *Driver) Put(ctx context.Context, id string) error {
	const op = "put"
	if err := d.check(op, id); err != nil {
		return err
	}
	defer d.locks.RLock(id)()
	if _, ok := d.store.Get(id); !ok {
		return driver.Wrap(op, id, driver.ErrLayerNotFound)
	}
	if d.refs.Decrement(id) < 0 {
		return driver.Errorf(op, id, "not in use: Put without a matching Get")
	}
	return nil
}

// view is the NaiveDiff view of a layer: its directory, counted in views
// so that Remove and ApplyDiff refuse while a Diff streams from it.
func (d *Driver) view(ctx context.Context, id string) (string, func(), error) {
	if id == "" {
		return "", func() {}, nil
	}
	unlock := d.locks.RLock(id)
	defer unlock()
	if _, err := d.ready(id); err != nil {
		return "", nil, err
	}
	d.views.Increment(id)
	var once atomic.Bool
	return d.layerDir(id), func() {
		if once.CompareAndSwap(false, true) {
			d.views.Decrement(id)
		}
	}, nil
}

func (d *Driver) parentOf(id string) (string, error) {
	r, err := d.ready(id)
	return r.Parent, err
}

// Diff streams the layer's changes against its parent (a naive diff of the
// two trees: vfs keeps no record of what changed).
func (d *Driver) Diff(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := d.check("diff", id); err != nil {
		return nil, err
	}
	return d.naive.Diff(ctx, id)
}

// Changes lists what differs between the layer and its parent.
func (d *Driver) Changes(ctx context.Context, id string) ([]driver.Change, error) {
	if err := d.check("changes", id); err != nil {
		return nil, err
	}
	return d.naive.Changes(ctx, id)
}

// DiffSize returns the recorded size of what ApplyDiff wrote. A writable
// layer, or a read-only one whose path a Get handed out for writing, is
// written through Get's path, which vfs cannot watch, so its size is
// measured: the regular files its Changes name, each inode once. That
// compares the layer with its parent tree; vfs has no cheaper way.
func (d *Driver) DiffSize(ctx context.Context, id string) (int64, error) {
	const op = "diffsize"
	if err := d.check(op, id); err != nil {
		return 0, err
	}
	rec, err := d.ready(id)
	if err != nil {
		return 0, driver.Wrap(op, id, err)
	}
	if !rec.Writable && rec.Extra[extraHandedOut] == "" {
		return rec.Size, nil
	}
	changes, err := d.naive.Changes(ctx, id)
	if err != nil {
		return 0, driver.Wrap(op, id, err)
	}
	dir := d.layerDir(id)
	seen := map[uint64]bool{}
	var size int64
	for _, c := range changes {
		if c.Kind == archive.ChangeDelete {
			continue
		}
		fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(c.Path)))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted since Changes looked
		}
		if err != nil {
			return 0, driver.Wrap(op, id, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if ino, ok := inode(fi); ok {
			if seen[ino] {
				continue
			}
			seen[ino] = true
		}
		size += fi.Size()
	}
	return size, nil
}

func inode(fi os.FileInfo) (uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}

// CopyUp reports what Create copied from the parent: vfs copies the whole
// parent tree up front, so CopiedFiles/CopiedBytes are the parent's
// regular files and their size (cloned files included: they may share
// blocks until written). NewFiles/NewBytes stay 0: counting what a
// container added would mean walking its tree on every scrape.
func (d *Driver) CopyUp(ctx context.Context, id string) (driver.CopyUpStats, error) {
	const op = "copyup"
	if err := d.check(op, id); err != nil {
		return driver.CopyUpStats{}, err
	}
	rec, err := d.ready(id)
	if err != nil {
		return driver.CopyUpStats{}, driver.Wrap(op, id, err)
	}
	files, _ := strconv.ParseInt(rec.Extra[extraCopiedFiles], 10, 64)
	bytes, _ := strconv.ParseInt(rec.Extra[extraCopiedBytes], 10, 64)
	return driver.CopyUpStats{CopiedFiles: files, CopiedBytes: bytes}, nil
}

// Layers lists the complete layers, sorted by ID.
func (d *Driver) Layers(ctx context.Context) ([]driver.LayerInfo, error) {
	if d.closed.Load() {
		return nil, driver.Wrap("layers", "", driver.ErrClosed)
	}
	return d.store.Infos(), nil
}

// Status describes the driver: backing filesystem, layer count, whether
// Create clones files, and what New recovered.
func (d *Driver) Status(ctx context.Context) driver.Status {
	n := len(d.store.Ready())
	mode := d.opts.CopyMode
	if mode == "" {
		mode = CopyAuto
	}
	recovered := d.recovered
	if recovered == "" {
		recovered = "nothing to recover"
	}
	s := driver.Status{
		Driver:    Name,
		Root:      d.root,
		BackingFS: d.backingFS,
		Layers:    n,
		Info: []driver.KV{
			{Key: "Backing Filesystem", Value: d.backingFS},
			{Key: "Layers", Value: strconv.Itoa(n)},
			{Key: "Copy Mode", Value: string(mode)},
			{Key: "Reflink", Value: d.reflink},
			{Key: "Active Mounts", Value: strconv.Itoa(d.refs.Total())},
			{Key: "Size Limits", Value: "not supported"},
			{Key: "Read-Only Get", Value: "advisory (nothing is mounted)"},
			{Key: "Recovered On Open", Value: recovered},
		},
	}
	if len(d.damaged) > 0 {
		s.Info = append(s.Info, driver.KV{Key: "Damaged", Value: fmt.Sprintf("%d layer record(s) without a tree: %s", len(d.damaged), strings.Join(d.damaged, ", "))})
	}
	if d.closed.Load() {
		s.Info = append(s.Info, driver.KV{Key: "State", Value: "closed"})
	}
	return s
}

// Close marks the driver closed; vfs holds no mounts or devices. Calling
// it again is fine.
func (d *Driver) Close() error {
	d.closed.Store(true)
	return nil
}
