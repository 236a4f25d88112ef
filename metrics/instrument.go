// Package metrics instruments a strata driver for Prometheus.
//
// An embedding daemon wraps its driver once and keeps using the result in
// place of the original:
//
//	reg := prometheus.NewRegistry()
//	d, err := metrics.Instrument(inner, reg, metrics.Options{})
//	...
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Nothing is registered anywhere but in the Registerer passed in. Labels
// never carry layer IDs (they are unbounded) except on the per-layer
// copy-up gauges, which exist only with Options.PerLayer.
//
// # Metrics
//
// With the default Namespace "strata" and a constant label driver (the
// backend's name) on every series:
//
//	strata_operations_total{op}               calls, failed ones included
//	strata_operation_duration_seconds{op}     latency (busy Get/Put sampled, see Options.SampleEvery)
//	strata_operation_errors_total{op,kind}    failures by errors.Is class (see ErrorKind)
//	strata_active_mounts                      Gets not yet Put
//	strata_layers                             layers on the root
//	strata_applied_bytes_total                what ApplyDiff unpacked
//	strata_diffed_bytes_total                 what callers read from Diff streams
//
// and, when the backend has both driver.Lister and driver.CopyUpReporter,
// gauges of what copy-on-write did, summed over writable layers and read
// at scrape time (cached per layer, within a time budget per scrape):
//
//	strata_writable_layers, strata_copyup_files, strata_copyup_bytes,
//	strata_new_files, strata_new_bytes, strata_copyup_stale_layers,
//	strata_copyup_errors_total
//
// With Options.PerLayer the same per writable layer, labelled id:
// strata_layer_copyup_files, strata_layer_copyup_bytes,
// strata_layer_new_files, strata_layer_new_bytes.
//
// The decorated driver keeps the optional capabilities of the inner one:
// a type assertion to driver.Lister, driver.CopyUpReporter or driver.Quota
// succeeds on it exactly when it succeeds on the inner driver (moby#33734
// lost them behind its wrapper).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stratafs/strata/driver"
)

// Options configure Instrument. The zero value is usable.
type Options struct {
	// Namespace prefixes every metric name; "" means "strata".
	Namespace string
	// ConstLabels are added to every metric. Two drivers of the same
	// backend in one registry need distinct ConstLabels values (or
	// Namespaces); drivers of different backends already differ by their
	// driver label. Prometheus wants one set of label names per metric
	// name, so all drivers sharing a registry and a Namespace must use the
	// same ConstLabels keys.
	ConstLabels prometheus.Labels
	// PerLayer adds copy-up gauges per writable layer, labelled with the
	// layer ID. Off by default: IDs are unbounded, and each one is a
	// series.
	PerLayer bool
	// ScrapeBudget bounds the time one scrape spends asking the backend
	// for copy-up figures; layers not refreshed in time report their
	// cached values. 0 means 2s.
	ScrapeBudget time.Duration
	// CopyUpTTL is how long a layer's copy-up figures are reused before
	// the backend is asked again. 0 means 15s; a negative value asks on
	// every scrape (within the budget).
	CopyUpTTL time.Duration
	// Buckets of the latency histogram in seconds; nil means
	// DefaultBuckets().
	Buckets []float64
	// SampleEvery thins the timing of Get and Put when they are busy:
	// after the first TimedAfterScrape calls since the last scrape, only
	// one call in SampleEvery (rounded up to a power of two) is timed. 0
	// means DefaultSampleEvery; 1 times every call. A Get or Put of a layer that is already mounted
	// takes a few microseconds, and the two clock reads that time it
	// would add several percent; the rare Gets that mount (milliseconds)
	// are all timed on a daemon scraped every few seconds. Every call is
	// still counted in strata_operations_total. All other operations are
	// always timed.
	SampleEvery int
}

// Defaults of the Get/Put sampling, see Options.SampleEvery.
const (
	DefaultSampleEvery = 64
	TimedAfterScrape   = 16
)

// DefaultBuckets returns the latency buckets used when Options.Buckets is
// nil. They span a refcounted Get of a mounted layer (tens of
// microseconds) to ApplyDiff of a large layer (minutes); Prometheus's own
// defaults start at 5ms and would put every Get/Put in the first bucket.
func DefaultBuckets() []float64 {
	return []float64{
		0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
		0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
	}
}

// Operation label values.
const (
	OpCreate    = "create"
	OpRemove    = "remove"
	OpGet       = "get"
	OpPut       = "put"
	OpDiff      = "diff"
	OpChanges   = "changes"
	OpApply     = "apply"
	OpDiffSize  = "diffsize"
	OpStatus    = "status"
	OpLayers    = "layers"
	OpCopyUp    = "copyup"
	OpQuotaUsed = "quota_usage"
)

// op indexes the pre-resolved observers: an array index rather than a
// map look-up on every call.
type op int

const (
	opCreate op = iota
	opRemove
	opGet
	opPut
	opDiff
	opChanges
	opApply
	opDiffSize
	opStatus
	opLayers
	opCopyUp
	opQuotaUsed
	numOps
)

func (o op) String() string {
	return [numOps]string{
		OpCreate, OpRemove, OpGet, OpPut, OpDiff, OpChanges, OpApply,
		OpDiffSize, OpStatus, OpLayers, OpCopyUp, OpQuotaUsed,
	}[o]
}

// ErrorKind names the class of err for the kind label: one of not_found,
// exists, in_use, has_children, invalid_id, no_space, not_supported or
// other. Wrapped errors are classified through errors.Is.
func ErrorKind(err error) string {
	switch {
	case errors.Is(err, driver.ErrLayerNotFound):
		return "not_found"
	case errors.Is(err, driver.ErrLayerExists):
		return "exists"
	case errors.Is(err, driver.ErrLayerInUse):
		return "in_use"
	case errors.Is(err, driver.ErrHasChildren):
		return "has_children"
	case errors.Is(err, driver.ErrInvalidID):
		return "invalid_id"
	case errors.Is(err, driver.ErrNoSpace):
		return "no_space"
	case errors.Is(err, driver.ErrNotSupported):
		return "not_supported"
	}
	return "other"
}

// Instrument returns d wrapped so that every call is recorded in reg. It
// fails, registering nothing, if reg already holds the same metrics (give
// the second driver ConstLabels or a Namespace). Close on the result
// closes d and unregisters the metrics, so a daemon can open and
// instrument the driver again.
func Instrument(d driver.Driver, reg prometheus.Registerer, opts Options) (driver.Driver, error) {
	if d == nil || reg == nil {
		return nil, errors.New("metrics: Instrument needs a driver and a registerer")
	}
	ns := opts.Namespace
	if ns == "" {
		ns = "strata"
	}
	buckets := opts.Buckets
	if buckets == nil {
		buckets = DefaultBuckets()
	}
	constLabels := prometheus.Labels{"driver": d.Name()}
	for k, v := range opts.ConstLabels {
		if k == "driver" {
			return nil, errors.New(`metrics: ConstLabels must not set "driver": it is the backend name`)
		}
		constLabels[k] = v
	}

	in := &instrumented{inner: d, reg: reg, epoch: time.Now()}
	every := uint64(opts.SampleEvery)
	if opts.SampleEvery <= 0 {
		every = DefaultSampleEvery
	}
	// A power of two, so that the busy path tests a mask, not a division.
	mask := uint64(1)<<bits.Len64(every-1) - 1
	in.mask[opGet], in.mask[opPut] = mask, mask
	in.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "operation_duration_seconds",
		Help:        "Time taken by driver operations; Get and Put are sampled (see strata_operations_total for counts). A diff is timed from the call until its stream is closed.",
		ConstLabels: constLabels, Buckets: buckets,
	}, []string{"op"})
	in.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "operation_errors_total",
		Help:        "Driver operations that failed, by operation and error kind (not_found, exists, in_use, has_children, invalid_id, no_space, not_supported, other).",
		ConstLabels: constLabels,
	}, []string{"op", "kind"})
	in.layers = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "layers",
		Help:        "Complete layers on the driver's root, counted when instrumented and kept up to date by this process's Create and Remove.",
		ConstLabels: constLabels,
	})
	in.applied = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "applied_bytes_total",
		Help:        "Content bytes unpacked by ApplyDiff.",
		ConstLabels: constLabels,
	})
	in.diffed = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "diffed_bytes_total",
		Help:        "Bytes of layer tar read from Diff streams.",
		ConstLabels: constLabels,
	})
	for o := range numOps {
		in.obs[o] = in.duration.WithLabelValues(o.String())
	}

	n, err := countLayers(d)
	if err != nil {
		return nil, fmt.Errorf("metrics: counting layers: %w", err)
	}
	in.layers.Set(float64(n))

	ops := opsCollector{in: in,
		calls: prometheus.NewDesc(prometheus.BuildFQName(ns, "", "operations_total"),
			"Driver operations called, failed ones included.", []string{"op"}, constLabels),
		mounts: prometheus.NewDesc(prometheus.BuildFQName(ns, "", "active_mounts"),
			"Gets made through this process and not yet Put (a Get in progress counts).", nil, constLabels),
	}
	cs := []prometheus.Collector{in.duration, ops, in.errs, in.layers, in.applied, in.diffed}
	lister, _ := d.(driver.Lister)
	reporter, _ := d.(driver.CopyUpReporter)
	if lister != nil && reporter != nil {
		in.copyup = newCopyUpCollector(ns, constLabels, lister, reporter, opts)
		cs = append(cs, in.copyup)
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("metrics: %s driver already instrumented in this registry; set Options.ConstLabels or Namespace: %w", d.Name(), err)
			}
			return nil, fmt.Errorf("metrics: every driver in one registry needs the same ConstLabels keys: %w", err)
		}
	}
	in.collectors = cs
	return wrap(in, d), nil
}

// countLayers reads the number of layers already on the root.
func countLayers(d driver.Driver) (int, error) {
	ctx := context.Background()
	if l, ok := d.(driver.Lister); ok {
		ls, err := l.Layers(ctx)
		return len(ls), err
	}
	return d.Status(ctx).Layers, nil
}

// opsCollector reports the call counters, and the active mounts derived
// from them, so that a Get or Put costs one atomic add to count. Each
// scrape also restarts the timing of every Get and Put (see begin).
type opsCollector struct {
	in            *instrumented
	calls, mounts *prometheus.Desc
}

func (c opsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.calls
	ch <- c.mounts
}

func (c opsCollector) Collect(ch chan<- prometheus.Metric) {
	in := c.in
	// Puts before Gets: a Put counted here has its Get counted too.
	puts := int64(in.calls[opPut].Load()) - int64(in.failed[opPut].Load())
	gets := int64(in.calls[opGet].Load()) - int64(in.failed[opGet].Load())
	mounts := max(gets-puts, 0)
	if in.closed.Load() {
		mounts = 0 // Close released them
	}
	for o := range numOps {
		n := in.calls[o].Load()
		in.base[o].Store(n)
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(n), o.String())
	}
	ch <- prometheus.MustNewConstMetric(c.mounts, prometheus.GaugeValue, float64(mounts))
}

// instrumented is the decorator without optional capabilities; wrap adds
// them to match the inner driver.
type instrumented struct {
	inner driver.Driver
	reg   prometheus.Registerer

	// epoch is the base of monotonic clock readings: time.Since(epoch)
	// reads one clock where time.Now reads two.
	epoch time.Time
	// calls and failed count calls per operation; base holds calls as of
	// the last scrape. Once TimedAfterScrape calls of o were made since
	// then, only those whose count n has n&mask[o] == 1&mask[o] are timed
	// (mask 0: all).
	calls, failed, base [numOps]atomic.Uint64
	mask                [numOps]uint64
	closed              atomic.Bool
	duration            *prometheus.HistogramVec
	obs                 [numOps]prometheus.Observer // pre-resolved: no label look-up per call
	errs                *prometheus.CounterVec
	layers              prometheus.Gauge
	applied             prometheus.Counter
	diffed              prometheus.Counter
	copyup              *copyUpCollector

	closeOnce  sync.Once
	closeErr   error
	collectors []prometheus.Collector
}

// Unwrap returns the driver Instrument was given.
func (in *instrumented) Unwrap() driver.Driver { return in.inner }

// untimed is begin's start of a call whose latency is not sampled.
const untimed = time.Duration(-1)

// begin counts a call of o and returns its start time, or untimed.
func (in *instrumented) begin(o op) time.Duration {
	n := in.calls[o].Add(1)
	if m := in.mask[o]; n&m != 1&m && n-in.base[o].Load() > TimedAfterScrape {
		return untimed
	}
	return time.Since(in.epoch)
}

// done records the end of a call that begin started; it inlines to one
// test when there is nothing to record.
func (in *instrumented) done(o op, start time.Duration, err error) {
	if start != untimed || err != nil {
		in.record(o, start, err)
	}
}

func (in *instrumented) record(o op, start time.Duration, err error) {
	if start != untimed {
		in.obs[o].Observe((time.Since(in.epoch) - start).Seconds())
	}
	if err != nil {
		in.failed[o].Add(1)
		in.errs.WithLabelValues(o.String(), ErrorKind(err)).Inc()
	}
}

func (in *instrumented) Name() string          { return in.inner.Name() }
func (in *instrumented) Exists(id string) bool { return in.inner.Exists(id) }

func (in *instrumented) Create(ctx context.Context, id, parent string, opts *driver.CreateOpts) error {
	start := in.begin(opCreate)
	err := in.inner.Create(ctx, id, parent, opts)
	in.done(opCreate, start, err)
	if err == nil {
		in.layers.Inc()
		in.copyup.invalidate()
	}
	return err
}

func (in *instrumented) Remove(ctx context.Context, id string) error {
	start := in.begin(opRemove)
	err := in.inner.Remove(ctx, id)
	in.done(opRemove, start, err)
	if err == nil {
		in.layers.Dec()
		in.copyup.invalidate()
	}
	return err
}

func (in *instrumented) Get(ctx context.Context, id string, opts *driver.MountOpts) (string, error) {
	start := in.begin(opGet)
	p, err := in.inner.Get(ctx, id, opts)
	in.done(opGet, start, err)
	return p, err
}

func (in *instrumented) Put(ctx context.Context, id string) error {
	start := in.begin(opPut)
	err := in.inner.Put(ctx, id)
	in.done(opPut, start, err)
	return err
}

func (in *instrumented) Diff(ctx context.Context, id string) (io.ReadCloser, error) {
	start := in.begin(opDiff)
	rc, err := in.inner.Diff(ctx, id)
	if err != nil {
		in.done(opDiff, start, err)
		return nil, err
	}
	return &diffStream{rc: rc, in: in, start: start}, nil
}

func (in *instrumented) Changes(ctx context.Context, id string) ([]driver.Change, error) {
	start := in.begin(opChanges)
	ch, err := in.inner.Changes(ctx, id)
	in.done(opChanges, start, err)
	return ch, err
}

func (in *instrumented) ApplyDiff(ctx context.Context, id string, tar io.Reader) (int64, error) {
	start := in.begin(opApply)
	n, err := in.inner.ApplyDiff(ctx, id, tar)
	in.done(opApply, start, err)
	if err == nil && n > 0 {
		in.applied.Add(float64(n))
	}
	return n, err
}

func (in *instrumented) DiffSize(ctx context.Context, id string) (int64, error) {
	start := in.begin(opDiffSize)
	n, err := in.inner.DiffSize(ctx, id)
	in.done(opDiffSize, start, err)
	return n, err
}

func (in *instrumented) Status(ctx context.Context) driver.Status {
	start := in.begin(opStatus)
	s := in.inner.Status(ctx)
	in.done(opStatus, start, nil)
	return s
}

// Close closes the inner driver, which releases its mounts, and
// unregisters the metrics. Calling it twice is fine.
func (in *instrumented) Close() error {
	in.closeOnce.Do(func() {
		in.copyup.close()
		in.closeErr = in.inner.Close()
		in.closed.Store(true)
		for _, c := range in.collectors {
			in.reg.Unregister(c)
		}
	})
	return in.closeErr
}

// diffStream counts the bytes the caller reads and times the whole
// transfer, so a diff's latency covers producing the tar, not only opening
// the stream.
type diffStream struct {
	rc     io.ReadCloser
	in     *instrumented
	start  time.Duration
	err    error // first read error other than EOF
	closed bool
}

func (s *diffStream) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if n > 0 {
		s.in.diffed.Add(float64(n))
	}
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *diffStream) Close() error {
	err := s.rc.Close()
	if !s.closed {
		s.closed = true
		e := s.err
		if e == nil {
			e = err
		}
		s.in.done(opDiff, s.start, e)
	}
	return err
}
