package metrics_test

import (
	"bytes"
	"context"
	"io"
	"sort"
	"sync"

	"github.com/stratafs/strata/driver"
)

// fake is an in-memory driver for what no real backend can show on this
// host: every combination of optional capabilities, errors on demand, and
// copy-up figures that change between scrapes. Behaviour against real
// backends is tested in backends_test.go.
type fake struct {
	mu      sync.Mutex
	layers  map[string]*fakeLayer
	copyup  map[string]driver.CopyUpStats
	slow    map[string]bool // CopyUp blocks until its context ends
	calls   map[string]int  // CopyUp calls per layer
	failAll error           // returned by every layer operation when set
	closed  bool
}

type fakeLayer struct {
	parent   string
	writable bool
	data     []byte
	mounts   int
}

func newFake() *fake {
	return &fake{
		layers: map[string]*fakeLayer{},
		copyup: map[string]driver.CopyUpStats{},
		slow:   map[string]bool{},
		calls:  map[string]int{},
	}
}

func (f *fake) Name() string { return "fake" }

func (f *fake) check(op, id string) error {
	if f.closed {
		return driver.Wrap(op, id, driver.ErrClosed)
	}
	if f.failAll != nil {
		return driver.Wrap(op, id, f.failAll)
	}
	return driver.Wrap(op, id, driver.ValidateID(id))
}

func (f *fake) layer(op, id string) (*fakeLayer, error) {
	if err := f.check(op, id); err != nil {
		return nil, err
	}
	l := f.layers[id]
	if l == nil {
		return nil, driver.Wrap(op, id, driver.ErrLayerNotFound)
	}
	return l, nil
}

func (f *fake) Create(ctx context.Context, id, parent string, opts *driver.CreateOpts) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("create", id); err != nil {
		return err
	}
	if f.layers[id] != nil {
		return driver.Wrap("create", id, driver.ErrLayerExists)
	}
	if parent != "" && f.layers[parent] == nil {
		return driver.Wrap("create", id, driver.ErrLayerNotFound)
	}
	f.layers[id] = &fakeLayer{parent: parent, writable: opts != nil && opts.Writable}
	return nil
}

func (f *fake) Remove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.layer("remove", id)
	if err != nil {
		return err
	}
	if l.mounts > 0 {
		return driver.Wrap("remove", id, driver.ErrLayerInUse)
	}
	for _, o := range f.layers {
		if o.parent == id {
			return driver.Wrap("remove", id, driver.ErrHasChildren)
		}
	}
	delete(f.layers, id)
	return nil
}

func (f *fake) Exists(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.layers[id] != nil
}

func (f *fake) Get(ctx context.Context, id string, opts *driver.MountOpts) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.layer("get", id)
	if err != nil {
		return "", err
	}
	l.mounts++
	return "/fake/" + id, nil
}

func (f *fake) Put(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.layer("put", id)
	if err != nil {
		return err
	}
	if l.mounts == 0 {
		return driver.Errorf("put", id, "not mounted")
	}
	l.mounts--
	return nil
}

func (f *fake) Diff(ctx context.Context, id string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.layer("diff", id)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(l.data)), nil
}

func (f *fake) Changes(ctx context.Context, id string) ([]driver.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.layer("changes", id)
	return nil, err
}

func (f *fake) ApplyDiff(ctx context.Context, id string, tar io.Reader) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.layer("apply", id)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(tar)
	if err != nil {
		return 0, driver.Wrap("apply", id, err)
	}
	l.data = b
	return int64(len(b)), nil
}

func (f *fake) DiffSize(ctx context.Context, id string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.layer("diffsize", id)
	if err != nil {
		return 0, err
	}
	return int64(len(l.data)), nil
}

func (f *fake) Status(ctx context.Context) driver.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return driver.Status{Driver: "fake", Layers: len(f.layers)}
}

func (f *fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fake) Layers(ctx context.Context) ([]driver.LayerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, driver.ErrClosed
	}
	var ls []driver.LayerInfo
	for id, l := range f.layers {
		ls = append(ls, driver.LayerInfo{ID: id, Parent: l.parent, Writable: l.writable, Size: int64(len(l.data))})
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].ID < ls[j].ID })
	return ls, nil
}

func (f *fake) CopyUp(ctx context.Context, id string) (driver.CopyUpStats, error) {
	f.mu.Lock()
	f.calls[id]++
	slow := f.slow[id]
	_, err := f.layer("copyup", id)
	st := f.copyup[id]
	f.mu.Unlock()
	if err != nil {
		return driver.CopyUpStats{}, err
	}
	if slow {
		<-ctx.Done()
		return driver.CopyUpStats{}, driver.Wrap("copyup", id, ctx.Err())
	}
	return st, nil
}

func (f *fake) setCopyUp(id string, st driver.CopyUpStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.copyup[id] = st
}

func (f *fake) QuotaScope() (driver.QuotaScope, error) { return driver.QuotaLayerData, nil }

func (f *fake) QuotaUsage(ctx context.Context, id string) (driver.QuotaUsage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.layer("quota", id)
	if err != nil {
		return driver.QuotaUsage{}, err
	}
	return driver.QuotaUsage{Limit: 1 << 20, Used: int64(len(l.data)), Scope: driver.QuotaLayerData}, nil
}

// The fake with a chosen subset of its capabilities visible: each type
// re-exposes only the methods it names.
type (
	bare struct{ f *fake }
	capL struct {
		bare
		driver.Lister
	}
	capC struct {
		bare
		driver.CopyUpReporter
	}
	capQ struct {
		bare
		driver.Quota
	}
	capLC struct {
		bare
		driver.Lister
		driver.CopyUpReporter
	}
	capLQ struct {
		bare
		driver.Lister
		driver.Quota
	}
	capCQ struct {
		bare
		driver.CopyUpReporter
		driver.Quota
	}
	capLCQ struct {
		bare
		driver.Lister
		driver.CopyUpReporter
		driver.Quota
	}
)

func (b bare) Name() string { return b.f.Name() }
func (b bare) Create(ctx context.Context, id, parent string, o *driver.CreateOpts) error {
	return b.f.Create(ctx, id, parent, o)
}
func (b bare) Remove(ctx context.Context, id string) error { return b.f.Remove(ctx, id) }
func (b bare) Exists(id string) bool                       { return b.f.Exists(id) }
func (b bare) Get(ctx context.Context, id string, o *driver.MountOpts) (string, error) {
	return b.f.Get(ctx, id, o)
}
func (b bare) Put(ctx context.Context, id string) error { return b.f.Put(ctx, id) }
func (b bare) Diff(ctx context.Context, id string) (io.ReadCloser, error) {
	return b.f.Diff(ctx, id)
}
func (b bare) Changes(ctx context.Context, id string) ([]driver.Change, error) {
	return b.f.Changes(ctx, id)
}
func (b bare) ApplyDiff(ctx context.Context, id string, r io.Reader) (int64, error) {
	return b.f.ApplyDiff(ctx, id, r)
}
func (b bare) DiffSize(ctx context.Context, id string) (int64, error) {
	return b.f.DiffSize(ctx, id)
}
func (b bare) Status(ctx context.Context) driver.Status { return b.f.Status(ctx) }
func (b bare) Close() error                             { return b.f.Close() }

// withCaps returns f showing exactly the capabilities asked for.
func withCaps(f *fake, l, c, q bool) driver.Driver {
	b := bare{f}
	switch {
	case l && c && q:
		return capLCQ{b, f, f, f}
	case l && c:
		return capLC{b, f, f}
	case l && q:
		return capLQ{b, f, f}
	case c && q:
		return capCQ{b, f, f}
	case l:
		return capL{b, f}
	case c:
		return capC{b, f}
	case q:
		return capQ{b, f}
	}
	return b
}
