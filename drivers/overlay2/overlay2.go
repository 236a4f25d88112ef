// Package overlay2 stores layers as directories stacked by the kernel's
// overlayfs: each layer keeps only its own files (diff/), whiteouts the
// overlay way (char 0/0 devices, trusted.overlay.opaque=y), and Get mounts
// the chain. See layout.go for the files on disk.
//
// Choices worth knowing:
//   - Get mounts a layer read-write with its diff/ as the upper dir
//     (writable or not, as moby does) unless MountOpts.ReadOnly; a
//     read-only Get stacks the layer's diff/ as a lower dir instead.
//   - Mount options fit one page with short l/ names; beyond it the new
//     mount API's "lowerdir+" (Linux 6.8+) takes one layer per call, up to
//     the kernel's 500 lower layers; older kernels get relative paths from
//     a private working directory (about 130 layers), then a clear refusal.
//   - Diff and Changes read the layer's diff/ and look paths up in the
//     parent's diff dirs (native diff), so they cost what the change
//     costs. They switch to the naive diff when the kernel writes
//     redirects or metadata-only copy-ups (redirect_dir, metacopy), which
//     every mount turns off where the kernel allows. A directory replaced
//     through the mount comes out as one whiteout per hidden name rather
//     than an opaque marker; both mean the same to every consumer.
//   - Put only unmounts. A layer mounted "volatile" is discarded when the
//     driver opens after its process died with it mounted, or after a
//     reboot (the boot ID is kept next to it), as the kernel requires.
//   - Size limits need project quotas, which this backend does not set
//     up: Create with a SizeLimit fails with ErrNotSupported.
package overlay2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/mount"
	"github.com/stratafs/strata/internal/store"
)

// Name is the backend's name.
const Name = "overlay2"

// Driver is the overlay2 backend on one root.
type Driver struct {
	root   string
	opts   Options
	host   host
	store  *store.Store
	locks  driver.Locker
	refs   driver.RefCounter
	naive  driver.NaiveDiff
	bootID string
	closed atomic.Bool

	mu       sync.Mutex
	mounts   map[string]mountState
	repaired []string // what New found and fixed, for Status

	copyups copyUpCache
}

type mountState struct {
	readOnly bool
	volatile bool
	how      string // "mount", "fsconfig", "mount-relative"
}

// Record Extra keys.
const (
	// extraSized marks a layer whose record Size came from ApplyDiff and
	// still holds: it is cleared when the layer is mounted read-write.
	extraSized = "sized"
)

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.Lister         = (*Driver)(nil)
	_ driver.CopyUpReporter = (*Driver)(nil)
	_ driver.Quota          = (*Driver)(nil)
)

// New opens (or creates) an overlay2 root. It checks the host (backing
// filesystem, d_type, a real test mount) and repairs what a killed
// process left behind: mounts under root are unmounted, half-applied
// layers, layers whose data may have been lost with a "volatile" mount,
// and data without a record are removed.
func New(ctx context.Context, root string, opts Options) (driver.Driver, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := makeRootDirs(root); err != nil {
		return nil, fmt.Errorf("overlay2: %w", err)
	}
	d := &Driver{root: root, opts: opts, mounts: map[string]mountState{}, bootID: bootID()}
	// Mounts left by a killed process go first: the checks and the sweep
	// cannot remove directories that are mount points.
	volatileAtDeath, err := d.unmountLeftovers()
	if err != nil {
		return nil, err
	}
	if d.host, err = checkHost(ctx, root, opts, !opts.SkipMountCheck); err != nil {
		return nil, err
	}
	if d.store, err = store.Open(filepath.Join(root, recordsDir)); err != nil {
		return nil, fmt.Errorf("overlay2: %w", err)
	}
	if err := d.recover(ctx, volatileAtDeath); err != nil {
		return nil, fmt.Errorf("overlay2: recovering %s: %w", root, err)
	}
	d.naive = driver.NaiveDiff{View: d.view, Parent: d.parentOf}
	return d, nil
}

// Name implements driver.Driver.
func (d *Driver) Name() string { return Name }

func (d *Driver) check(op, id string) error {
	if d.closed.Load() {
		return driver.Wrap(op, id, driver.ErrClosed)
	}
	return driver.Wrap(op, id, driver.ValidateID(id))
}

// ready returns id's record if the layer exists and is complete.
func (d *Driver) ready(id string) (store.Record, error) {
	r, ok := d.store.Get(id)
	if !ok || r.State != store.Ready {
		return store.Record{}, driver.ErrLayerNotFound
	}
	return r, nil
}

// Create implements driver.Driver.
func (d *Driver) Create(ctx context.Context, id, parent string, opts *driver.CreateOpts) error {
	if err := d.check("create", id); err != nil {
		return err
	}
	if parent != "" {
		if err := driver.ValidateID(parent); err != nil {
			return driver.Wrap("create", id, fmt.Errorf("parent: %w", err))
		}
	}
	if opts == nil {
		opts = &driver.CreateOpts{}
	}
	if opts.SizeLimit != 0 {
		_, err := d.QuotaScope()
		return driver.Wrap("create", id, err)
	}
	if err := ctx.Err(); err != nil {
		return driver.Wrap("create", id, err)
	}
	unlock := d.locks.Lock(id)
	defer unlock()
	release, err := d.store.Reserve(id, parent)
	if err != nil {
		return driver.Wrap("create", id, err)
	}
	defer release()
	var lowers []string
	if parent != "" {
		chain, err := d.store.Chain(parent)
		if err != nil {
			return driver.Wrap("create", id, err)
		}
		if len(chain) >= maxLowers {
			return driver.Errorf("create", id, "%w: parent chain of %d layers; overlay stacks at most %d lower layers",
				driver.ErrNotSupported, len(chain), maxLowers)
		}
		if lowers, err = d.links(chain); err != nil {
			return driver.Wrap("create", id, err)
		}
	}
	short, err := newShortName()
	if err != nil {
		return driver.Wrap("create", id, err)
	}
	if err := d.buildLayerDir(id, short, lowers); err != nil {
		d.removeLayerData(id)
		return driver.Wrap("create", id, err)
	}
	rec := store.Record{
		ID: id, Parent: parent, Writable: opts.Writable, State: store.Ready, Created: time.Now().UTC(),
		Labels: opts.Labels, Extra: map[string]string{extraLink: short, extraSized: "true"},
	}
	if err := d.store.Put(rec); err != nil {
		d.removeLayerData(id)
		return driver.Wrap("create", id, err)
	}
	return nil
}

// links maps layer IDs to their short link paths.
func (d *Driver) links(ids []string) ([]string, error) {
	out := make([]string, len(ids))
	for i, id := range ids {
		r, ok := d.store.Get(id)
		if !ok || r.Extra[extraLink] == "" {
			return nil, fmt.Errorf("layer %s: no short link on record: %w", id, driver.ErrLayerNotFound)
		}
		out[i] = linkPath(r.Extra[extraLink])
	}
	return out, nil
}

// Remove implements driver.Driver.
func (d *Driver) Remove(ctx context.Context, id string) error {
	if err := d.check("remove", id); err != nil {
		return err
	}
	unlock := d.locks.Lock(id)
	defer unlock()
	if _, ok := d.store.Get(id); !ok {
		return driver.Wrap("remove", id, driver.ErrLayerNotFound)
	}
	if n := d.refs.Count(id); n > 0 {
		return driver.Errorf("remove", id, "%w: mounted (%d Gets without Put)", driver.ErrLayerInUse, n)
	}
	if err := d.store.Delete(id); err != nil {
		return driver.Wrap("remove", id, err)
	}
	d.copyups.forget(id)
	return driver.Wrap("remove", id, d.removeLayerData(id))
}

// Exists implements driver.Driver.
func (d *Driver) Exists(id string) bool {
	return !d.closed.Load() && d.store.Exists(id)
}

// Get implements driver.Driver. A layer is mounted read-write (its diff/
// as the upper dir) unless opts.ReadOnly; a second Get shares the mount.
func (d *Driver) Get(ctx context.Context, id string, opts *driver.MountOpts) (string, error) {
	if err := d.check("get", id); err != nil {
		return "", err
	}
	if opts == nil {
		opts = &driver.MountOpts{}
	}
	unlock := d.locks.Lock(id)
	defer unlock()
	rec, err := d.ready(id)
	if err != nil {
		return "", driver.Wrap("get", id, err)
	}
	target := d.mergedDir(id)
	if d.refs.Count(id) > 0 {
		d.mu.Lock()
		st := d.mounts[id]
		d.mu.Unlock()
		if st.readOnly && !opts.ReadOnly {
			return "", driver.Errorf("get", id, "%w: mounted read-only by an earlier Get", driver.ErrLayerInUse)
		}
		d.refs.Increment(id)
		return target, nil
	}
	if err := ctx.Err(); err != nil {
		return "", driver.Wrap("get", id, err)
	}
	chain, err := d.store.Chain(id)
	if err != nil {
		return "", driver.Wrap("get", id, err)
	}
	links, err := d.links(chain)
	if err != nil {
		return "", driver.Wrap("get", id, err)
	}
	s := mountSpec{target: target, label: opts.MountLabel}
	if opts.ReadOnly {
		s.lowers = links
		if len(s.lowers) == 1 {
			// Overlay needs two lower layers when it has no upper one.
			s.lowers = append(s.lowers, emptyDir)
		}
	} else {
		s.upper = id
		s.lowers = links[1:]
		if len(s.lowers) == 0 {
			s.lowers = []string{emptyDir}
		}
		s.volatile = opts.Volatile
	}
	marked := false
	if s.upper != "" {
		if marked, err = d.prepareUpper(id, s.volatile); err != nil {
			return "", driver.Wrap("get", id, err)
		}
	}
	if !opts.ReadOnly && rec.Extra[extraSized] != "" {
		// Writes through the mount make the recorded size stale.
		if err := d.store.Update(id, func(r *store.Record) { delete(r.Extra, extraSized) }); err != nil {
			return "", driver.Wrap("get", id, err)
		}
	}
	how, err := d.mountOverlay(s)
	if err != nil {
		if marked {
			// Never mounted volatile after all: nothing to discard later.
			os.Remove(filepath.Join(d.layerDir(id), volatileFile))
		}
		return "", driver.Wrap("get", id, err)
	}
	d.mu.Lock()
	d.mounts[id] = mountState{readOnly: opts.ReadOnly, volatile: s.volatile, how: how}
	d.mu.Unlock()
	d.refs.Increment(id)
	return target, nil
}

// Put implements driver.Driver. At the last Put the overlay is unmounted
// and nothing more: no syncfs (the kernel already syncs the upper
// filesystem when a non-volatile overlay goes away, and a volatile one
// asked for no syncs at all).
func (d *Driver) Put(ctx context.Context, id string) error {
	if err := d.check("put", id); err != nil {
		return err
	}
	unlock := d.locks.Lock(id)
	defer unlock()
	switch n := d.refs.Decrement(id); {
	case n < 0:
		return driver.Errorf("put", id, "not mounted (Put without Get)")
	case n > 0:
		return nil
	}
	if err := d.unmount(id); err != nil {
		d.refs.Increment(id)
		return driver.Wrap("put", id, err)
	}
	return nil
}

// prepareUpper readies a layer's upper and work dirs for a read-write
// mount. The kernel leaves work/work/incompat/volatile behind after a
// volatile mount and refuses the work dir until it is gone; it is removed
// here rather than in Put, which then costs no more than the unmount
// (an rmdir on a busy ext4 journal takes milliseconds).
//
// It reports whether it wrote the volatile marker (the layer had none).
func (d *Driver) prepareUpper(id string, volatile bool) (marked bool, err error) {
	marker := filepath.Join(d.layerDir(id), volatileFile)
	b, err := os.ReadFile(marker)
	switch {
	case err == nil:
		if err := os.RemoveAll(filepath.Join(d.workDir(id), "work", "incompat")); err != nil {
			return false, err
		}
	case !errors.Is(err, os.ErrNotExist):
		return false, err
	}
	had := err == nil
	if !volatile {
		return false, nil
	}
	if !d.host.volatile {
		return false, fmt.Errorf("%w: the kernel refused the overlay volatile option (needs Linux 5.10+)", driver.ErrNotSupported)
	}
	if strings.TrimSpace(string(b)) == d.bootID {
		return false, nil
	}
	// Mark before mounting: whatever happens next, a layer that may hold
	// unsynced data is known as such, with the boot that cached it.
	return !had, fsutil.WriteFileAtomic(marker, []byte(d.bootID+"\n"), 0o600)
}

func (d *Driver) unmount(id string) error {
	if err := mount.Unmount(d.mergedDir(id), 0); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.mounts, id)
	d.mu.Unlock()
	return nil
}

// view and parentOf serve the naive diff.
func (d *Driver) view(ctx context.Context, id string) (string, func(), error) {
	if id == "" {
		return "", func() {}, nil
	}
	p, err := d.Get(ctx, id, &driver.MountOpts{ReadOnly: true})
	if err != nil {
		return "", nil, err
	}
	return p, func() { d.Put(context.WithoutCancel(ctx), id) }, nil
}

func (d *Driver) parentOf(id string) (string, error) {
	r, err := d.ready(id)
	if err != nil {
		return "", err
	}
	return r.Parent, nil
}

// Diff implements driver.Driver.
func (d *Driver) Diff(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := d.check("diff", id); err != nil {
		return nil, err
	}
	if _, err := d.ready(id); err != nil {
		return nil, driver.Wrap("diff", id, err)
	}
	if !d.host.nativeDiff {
		return d.naive.Diff(ctx, id)
	}
	// The read lock keeps Remove and ApplyDiff away until the stream is
	// closed.
	unlock := d.locks.RLock(id)
	r, err := d.ready(id)
	if err != nil {
		unlock()
		return nil, driver.Wrap("diff", id, err)
	}
	// Only real changes go in the tar: overlay also leaves unchanged
	// files in diff/ (a file renamed away and back is copied up;
	// buildkit#2480), and every change found in diff/ has its content
	// and its parent directories there.
	return driver.Stream(ctx, "diff", id, unlock, func(w io.Writer) error {
		ch, err := d.nativeChanges(ctx, r)
		if err != nil {
			return err
		}
		return archive.WriteChanges(ctx, w, d.diffDir(id), ch)
	}), nil
}

// Changes implements driver.Driver.
func (d *Driver) Changes(ctx context.Context, id string) ([]driver.Change, error) {
	if err := d.check("changes", id); err != nil {
		return nil, err
	}
	if !d.host.nativeDiff {
		return d.naive.Changes(ctx, id)
	}
	unlock := d.locks.RLock(id)
	defer unlock()
	r, err := d.ready(id)
	if err != nil {
		return nil, driver.Wrap("changes", id, err)
	}
	ch, err := d.nativeChanges(ctx, r)
	return ch, driver.Wrap("changes", id, err)
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return len(names) == 0, err
}

// DiffSize implements driver.Driver: the recorded size for a layer filled
// only by ApplyDiff, otherwise the size of its own diff/ (never the
// layers below).
func (d *Driver) DiffSize(ctx context.Context, id string) (int64, error) {
	if err := d.check("diffsize", id); err != nil {
		return 0, err
	}
	r, err := d.ready(id)
	if err != nil {
		return 0, driver.Wrap("diffsize", id, err)
	}
	if r.Extra[extraSized] != "" {
		return r.Size, nil
	}
	n, err := dirSize(ctx, d.diffDir(id))
	return n, driver.Wrap("diffsize", id, err)
}

// Layers implements driver.Lister.
func (d *Driver) Layers(ctx context.Context) ([]driver.LayerInfo, error) {
	if d.closed.Load() {
		return nil, driver.Wrap("layers", "", driver.ErrClosed)
	}
	return d.store.Infos(), nil
}

// Close implements driver.Driver: it unmounts what is still mounted.
func (d *Driver) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	for _, id := range d.refs.Active() {
		unlock := d.locks.Lock(id)
		for d.refs.Decrement(id) > 0 {
		}
		if err := d.unmount(id); err != nil {
			errs = append(errs, driver.Wrap("close", id, err))
		}
		unlock()
	}
	return errors.Join(errs...)
}
