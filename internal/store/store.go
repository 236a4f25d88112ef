// Package store keeps the layer records of one driver root: one small JSON
// file per layer, published by write-fsync-rename (moby's per-layer-file
// way rather than containerd's bbolt: no extra dependency, nothing to
// compact, a damaged record loses one layer, not the whole index, and a
// person can read it). A layer exists exactly when its record does; a
// backend writes the layer's data first and the record last, and removes
// the record first and the data after, so a crash leaves at worst data
// without a record, which Sweep finds.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
)

// State is where a layer is in its life.
type State string

const (
	// Ready: complete and usable.
	Ready State = "ready"
	// Applying: an ApplyDiff was under way. Found at Open, such a layer is
	// half-written and the backend removes it.
	Applying State = "applying"
)

// Record is what is kept about one layer.
type Record struct {
	ID       string            `json:"id"`
	Parent   string            `json:"parent,omitempty"`
	Writable bool              `json:"writable,omitempty"`
	State    State             `json:"state"`
	Size     int64             `json:"size"`
	Created  time.Time         `json:"created"`
	Labels   map[string]string `json:"labels,omitempty"`
	// SizeLimit is CreateOpts.SizeLimit.
	SizeLimit int64 `json:"sizeLimit,omitempty"`
	// Extra holds backend-specific facts (a short link name, a qgroup ID).
	Extra map[string]string `json:"extra,omitempty"`
}

// Info converts a record to the driver's public form.
func (r Record) Info() driver.LayerInfo {
	return driver.LayerInfo{ID: r.ID, Parent: r.Parent, Writable: r.Writable, Size: r.Size, Created: r.Created, Labels: r.Labels}
}

// Store is the set of records under one directory. It is safe for
// concurrent use.
type Store struct {
	dir     string
	mu      sync.Mutex
	recs    map[string]*Record
	pending map[string]string // IDs being created -> their parent
}

const suffix = ".json"

// Open loads every record under dir, creating dir if needed. Temporary
// files left by an interrupted write are removed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, recs: map[string]*Record{}, pending: map[string]string{}}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// A temp file from WriteFileAtomic that never got renamed.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			continue
		}
		if !strings.HasSuffix(name, suffix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("store: record %s: %w", name, err)
		}
		if r.ID+suffix != name || driver.ValidateID(r.ID) != nil {
			return nil, fmt.Errorf("store: record %s names layer %q", name, r.ID)
		}
		s.recs[r.ID] = &r
	}
	return s, nil
}

// Dir is the directory the records live in.
func (s *Store) Dir() string { return s.dir }

// Get returns a copy of id's record.
func (s *Store) Get(id string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok {
		return Record{}, false
	}
	return clone(r), true
}

// Exists reports whether id has a record in state Ready.
func (s *Store) Exists(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	return ok && r.State == Ready
}

// List returns copies of all records, sorted by ID.
func (s *Store) List() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, clone(r))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Ready returns copies of the records in state Ready, sorted by ID.
func (s *Store) Ready() []Record {
	all := s.List()
	out := all[:0]
	for _, r := range all {
		if r.State == Ready {
			out = append(out, r)
		}
	}
	return out
}

// Infos lists the complete layers in the driver's public form, sorted by
// ID: what every backend's driver.Lister returns.
func (s *Store) Infos() []driver.LayerInfo {
	ready := s.Ready()
	out := make([]driver.LayerInfo, len(ready))
	for i, r := range ready {
		out[i] = r.Info()
	}
	return out
}

// Len is the number of records.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

// Reserve claims id for a Create on top of parent. It fails with
// ErrLayerExists if id is taken or being created, and with ErrLayerNotFound
// if parent is set and is not a ready layer. Until release is called the
// pending layer counts as a child of parent, so parent cannot be removed
// from under it. Call Publish (or nothing, on failure) and then release.
func (s *Store) Reserve(id, parent string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[id]; ok {
		return nil, driver.ErrLayerExists
	}
	if _, ok := s.pending[id]; ok {
		return nil, driver.ErrLayerExists
	}
	if parent != "" {
		p, ok := s.recs[parent]
		if !ok || p.State != Ready {
			return nil, fmt.Errorf("parent %s: %w", parent, driver.ErrLayerNotFound)
		}
	}
	s.pending[id] = parent
	return func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}, nil
}

// Children returns the IDs of the layers (complete or being created) whose
// parent is id, sorted.
func (s *Store) Children(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.childrenLocked(id)
}

func (s *Store) childrenLocked(id string) []string {
	var out []string
	for _, r := range s.recs {
		if r.Parent == id {
			out = append(out, r.ID)
		}
	}
	for c, p := range s.pending {
		if p == id {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// Put writes r durably, replacing any earlier record of r.ID. Publishing a
// new layer is a Put of its record in state Ready.
func (s *Store) Put(r Record) error {
	if err := driver.ValidateID(r.ID); err != nil {
		return err
	}
	data, err := json.MarshalIndent(&r, "", "  ")
	if err != nil {
		return err
	}
	// Write under the lock so that two Puts of one ID land in call order.
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putLocked(r, data)
}

func (s *Store) putLocked(r Record, data []byte) error {
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, r.ID+suffix), data, 0o600); err != nil {
		return err
	}
	c := clone(&r)
	s.recs[r.ID] = &c
	return nil
}

// BeginApply is the start of every backend's ApplyDiff: id must be a
// complete layer that nothing depends on (no children, complete or being
// created; inUse is the backend's count of open Gets and Diffs), and it is
// marked Applying durably before any byte is unpacked, so that a crash
// leaves a layer New removes. The check and the mark are one step under
// the store's lock, so a Create of a child cannot slip in between. It
// returns the record as it was (Ready), for the backend to Put back, with
// its new size, when the apply ends either way.
func (s *Store) BeginApply(id string, inUse int) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok || r.State != Ready {
		return Record{}, driver.ErrLayerNotFound
	}
	if inUse > 0 {
		return Record{}, fmt.Errorf("%w: %d Get or Diff still open", driver.ErrLayerInUse, inUse)
	}
	if c := s.childrenLocked(id); len(c) > 0 {
		return Record{}, fmt.Errorf("%w: %s", driver.ErrHasChildren, strings.Join(c, ", "))
	}
	was := clone(r)
	applying := clone(r)
	applying.State = Applying
	data, err := json.MarshalIndent(&applying, "", "  ")
	if err != nil {
		return Record{}, err
	}
	if err := s.putLocked(applying, data); err != nil {
		return Record{}, err
	}
	return was, nil
}

// Update applies fn to a copy of id's record and writes the result.
func (s *Store) Update(id string, fn func(*Record)) error {
	r, ok := s.Get(id)
	if !ok {
		return driver.ErrLayerNotFound
	}
	fn(&r)
	return s.Put(r)
}

// Delete removes id's record durably, failing with ErrHasChildren while
// other layers name it as parent and with ErrLayerNotFound if it has none.
// After Delete the layer no longer exists; the backend removes its data
// next.
func (s *Store) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[id]; !ok {
		return driver.ErrLayerNotFound
	}
	if c := s.childrenLocked(id); len(c) > 0 {
		return fmt.Errorf("%w: %s", driver.ErrHasChildren, strings.Join(c, ", "))
	}
	if err := os.Remove(filepath.Join(s.dir, id+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	delete(s.recs, id)
	return fsutil.SyncDir(s.dir)
}

// Chain returns id followed by its ancestors, nearest first.
func (s *Store) Chain(id string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for cur := id; cur != ""; {
		r, ok := s.recs[cur]
		if !ok {
			return nil, fmt.Errorf("layer %s: %w", cur, driver.ErrLayerNotFound)
		}
		out = append(out, cur)
		if len(out) > len(s.recs) {
			return nil, fmt.Errorf("layer %s: parent cycle", id)
		}
		cur = r.Parent
	}
	return out, nil
}

// Sweep removes the entries of dataDir that have no record: data left by a
// Create or Remove that a crash interrupted. remove is called for each (the
// backend knows how: rm -rf, subvolume delete, ...). keep names entries
// that are not layers and must stay.
func (s *Store) Sweep(ctx context.Context, dataDir string, keep map[string]bool, remove func(name string) error) ([]string, error) {
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		name := e.Name()
		if keep[name] {
			continue
		}
		s.mu.Lock()
		_, ok := s.recs[name]
		_, busy := s.pending[name]
		s.mu.Unlock()
		if ok || busy {
			continue
		}
		if err := remove(name); err != nil {
			return removed, fmt.Errorf("sweep %s: %w", name, err)
		}
		removed = append(removed, name)
	}
	return removed, nil
}

func clone(r *Record) Record {
	c := *r
	if r.Labels != nil {
		c.Labels = make(map[string]string, len(r.Labels))
		for k, v := range r.Labels {
			c.Labels[k] = v
		}
	}
	if r.Extra != nil {
		c.Extra = make(map[string]string, len(r.Extra))
		for k, v := range r.Extra {
			c.Extra[k] = v
		}
	}
	return c
}
