package driver

import "sync"

// RefCounter counts Gets per layer ID. Backends hold their per-ID lock while
// they mount on the 0->1 step and unmount on the 1->0 step.
type RefCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

// Increment adds one reference and returns the new count.
func (r *RefCounter) Increment(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = make(map[string]int)
	}
	r.counts[id]++
	return r.counts[id]
}

// Decrement drops one reference and returns the new count, or -1 if id had
// none (a Put without a Get).
func (r *RefCounter) Decrement(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.counts[id]
	if !ok {
		return -1
	}
	if n <= 1 {
		delete(r.counts, id)
		return 0
	}
	r.counts[id] = n - 1
	return n - 1
}

// Count returns id's current count.
func (r *RefCounter) Count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[id]
}

// Active returns the IDs with a count above zero.
func (r *RefCounter) Active() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.counts))
	for id := range r.counts {
		ids = append(ids, id)
	}
	return ids
}

// Total returns the sum of all counts (active mounts).
func (r *RefCounter) Total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := 0
	for _, n := range r.counts {
		t += n
	}
	return t
}
