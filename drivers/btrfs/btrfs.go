//go:build linux && cgo

// Package btrfs stores layers as btrfs subvolumes. A base layer is a new
// subvolume; a child is a snapshot of its parent's subvolume, so creating
// it copies no data whatever the parent's size; read-only layers are
// read-only subvolumes. Size limits are exclusive qgroup limits (see
// qgroup.go). Diff and Changes find what a child changed from the btrfs
// generation numbers instead of walking both trees (finddiff.go), and fall
// back to driver.NaiveDiff where that cannot be exact.
//
// On disk, under the root:
//
//	records/      one JSON record per layer (internal/store)
//	layers/ID     the layer's subvolume
//	staging/      snapshots an ApplyDiff is filling
//	trash/        subvolumes of removed layers, deleted in the background
package btrfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/store"
)

// Name is the backend's name.
const Name = "btrfs"

// extraBaseGen is the record key of the transaction a child's snapshot
// was taken in: every inode it changed since has a newer transid.
const extraBaseGen = "baseGen"

// Driver is the btrfs backend. Its zero value is not usable; call New.
type Driver struct {
	root, layers, staging, trash string
	opts                         Options

	store *store.Store
	locks driver.Locker
	refs  driver.RefCounter
	naive driver.NaiveDiff

	mu      sync.Mutex // guards closed and quota
	closed  bool
	quota   bool       // quotas are enabled on the filesystem
	quotaMu sync.Mutex // serializes enabling them (a rescan can take long; mu must not wait for it)
	bg      sync.WaitGroup
	bgErrMu sync.Mutex
	bgErr   error // last failure of a background delete, for Status
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.Lister         = (*Driver)(nil)
	_ driver.CopyUpReporter = (*Driver)(nil)
	_ driver.Quota          = (*Driver)(nil)
)

// Probe reports whether root (or the nearest existing directory above it)
// is on btrfs.
func Probe(ctx context.Context, root string) error {
	dir := filepath.Clean(root)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			if st.Type != unix.BTRFS_SUPER_MAGIC {
				return fmt.Errorf("btrfs: %s is on %s, not btrfs: %w", dir, fsutil.FSName(st.Type), driver.ErrNotSupported)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) || dir == "/" || dir == "." {
			return fmt.Errorf("btrfs: statfs %s: %v: %w", dir, err, driver.ErrNotSupported)
		}
		dir = filepath.Dir(dir)
	}
}

// New opens (or sets up) the driver on root, which must be on btrfs. It
// finishes what a crash interrupted: subvolumes without a record, layers
// an ApplyDiff left half-written, staging snapshots and the trash are
// deleted.
func New(ctx context.Context, root string, opts Options) (driver.Driver, error) {
	if err := Probe(ctx, root); err != nil {
		return nil, err
	}
	if opts.Quota == "" {
		opts.Quota = QuotaOnDemand
	}
	if opts.DefaultSizeLimit < 0 {
		return nil, fmt.Errorf("btrfs: negative default size limit")
	}
	d := &Driver{
		root:    root,
		layers:  filepath.Join(root, "layers"),
		staging: filepath.Join(root, "staging"),
		trash:   filepath.Join(root, "trash"),
		opts:    opts,
	}
	for _, dir := range []string{root, d.layers, d.staging, d.trash} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("btrfs: %w", err)
		}
	}
	st, err := store.Open(filepath.Join(root, "records"))
	if err != nil {
		return nil, fmt.Errorf("btrfs: %w", err)
	}
	d.store = st
	d.naive = driver.NaiveDiff{View: d.view, Parent: d.parentOf}
	if err := d.recover(ctx); err != nil {
		return nil, fmt.Errorf("btrfs: recover %s: %w", root, err)
	}
	f, err := openDir(root)
	if err != nil {
		return nil, fmt.Errorf("btrfs: %w", err)
	}
	defer f.Close()
	if d.quota, err = quotaEnabled(f); err != nil {
		return nil, fmt.Errorf("btrfs: %w", err)
	}
	if d.quota {
		if err := sweepQgroups(f); err != nil {
			return nil, fmt.Errorf("btrfs: %w", err)
		}
	}
	if opts.Quota == QuotaAlways && !d.quota {
		if err := enableQuota(f, false); err != nil {
			return nil, fmt.Errorf("btrfs: %w", err)
		}
		d.quota = true
	}
	return d, nil
}

// recover removes what a crash left behind.
func (d *Driver) recover(ctx context.Context) error {
	for _, r := range d.store.List() {
		if r.State == store.Ready {
			continue
		}
		// Record first, data second, as Remove does.
		if err := d.store.Delete(r.ID); err != nil {
			return err
		}
		if err := removeEntry(ctx, d.layerPath(r.ID)); err != nil {
			return err
		}
	}
	if _, err := d.store.Sweep(ctx, d.layers, nil, func(name string) error {
		return removeEntry(ctx, filepath.Join(d.layers, name))
	}); err != nil {
		return err
	}
	for _, dir := range []string{d.staging, d.trash} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := removeEntry(ctx, filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// Name returns "btrfs".
func (d *Driver) Name() string { return Name }

func (d *Driver) layerPath(id string) string { return filepath.Join(d.layers, id) }

func (d *Driver) checkOpen() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return driver.ErrClosed
	}
	return nil
}

// check validates id and that the driver is open.
func (d *Driver) check(op, id string) error {
	if err := d.checkOpen(); err != nil {
		return driver.Wrap(op, id, err)
	}
	return driver.Wrap(op, id, driver.ValidateID(id))
}

// Create makes layer id: a new subvolume, or a snapshot of parent's.
func (d *Driver) Create(ctx context.Context, id, parent string, opts *driver.CreateOpts) error {
	if err := d.check("create", id); err != nil {
		return err
	}
	if opts == nil {
		opts = &driver.CreateOpts{}
	}
	if parent != "" {
		if err := driver.ValidateID(parent); err != nil {
			return driver.Wrap("create", id, fmt.Errorf("parent: %w", err))
		}
	}
	limit := opts.SizeLimit
	if limit < 0 {
		return driver.Errorf("create", id, "negative size limit %d", limit)
	}
	if limit == 0 {
		limit = d.opts.DefaultSizeLimit
	}
	if err := ctx.Err(); err != nil {
		return driver.Wrap("create", id, err)
	}
	release, err := d.store.Reserve(id, parent)
	if err != nil {
		return driver.Wrap("create", id, err)
	}
	defer release()
	if limit > 0 {
		if err := d.ensureQuota(); err != nil {
			return driver.Wrap("create", id, err)
		}
	}
	path := d.layerPath(id)
	if parent == "" {
		err = cbtrfs.SubvolCreate(path)
	} else {
		// Hold the parent steady: an ApplyDiff on it swaps its subvolume.
		unlock := d.locks.RLock(parent)
		if !d.store.Exists(parent) {
			err = fmt.Errorf("parent %s: %w", parent, driver.ErrLayerNotFound)
		} else {
			// A read-only child is born read-only, in the snapshot's own
			// transaction commit, which also makes it durable.
			err = cbtrfs.SubvolSnapshot(path, d.layerPath(parent), !opts.Writable)
		}
		unlock()
	}
	if err != nil {
		return driver.Wrap("create", id, err)
	}
	rec := store.Record{
		ID: id, Parent: parent, Writable: opts.Writable, State: store.Ready,
		Labels: opts.Labels, SizeLimit: limit, Extra: map[string]string{},
	}
	err = d.finishCreate(path, &rec, parent == "")
	if err == nil {
		err = d.store.Put(rec)
	}
	if err != nil {
		if derr := deleteSubvol(context.WithoutCancel(ctx), path); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", derr))
		}
		return driver.Wrap("create", id, err)
	}
	return nil
}

// finishCreate sets the new subvolume's limit and flags and notes its
// snapshot generation in rec. What it changes is committed so that the
// record published next never names a subvolume, flag or limit that a
// power cut could lose; a snapshot needs no extra commit unless a limit
// was set, since creating it committed a transaction already.
func (d *Driver) finishCreate(path string, rec *store.Record, fresh bool) error {
	f, err := openDir(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := getSubvolInfo(f)
	if err != nil {
		return err
	}
	rec.Extra[extraBaseGen] = strconv.FormatUint(info.Otransid, 10)
	if rec.SizeLimit > 0 {
		if err := qgroupLimit(f, info.TreeID, rec.SizeLimit); err != nil {
			return err
		}
	}
	if fresh && !rec.Writable {
		if err := setReadOnly(path, true); err != nil {
			return err
		}
	}
	if fresh || rec.SizeLimit > 0 {
		return syncFS(f)
	}
	return nil
}

// ensureQuota turns quotas on if they are not, as the options allow.
func (d *Driver) ensureQuota() error {
	d.quotaMu.Lock()
	defer d.quotaMu.Unlock()
	if d.quotaOn() {
		return nil
	}
	if d.opts.Quota == QuotaNever {
		return fmt.Errorf("size limits need btrfs quotas, disabled by option quota=never: %w", driver.ErrNotSupported)
	}
	f, err := openDir(d.root)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := enableQuota(f, d.opts.Quota == QuotaSimple); err != nil {
		return fmt.Errorf("%v: %w", err, driver.ErrNotSupported)
	}
	d.mu.Lock()
	d.quota = true
	d.mu.Unlock()
	return nil
}

func (d *Driver) quotaOn() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.quota
}

// Remove deletes layer id. Its record goes first, so the layer is gone
// even if deleting the subvolume is interrupted (New sweeps the rest).
// The kernel frees a deleted subvolume's blocks in the background anyway,
// but the delete itself evicts the layer's cached inodes, which takes about
// a second for 50,000 files; with AsyncRemove the subvolume is renamed into
// the trash and deleted by a goroutine instead (Close waits for it).
func (d *Driver) Remove(ctx context.Context, id string) error {
	if err := d.check("remove", id); err != nil {
		return err
	}
	unlock := d.locks.Lock(id)
	defer unlock()
	if _, ok := d.store.Get(id); !ok {
		return driver.Wrap("remove", id, driver.ErrLayerNotFound)
	}
	if d.refs.Count(id) > 0 {
		return driver.Wrap("remove", id, driver.ErrLayerInUse)
	}
	if err := ctx.Err(); err != nil {
		return driver.Wrap("remove", id, err)
	}
	path := d.layerPath(id)
	svid, err := cbtrfs.SubvolID(path)
	if err != nil {
		return driver.Wrap("remove", id, err)
	}
	if err := d.store.Delete(id); err != nil {
		return driver.Wrap("remove", id, err)
	}
	return driver.Wrap("remove", id, d.discard(ctx, path, svid))
}

// discard deletes a subvolume that no record names any more, and its
// qgroup.
func (d *Driver) discard(ctx context.Context, path string, svid uint64) error {
	if !d.opts.AsyncRemove {
		// Past the record's deletion there is no going back: finish even
		// if ctx is canceled.
		return d.deleteWithQgroup(context.WithoutCancel(ctx), path, svid)
	}
	dst := filepath.Join(d.trash, filepath.Base(path)+"."+randomSuffix())
	if err := moveSubvol(path, dst); err != nil {
		return err
	}
	return d.discardRenamed(dst, svid)
}

func (d *Driver) deleteWithQgroup(ctx context.Context, path string, svid uint64) error {
	if err := deleteSubvol(ctx, path); err != nil {
		return err
	}
	if !d.quotaOn() {
		return nil
	}
	f, err := openDir(d.root)
	if err != nil {
		return err
	}
	defer f.Close()
	// EBUSY: the cleaner has not dropped the tree yet; the kernel (6.10+)
	// then removes the empty qgroup itself when it has.
	if err := qgroupDestroy(f, svid); err != nil && !errors.Is(err, unix.EBUSY) {
		return err
	}
	return nil
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Exists reports whether layer id exists and is complete.
func (d *Driver) Exists(id string) bool {
	if d.checkOpen() != nil || driver.ValidateID(id) != nil {
		return false
	}
	return d.store.Exists(id)
}

// Get returns the path of layer id's subvolume. Nothing is mounted (the
// subvolume is already a whole view of the layer), but the reference is
// counted so that Remove fails while the layer is in use. A read-only
// layer's subvolume is read-only; MountOpts.ReadOnly on a writable layer is
// not enforced (it would need a bind mount per Get).
func (d *Driver) Get(ctx context.Context, id string, opts *driver.MountOpts) (string, error) {
	if err := d.check("get", id); err != nil {
		return "", err
	}
	if opts != nil && opts.Volatile {
		return "", driver.Errorf("get", id, "volatile mounts: btrfs cannot skip syncs per layer: %w", driver.ErrNotSupported)
	}
	if err := ctx.Err(); err != nil {
		return "", driver.Wrap("get", id, err)
	}
	unlock := d.locks.RLock(id)
	defer unlock()
	if !d.store.Exists(id) {
		return "", driver.Wrap("get", id, driver.ErrLayerNotFound)
	}
	d.refs.Increment(id)
	return d.layerPath(id), nil
}

// Put releases one Get.
func (d *Driver) Put(ctx context.Context, id string) error {
	if err := d.check("put", id); err != nil {
		return err
	}
	unlock := d.locks.RLock(id)
	defer unlock()
	if !d.store.Exists(id) {
		return driver.Wrap("put", id, driver.ErrLayerNotFound)
	}
	if d.refs.Decrement(id) < 0 {
		return driver.Errorf("put", id, "not in use: Put without a matching Get")
	}
	return nil
}

// view is the naive diff's ViewFunc: it holds a reference on the layer
// so that it is not removed while a diff reads it.
func (d *Driver) view(ctx context.Context, id string) (string, func(), error) {
	if id == "" {
		return "", func() {}, nil
	}
	unlock := d.locks.RLock(id)
	defer unlock()
	if !d.store.Exists(id) {
		return "", nil, driver.ErrLayerNotFound
	}
	d.refs.Increment(id)
	return d.layerPath(id), func() { d.refs.Decrement(id) }, nil
}

func (d *Driver) parentOf(id string) (string, error) {
	r, ok := d.store.Get(id)
	if !ok || r.State != store.Ready {
		return "", driver.ErrLayerNotFound
	}
	return r.Parent, nil
}

// Changes lists what layer id changed against its parent.
func (d *Driver) Changes(ctx context.Context, id string) ([]driver.Change, error) {
	if err := d.check("changes", id); err != nil {
		return nil, err
	}
	_, ch, release, err := d.changes(ctx, id)
	if err != nil {
		return nil, driver.Wrap("changes", id, err)
	}
	release()
	return ch, nil
}

// Diff streams layer id's changes as an OCI layer tar.
func (d *Driver) Diff(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := d.check("diff", id); err != nil {
		return nil, err
	}
	dir, ch, release, err := d.changes(ctx, id)
	if err != nil {
		return nil, driver.Wrap("diff", id, err)
	}
	return driver.Stream(ctx, "diff", id, release, func(w io.Writer) error {
		return archive.WriteChanges(ctx, w, dir, ch)
	}), nil
}

// changes computes id's changes, by generation numbers when that is exact
// and by the naive comparison otherwise. The returned release drops the
// hold on the layer taken for the diff.
func (d *Driver) changes(ctx context.Context, id string) (dir string, ch []driver.Change, release func(), err error) {
	dir, rel, err := d.view(ctx, id)
	if err != nil {
		return "", nil, nil, err
	}
	rec, ok := d.store.Get(id)
	if !ok {
		rel()
		return "", nil, nil, driver.ErrLayerNotFound
	}
	if rec.Parent != "" && !d.opts.NoFastDiff {
		pdir, prel, err := d.view(ctx, rec.Parent)
		if err != nil {
			rel()
			return "", nil, nil, err
		}
		release = func() { prel(); rel() }
		ch, err = fastChanges(ctx, pdir, dir, rec)
		if err == nil {
			return dir, ch, release, nil
		}
		if !errors.Is(err, errNoFastDiff) {
			release()
			return "", nil, nil, err
		}
		ch, err = archive.Changes(ctx, pdir, dir)
		if err != nil {
			release()
			return "", nil, nil, err
		}
		return dir, ch, release, nil
	}
	ch, err = d.naive.Changes(ctx, id)
	if err != nil {
		rel()
		return "", nil, nil, err
	}
	return dir, ch, rel, nil
}
