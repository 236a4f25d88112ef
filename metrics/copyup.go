package metrics

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratafs/strata/driver"
)

const (
	defaultScrapeBudget = 2 * time.Second
	defaultCopyUpTTL    = 15 * time.Second
)

// copyUpCollector reports what copy-on-write copied into writable layers.
// It asks the backend at scrape time rather than on a timer, so an idle
// daemon costs nothing; the answers are cached per layer for a TTL and
// each scrape refreshes only what its time budget allows, oldest first, so
// a host with thousands of containers still answers a scrape in bounded
// time.
type copyUpCollector struct {
	lister   driver.Lister
	reporter driver.CopyUpReporter
	perLayer bool
	budget   time.Duration
	ttl      time.Duration // < 0: refresh on every scrape

	writable, files, bytes, newFiles, newBytes, stale, errs *prometheus.Desc
	layerFiles, layerBytes, layerNewFiles, layerNewBytes    *prometheus.Desc

	// refresh is held by the one scrape that asks the backend; a scrape
	// running alongside reports the cache instead of waiting its turn.
	refresh sync.Mutex

	mu       sync.Mutex
	ids      []string // writable layers, sorted
	listedAt time.Time
	dirty    bool // this process created or removed a layer since listedAt
	cache    map[string]cached
	tried    map[string]time.Time // last time each layer was asked, answered or not
	nerrs    uint64
	closed   bool
}

type cached struct {
	stats driver.CopyUpStats
	at    time.Time
}

func newCopyUpCollector(ns string, constLabels prometheus.Labels, l driver.Lister, r driver.CopyUpReporter, opts Options) *copyUpCollector {
	c := &copyUpCollector{
		lister: l, reporter: r, perLayer: opts.PerLayer,
		budget: opts.ScrapeBudget, ttl: opts.CopyUpTTL,
		cache: make(map[string]cached),
		tried: make(map[string]time.Time),
	}
	if c.budget <= 0 {
		c.budget = defaultScrapeBudget
	}
	if c.ttl == 0 {
		c.ttl = defaultCopyUpTTL
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, constLabels)
	}
	c.writable = desc("writable_layers", "Writable layers on the driver's root, as last listed.")
	c.files = desc("copyup_files", "Files copied up from lower layers into writable layers, summed over writable layers.")
	c.bytes = desc("copyup_bytes", "Bytes of files copied up from lower layers into writable layers, summed over writable layers.")
	c.newFiles = desc("new_files", "Files created in writable layers that exist in no lower layer, summed over writable layers.")
	c.newBytes = desc("new_bytes", "Bytes of files created in writable layers that exist in no lower layer, summed over writable layers.")
	c.stale = desc("copyup_stale_layers", "Writable layers whose copy-up figures are older than the cache TTL or missing because the scrape's time budget ran out.")
	c.errs = desc("copyup_errors_total", "Failed attempts to list layers or read a layer's copy-up figures at scrape time.")
	if c.perLayer {
		c.layerFiles = desc("layer_copyup_files", "Files copied up from lower layers into this writable layer.", "id")
		c.layerBytes = desc("layer_copyup_bytes", "Bytes of files copied up from lower layers into this writable layer.", "id")
		c.layerNewFiles = desc("layer_new_files", "Files created in this writable layer that exist in no lower layer.", "id")
		c.layerNewBytes = desc("layer_new_bytes", "Bytes of files created in this writable layer that exist in no lower layer.", "id")
	}
	return c
}

// invalidate makes the next scrape list the layers again. It is called on
// a nil collector when the driver cannot report copy-up.
func (c *copyUpCollector) invalidate() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.dirty = true
	c.mu.Unlock()
}

// close stops the collector from calling into a driver being closed.
func (c *copyUpCollector) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

func (c *copyUpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.writable, c.files, c.bytes, c.newFiles, c.newBytes, c.stale, c.errs} {
		ch <- d
	}
	if c.perLayer {
		for _, d := range []*prometheus.Desc{c.layerFiles, c.layerBytes, c.layerNewFiles, c.layerNewBytes} {
			ch <- d
		}
	}
}

func (c *copyUpCollector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	if c.refresh.TryLock() {
		c.update(start)
		c.refresh.Unlock()
	}

	c.mu.Lock()
	ids := c.ids
	vals := make([]cached, len(ids))
	have := make([]bool, len(ids))
	for i, id := range ids {
		vals[i], have[i] = c.cache[id]
	}
	nerrs := c.nerrs
	c.mu.Unlock()

	fresh := max(c.ttl, 0)
	var sum driver.CopyUpStats
	stale := 0
	gauge := func(d *prometheus.Desc, v int64, id string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), id)
	}
	for i, id := range ids {
		if !have[i] || start.Sub(vals[i].at) > fresh {
			stale++
		}
		if !have[i] {
			continue
		}
		s := vals[i].stats
		sum.CopiedFiles += s.CopiedFiles
		sum.CopiedBytes += s.CopiedBytes
		sum.NewFiles += s.NewFiles
		sum.NewBytes += s.NewBytes
		if c.perLayer {
			gauge(c.layerFiles, s.CopiedFiles, id)
			gauge(c.layerBytes, s.CopiedBytes, id)
			gauge(c.layerNewFiles, s.NewFiles, id)
			gauge(c.layerNewBytes, s.NewBytes, id)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.writable, prometheus.GaugeValue, float64(len(ids)))
	ch <- prometheus.MustNewConstMetric(c.files, prometheus.GaugeValue, float64(sum.CopiedFiles))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(sum.CopiedBytes))
	ch <- prometheus.MustNewConstMetric(c.newFiles, prometheus.GaugeValue, float64(sum.NewFiles))
	ch <- prometheus.MustNewConstMetric(c.newBytes, prometheus.GaugeValue, float64(sum.NewBytes))
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, float64(stale))
	ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(nerrs))
}

// update refreshes the layer list and as many expired layers as the budget
// allows, the longest-unasked first so that every layer gets its turn
// across scrapes.
func (c *copyUpCollector) update(now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), c.budget)
	defer cancel()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	relist := c.dirty || c.ids == nil || c.expired(now, c.listedAt)
	c.dirty = false // a Create during the listing sets it again
	c.mu.Unlock()

	if relist {
		ls, err := c.lister.Layers(ctx)
		c.mu.Lock()
		if err != nil {
			c.nerrs++
			c.dirty = true
		} else {
			ids := make([]string, 0, len(ls))
			keep := make(map[string]cached, len(ls))
			tried := make(map[string]time.Time, len(ls))
			for _, l := range ls {
				if l.Writable {
					ids = append(ids, l.ID)
					if e, ok := c.cache[l.ID]; ok {
						keep[l.ID] = e
					}
					if at, ok := c.tried[l.ID]; ok {
						tried[l.ID] = at
					}
				}
			}
			sort.Strings(ids)
			c.ids, c.cache, c.tried, c.listedAt = ids, keep, tried, now
		}
		c.mu.Unlock()
	}

	c.mu.Lock()
	type due struct {
		id    string
		tried time.Time
	}
	var todo []due
	for _, id := range c.ids {
		e, ok := c.cache[id]
		if !ok || c.expired(now, e.at) {
			todo = append(todo, due{id, c.tried[id]})
		}
	}
	c.mu.Unlock()
	// By last attempt, not last success: a layer too slow for any budget
	// goes to the back of the line instead of starving the others.
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].tried.Before(todo[j].tried) })

	for _, t := range todo {
		if ctx.Err() != nil {
			return
		}
		st, err := c.reporter.CopyUp(ctx, t.id)
		c.mu.Lock()
		c.tried[t.id] = time.Now()
		switch {
		case err == nil:
			if contains(c.ids, t.id) {
				c.cache[t.id] = cached{stats: st, at: time.Now()}
			}
		case errors.Is(err, driver.ErrLayerNotFound):
			// Removed by someone else since the listing.
			c.dirty = true
		case ctx.Err() != nil:
			// Out of budget: not the layer's fault.
		default:
			c.nerrs++
		}
		c.mu.Unlock()
	}
}

func (c *copyUpCollector) expired(now, at time.Time) bool {
	return c.ttl < 0 || now.Sub(at) >= c.ttl
}

func contains(sorted []string, id string) bool {
	i := sort.SearchStrings(sorted, id)
	return i < len(sorted) && sorted[i] == id
}
