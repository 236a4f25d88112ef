package metrics_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/metrics"
)

// The decorator's cost, measured against the same driver instance called
// directly. BenchmarkGetPut and BenchmarkApplyDiff name their
// sub-benchmarks wrap=bare and wrap=instrumented:
//
//	go test -run '^$' -bench 'GetPut|ApplyDiff' -count 10 ./metrics > bench.txt
//	benchstat -col /wrap bench.txt
//
// On a shared machine their wall-clock figures swing by more than the
// decorator costs; BenchmarkOverhead alternates the two sides inside one
// benchmark and also reports thread CPU time, whose medians over a few
// rounds are steady enough to read a few percent:
//
//	go test -c -o /var/tmp/metrics.test ./metrics
//	cd metrics && for i in $(seq 10); do
//		/var/tmp/metrics.test -test.run '^$' -test.bench Overhead
//	done > /var/tmp/overhead.txt
//	benchstat /var/tmp/overhead.txt   # see overhead-cpu-%

// benchDrivers are the drivers to measure: the in-memory fake shows the
// decorator's absolute cost in nanoseconds, the real backends its share
// of real work.
func benchDrivers(b *testing.B) []func() (string, driver.Driver) {
	list := []func() (string, driver.Driver){
		func() (string, driver.Driver) { return "fake", newFake() },
	}
	for _, be := range backends() {
		list = append(list, func() (string, driver.Driver) {
			d, err := be.open(context.Background(), testRoot(b))
			if err != nil {
				b.Logf("%s skipped: %v", be.name, err)
				return be.name, nil
			}
			return be.name, d
		})
	}
	return list
}

// pair returns the driver itself and the same driver instrumented.
func pair(b *testing.B, d driver.Driver, opts ...metrics.Options) map[string]driver.Driver {
	w, err := metrics.Instrument(d, prometheus.NewRegistry(), append(opts, metrics.Options{})[0])
	require.NoError(b, err)
	b.Cleanup(func() { w.Close() })
	return map[string]driver.Driver{"bare": d, "instrumented": w}
}

var wraps = []string{"bare", "instrumented"}

// BenchmarkGetPut: "mount" is a Get/Put pair on an unmounted layer (the
// backend mounts and unmounts, if it mounts at all); "refcount" is a pair
// on a layer that another Get keeps mounted, the cheapest path there is.
func BenchmarkGetPut(b *testing.B) {
	ctx := context.Background()
	for _, open := range benchDrivers(b) {
		name, d := open()
		if d == nil {
			continue
		}
		require.NoError(b, d.Create(ctx, "img", "", nil))
		require.NoError(b, d.Create(ctx, "ctr", "img", &driver.CreateOpts{Writable: true}))
		require.NoError(b, d.Create(ctx, "held", "img", &driver.CreateOpts{Writable: true}))
		_, err := d.Get(ctx, "held", nil)
		require.NoError(b, err)
		ds := pair(b, d)
		for _, c := range []struct{ path, id string }{{"mount", "ctr"}, {"refcount", "held"}} {
			for _, wrap := range wraps {
				dd := ds[wrap]
				b.Run(fmt.Sprintf("driver=%s/path=%s/wrap=%s", name, c.path, wrap), func(b *testing.B) {
					for b.Loop() {
						if _, err := dd.Get(ctx, c.id, nil); err != nil {
							b.Fatal(err)
						}
						if err := dd.Put(ctx, c.id); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
		require.NoError(b, d.Put(ctx, "held"))
	}
}

// BenchmarkApplyDiff unpacks a 1 MiB layer of 64 files onto a fresh layer
// per iteration; creating and removing the layer is not timed.
func BenchmarkApplyDiff(b *testing.B) {
	ctx := context.Background()
	tarball := benchTar(b)
	for _, open := range benchDrivers(b) {
		name, d := open()
		if d == nil {
			continue
		}
		ds := pair(b, d)
		n := 0
		for _, wrap := range wraps {
			dd := ds[wrap]
			b.Run(fmt.Sprintf("driver=%s/wrap=%s", name, wrap), func(b *testing.B) {
				b.SetBytes(int64(len(tarball)))
				for b.Loop() {
					b.StopTimer()
					n++
					id := fmt.Sprintf("l%d", n)
					if err := dd.Create(ctx, id, "", nil); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if _, err := dd.ApplyDiff(ctx, id, readerOf(tarball)); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := dd.Remove(ctx, id); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkOverhead measures the same thing as the benchmarks above with
// the two sides interleaved in small batches (alternating which goes
// first), so that a busy machine's changing load falls on both alike. It
// reports each side's time per operation and the difference in percent.
func BenchmarkOverhead(b *testing.B) {
	ctx := context.Background()
	applyTar := benchTar(b)
	for _, open := range benchDrivers(b) {
		name, d := open()
		if d == nil {
			continue
		}
		require.NoError(b, d.Create(ctx, "img", "", nil))
		require.NoError(b, d.Create(ctx, "held", "img", &driver.CreateOpts{Writable: true}))
		_, err := d.Get(ctx, "held", nil)
		require.NoError(b, err)
		ds := pair(b, d)
		getPut := func(d driver.Driver) func() error {
			return func() error {
				if _, err := d.Get(ctx, "held", nil); err != nil {
					return err
				}
				return d.Put(ctx, "held")
			}
		}
		b.Run(fmt.Sprintf("driver=%s/op=getput", name), func(b *testing.B) {
			interleave(b, 200, getPut(ds["bare"]), getPut(ds["instrumented"]))
		})
		// Every call timed: what the sampling saves.
		every1 := pair(b, d, metrics.Options{SampleEvery: 1})
		b.Run(fmt.Sprintf("driver=%s/op=getput-timed", name), func(b *testing.B) {
			interleave(b, 200, getPut(every1["bare"]), getPut(every1["instrumented"]))
		})
		require.NoError(b, d.Put(ctx, "held"))
		b.Run(fmt.Sprintf("driver=%s/op=apply", name), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var sp [2]spent
			for i := range b.N {
				for k := range 2 {
					side := (k + i) % 2
					dd := ds[wraps[side]]
					id := fmt.Sprintf("a%d-%d", i, side)
					require.NoError(b, dd.Create(ctx, id, "", nil))
					var err error
					sp[side].measure(b, func() { _, err = dd.ApplyDiff(ctx, id, readerOf(applyTar)) })
					require.NoError(b, err)
					require.NoError(b, dd.Remove(ctx, id))
				}
			}
			report(b, sp)
		})
	}
}

// interleave runs b.N operations of each side in rounds of batch, on one
// locked OS thread so that thread CPU time can be read.
func interleave(b *testing.B, batch int, bare, wrapped func() error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var sp [2]spent
	sides := [2]func() error{bare, wrapped}
	done := 0
	for round := 0; done < b.N; round++ {
		n := min(batch, b.N-done)
		for k := range 2 {
			side := (k + round) % 2
			sp[side].measure(b, func() {
				for range n {
					if err := sides[side](); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		done += n
	}
	report(b, sp)
}

// spent is one side's time: wall clock, and CPU time of the calling
// thread. On a shared machine the wall clock swings with other people's
// load; the thread's CPU time leaves out time spent waiting to run, so
// the decorator's cost shows through it.
type spent struct{ wall, cpu time.Duration }

func (s *spent) measure(b *testing.B, f func()) {
	w, c := time.Now(), threadCPU(b)
	f()
	s.cpu += threadCPU(b) - c
	s.wall += time.Since(w)
}

func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// report adds each side's mean time per operation and their difference
// in percent, by wall clock and by thread CPU time.
func report(b *testing.B, sp [2]spent) {
	perOp := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	pct := func(bare, inst time.Duration) float64 { return 100 * (perOp(inst) - perOp(bare)) / perOp(bare) }
	b.ReportMetric(perOp(sp[0].wall), "bare-ns/op")
	b.ReportMetric(perOp(sp[1].wall), "instrumented-ns/op")
	b.ReportMetric(pct(sp[0].wall, sp[1].wall), "overhead-%")
	b.ReportMetric(perOp(sp[0].cpu), "bare-cpu-ns/op")
	b.ReportMetric(perOp(sp[1].cpu), "instrumented-cpu-ns/op")
	b.ReportMetric(pct(sp[0].cpu, sp[1].cpu), "overhead-cpu-%")
}

// benchTar is a 1 MiB layer of 64 files.
func benchTar(b *testing.B) []byte {
	var files []tarFile
	for i := range 64 {
		files = append(files, tarFile{fmt.Sprintf("d/f%02d", i), make([]byte, 16<<10)})
	}
	return layerTar(b, []string{"d"}, files)
}
