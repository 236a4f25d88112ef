// Command embed shows how a daemon that embeds strata exposes its storage
// metrics: it keeps its own Prometheus registry (nothing goes to the
// global one), wraps the driver with metrics.Instrument, uses the wrapped
// driver for everything, and serves the registry on /metrics.
//
//	go run ./examples/embed --root /var/tmp/embed-demo --listen 127.0.0.1:9091
//	curl -s 127.0.0.1:9091/metrics | grep ^strata_
//
// With --once it prints one scrape to stdout and exits instead of serving.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers"
	"github.com/stratafs/strata/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("embed", flag.ContinueOnError)
	root := fs.String("root", "/var/tmp/strata-embed", "storage root")
	name := fs.String("driver", "vfs", `backend ("" lets strata probe the host)`)
	listen := fs.String("listen", "127.0.0.1:9091", "address for /metrics")
	once := fs.Bool("once", false, "print one scrape and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// 1. The daemon's own registry, with whatever else it reports.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())

	// 2. Open the backend and wrap it. From here on only the wrapped
	// driver is used, so every call is measured; optional capabilities
	// such as driver.Lister still work through it.
	inner, err := drivers.Open(ctx, *root, drivers.Options{Driver: *name})
	if err != nil {
		return err
	}
	d, err := metrics.Instrument(inner, reg, metrics.Options{
		// A daemon with two storage roots would tell them apart here.
		ConstLabels: prometheus.Labels{"root": filepath.Base(*root)},
		PerLayer:    true, // few, long-lived containers: per-layer series are affordable
	})
	if err != nil {
		return errors.Join(err, inner.Close())
	}
	defer func() { err = errors.Join(err, d.Close()) }()

	// 3. The daemon's work: pull an image layer, run a container on it.
	if err := work(ctx, d); err != nil {
		return err
	}

	if *once {
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		enc := expfmt.NewEncoder(stdout, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return err
			}
		}
		return nil
	}

	// 4. Serve the registry until told to stop.
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(stdout, "metrics on http://%s/metrics\n", *listen)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// work imports a one-file image layer, starts a container layer on it,
// writes to it, and exports the container's changes. It leaves the layers
// in place so that the copy-up gauges have something to show.
func work(ctx context.Context, d driver.Driver) error {
	const img, ctr = "example-image", "example-container"
	if !d.Exists(img) {
		if err := d.Create(ctx, img, "", nil); err != nil {
			return err
		}
		if _, err := d.ApplyDiff(ctx, img, bytes.NewReader(imageTar())); err != nil {
			return err
		}
	}
	if !d.Exists(ctr) {
		if err := d.Create(ctx, ctr, img, &driver.CreateOpts{Writable: true}); err != nil {
			return err
		}
	}
	dir, err := d.Get(ctx, ctr, nil)
	if err != nil {
		return err
	}
	werr := os.WriteFile(filepath.Join(dir, "etc", "motd"), []byte("changed by the container\n"), 0o644)
	if err := errors.Join(werr, d.Put(ctx, ctr)); err != nil {
		return err
	}
	rc, err := d.Diff(ctx, ctr)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, rc)
	return errors.Join(err, rc.Close())
}

func imageTar() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	motd := []byte("welcome\n")
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755})
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/motd", Mode: 0o644, Size: int64(len(motd))})
	_, _ = tw.Write(motd)
	_ = tw.Close()
	return buf.Bytes()
}
