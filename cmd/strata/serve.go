package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/metrics"
)

// shutdownGrace bounds how long serve waits for requests in flight (an
// ApplyDiff through the API, say) once it is told to stop.
const shutdownGrace = 30 * time.Second

// cmdServe opens the driver, instruments it on a registry of its own and
// serves /metrics and /healthz until ctx ends (SIGTERM or SIGINT, see
// main). With --api it also serves a small layer API, so that the daemon
// is a working example of an embedding one and can be driven from tests;
// on shutdown it Puts every mount made through that API and then closes
// the driver.
func cmdServe(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("serve")
	listen := fs.String("listen", "127.0.0.1:9090", "address to serve on (port 0 picks a free one)")
	perLayer := fs.Bool("per-layer", false, "copy-up gauges per writable layer, labelled with the layer ID")
	api := fs.Bool("api", false, "serve the layer API under /v1/ (loopback addresses only)")
	budget := fs.Duration("scrape-budget", 0, "time one scrape may spend on copy-up figures (0: 2s)")
	ttl := fs.Duration("copyup-ttl", 0, "how long copy-up figures are cached per layer (0: 15s, negative: never)")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return usageError{err.Error()}
	}
	const apiLoopbackOnly = "--api mounts and removes layers for anyone who can connect: it is only allowed on a loopback address"
	// A literal address is refused before listening on it even briefly; a
	// host name is checked on the address it resolved to.
	if ip := net.ParseIP(host); *api && (host == "" || ip != nil && !ip.IsLoopback()) {
		return usagef("%s, not %q", apiLoopbackOnly, *listen)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	if ta, ok := ln.Addr().(*net.TCPAddr); *api && !(ok && ta.IP.IsLoopback()) {
		return usagef("%s, not %s", apiLoopbackOnly, ln.Addr())
	}

	inner, err := e.open(ctx)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d, err := metrics.Instrument(inner, reg, metrics.Options{PerLayer: *perLayer, ScrapeBudget: *budget, CopyUpTTL: *ttl})
	if err != nil {
		return errors.Join(err, inner.Close())
	}
	s := &serveState{d: d, mounts: map[string]int{}}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg, // promhttp_* metrics about the handler itself
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	if *api {
		s.routes(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(e.stdout, "strata serve: %s driver on %s, listening on http://%s\n", d.Name(), e.root, ln.Addr())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	released, putErr := s.releaseAll(sctx)
	closeErr := d.Close()
	fmt.Fprintf(e.stderr, "strata serve: stopped; released %d mount(s), driver closed\n", released)
	return errors.Join(serveErr, shutErr, putErr, closeErr)
}

// serveState holds the instrumented driver and the mounts made through the API.
type serveState struct {
	d driver.Driver

	mu     sync.Mutex
	mounts map[string]int // Gets made through the API and not yet Put
}

func (s *serveState) healthz(w http.ResponseWriter, r *http.Request) {
	// Status reads the backend's own state: a root that vanished or a
	// closed driver shows here rather than as a silent scrape.
	st := s.d.Status(r.Context())
	if st.Driver == "" {
		http.Error(w, "driver unavailable", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ok %s %d layers\n", st.Driver, st.Layers)
}

// releaseAll Puts every mount made through the API.
func (s *serveState) releaseAll(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.mounts))
	for id := range s.mounts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	n := 0
	var errs []error
	for _, id := range ids {
		for ; s.mounts[id] > 0; s.mounts[id]-- {
			if err := s.d.Put(ctx, id); err != nil {
				errs = append(errs, err)
				break
			}
			n++
		}
		delete(s.mounts, id)
	}
	return n, errors.Join(errs...)
}

// routes adds the layer API:
//
//	GET    /v1/layers                  list (JSON)
//	POST   /v1/layers/{id}?parent=P&writable=true
//	DELETE /v1/layers/{id}
//	PUT    /v1/layers/{id}/tar         ApplyDiff of the request body
//	GET    /v1/layers/{id}/tar         Diff
//	POST   /v1/layers/{id}/mount       Get; answers {"path": ...}
//	POST   /v1/layers/{id}/unmount     Put of a mount made through the API
func (s *serveState) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/layers", s.list)
	mux.HandleFunc("POST /v1/layers/{id}", s.create)
	mux.HandleFunc("DELETE /v1/layers/{id}", s.remove)
	mux.HandleFunc("PUT /v1/layers/{id}/tar", s.apply)
	mux.HandleFunc("GET /v1/layers/{id}/tar", s.diff)
	mux.HandleFunc("POST /v1/layers/{id}/mount", s.mount)
	mux.HandleFunc("POST /v1/layers/{id}/unmount", s.unmount)
}

func (s *serveState) list(w http.ResponseWriter, r *http.Request) {
	l, ok := s.d.(driver.Lister)
	if !ok {
		serveError(w, fmt.Errorf("%s cannot list layers: %w", s.d.Name(), driver.ErrNotSupported))
		return
	}
	ls, err := l.Layers(r.Context())
	if err != nil {
		serveError(w, err)
		return
	}
	serveJSON(w, http.StatusOK, ls)
}

func (s *serveState) create(w http.ResponseWriter, r *http.Request) {
	writable, err := serveQueryBool(r, "writable")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := r.PathValue("id")
	if err := s.d.Create(r.Context(), id, r.URL.Query().Get("parent"), &driver.CreateOpts{Writable: writable}); err != nil {
		serveError(w, err)
		return
	}
	serveJSON(w, http.StatusCreated, map[string]string{"id": id})
}

func (s *serveState) remove(w http.ResponseWriter, r *http.Request) {
	if err := s.d.Remove(r.Context(), r.PathValue("id")); err != nil {
		serveError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *serveState) apply(w http.ResponseWriter, r *http.Request) {
	n, err := s.d.ApplyDiff(r.Context(), r.PathValue("id"), r.Body)
	if err != nil {
		serveError(w, err)
		return
	}
	serveJSON(w, http.StatusOK, map[string]int64{"applied": n})
}

func (s *serveState) diff(w http.ResponseWriter, r *http.Request) {
	rc, err := s.d.Diff(r.Context(), r.PathValue("id"))
	if err != nil {
		serveError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/vnd.oci.image.layer.v1.tar")
	// Once the body has started a failure can only cut it short; the
	// client sees a truncated tar, which tar readers reject.
	_, _ = io.Copy(w, rc)
}

func (s *serveState) mount(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.d.Get(r.Context(), id, nil)
	if err != nil {
		serveError(w, err)
		return
	}
	s.mounts[id]++
	serveJSON(w, http.StatusOK, map[string]string{"path": p})
}

func (s *serveState) unmount(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mounts[id] == 0 {
		http.Error(w, "layer "+id+" is not mounted through this server", http.StatusConflict)
		return
	}
	if err := s.d.Put(r.Context(), id); err != nil {
		serveError(w, err)
		return
	}
	if s.mounts[id]--; s.mounts[id] == 0 {
		delete(s.mounts, id)
	}
	w.WriteHeader(http.StatusNoContent)
}

func serveQueryBool(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: not a boolean", key, v)
	}
	return b, nil
}

// serveError answers with the status that matches err's kind.
func serveError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch metrics.ErrorKind(err) {
	case "not_found":
		code = http.StatusNotFound
	case "exists", "in_use", "has_children":
		code = http.StatusConflict
	case "invalid_id":
		code = http.StatusBadRequest
	case "no_space":
		code = http.StatusInsufficientStorage
	case "not_supported":
		code = http.StatusNotImplemented
	}
	http.Error(w, oneLine(err), code)
}

func serveJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
