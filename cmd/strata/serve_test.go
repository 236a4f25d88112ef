package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	dto "github.com/prometheus/client_model/go"

	"github.com/stratafs/strata/drivers"
)

// TestServeEndToEnd builds strata, starts `strata serve` on a free
// loopback port, drives layers through its API, scrapes /metrics over
// HTTP, has promtool check the scrape, and stops it with SIGTERM.
func TestServeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the strata binary")
	}
	bin := filepath.Join(serveTempDir(t), "strata")
	// go test puts its own GOROOT/bin first in PATH.
	goBin, err := exec.LookPath("go")
	require.NoError(t, err)
	build := exec.Command(goBin, "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	for _, name := range []string{"vfs", "overlay2"} {
		t.Run(name, func(t *testing.T) { serveEndToEnd(t, bin, name) })
	}
}

func serveEndToEnd(t *testing.T, bin, name string) {
	root := filepath.Join(serveTempDir(t), "root")
	if v := serveVerdict(t, root, name); v != nil {
		t.Skipf("%s cannot run here: %v", name, v)
	}
	const lowerFiles, newFiles = 7, 5
	srv := startServe(t, bin, root, name)

	// An image layer with lowerFiles files of distinct sizes, and a
	// container on it.
	var files []serveFile
	for i := range lowerFiles {
		files = append(files, serveFile{fmt.Sprintf("etc/f%d", i), bytes.Repeat([]byte{'a' + byte(i)}, 1000*(i+1))})
	}
	srv.do(t, "POST", "/v1/layers/base", nil, http.StatusCreated)
	var applied struct{ Applied int64 }
	srv.doJSON(t, "PUT", "/v1/layers/base/tar", serveTar(t, files), http.StatusOK, &applied)
	require.Positive(t, applied.Applied)
	srv.do(t, "POST", "/v1/layers/ctr?parent=base&writable=true", nil, http.StatusCreated)

	// The container modifies every lower file (overlay copies each up
	// whole, then the write makes it one byte longer) and creates new ones.
	var mnt struct{ Path string }
	srv.doJSON(t, "POST", "/v1/layers/ctr/mount", nil, http.StatusOK, &mnt)
	var copiedBytes, newBytes int64
	for _, f := range files {
		fh, err := os.OpenFile(filepath.Join(mnt.Path, f.name), os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = fh.Write([]byte{'!'})
		require.NoError(t, errors.Join(err, fh.Close()))
		copiedBytes += int64(len(f.data)) + 1
	}
	for i := range newFiles {
		data := bytes.Repeat([]byte{'n'}, 300*(i+1))
		require.NoError(t, os.WriteFile(filepath.Join(mnt.Path, fmt.Sprintf("new%d", i)), data, 0o644))
		newBytes += int64(len(data))
	}
	srv.do(t, "POST", "/v1/layers/ctr/unmount", nil, http.StatusNoContent)
	srv.do(t, "POST", "/v1/layers/ctr/unmount", nil, http.StatusConflict)

	diff := srv.do(t, "GET", "/v1/layers/ctr/tar", nil, http.StatusOK)
	require.NotEmpty(t, diff)
	srv.do(t, "GET", "/v1/layers/missing/tar", nil, http.StatusNotFound)
	srv.do(t, "DELETE", "/v1/layers/base", nil, http.StatusConflict)
	// Left mounted on purpose: shutdown must release it.
	srv.doJSON(t, "POST", "/v1/layers/ctr/mount", nil, http.StatusOK, &mnt)

	scrape := srv.do(t, "GET", "/metrics", nil, http.StatusOK)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(scrape))
	require.NoError(t, err)
	get := func(metric string, labels ...string) float64 {
		return serveValue(t, mfs, metric, labels...)
	}
	assert.Equal(t, 2.0, get("strata_layers", "driver", name))
	assert.Equal(t, 1.0, get("strata_active_mounts"))
	assert.Equal(t, float64(applied.Applied), get("strata_applied_bytes_total"))
	assert.Equal(t, float64(len(diff)), get("strata_diffed_bytes_total"))
	assert.Equal(t, 2.0, get("strata_operations_total", "op", "get"))
	assert.Equal(t, 1.0, get("strata_operations_total", "op", "put"))
	assert.Equal(t, 2.0, get("strata_operations_total", "op", "diff"))
	assert.Equal(t, 2.0, get("strata_operation_duration_seconds", "op", "diff"), "both diffs ended")
	assert.Equal(t, 1.0, get("strata_operation_errors_total", "op", "diff", "kind", "not_found"))
	assert.Equal(t, 1.0, get("strata_operation_errors_total", "op", "remove", "kind", "has_children"))
	assert.Equal(t, 1.0, get("strata_writable_layers"))
	switch name {
	case "overlay2":
		assert.Equal(t, float64(lowerFiles), get("strata_copyup_files"))
		assert.Equal(t, float64(copiedBytes), get("strata_copyup_bytes"))
		assert.Equal(t, float64(newFiles), get("strata_new_files"))
		assert.Equal(t, float64(newBytes), get("strata_new_bytes"))
	case "vfs":
		// vfs copied the whole image at Create, before any write.
		assert.Equal(t, float64(lowerFiles), get("strata_copyup_files"))
		assert.Equal(t, float64(copiedBytes-lowerFiles), get("strata_copyup_bytes"))
	}
	assert.NotContains(t, string(scrape), `id="`, "no layer IDs in labels without --per-layer")
	assert.Contains(t, string(scrape), "go_goroutines", "Go collector")
	assert.Contains(t, string(scrape), "process_cpu_seconds_total", "process collector")

	health := srv.do(t, "GET", "/healthz", nil, http.StatusOK)
	assert.Contains(t, string(health), "ok "+name)

	t.Run("promtool", func(t *testing.T) { servePromtool(t, scrape) })

	stderr := srv.stop(t)
	assert.Contains(t, stderr, "released 1 mount(s)")
	assertNoMountsUnder(t, root)

	// Nothing is left held: the layers can be removed by a new process.
	d, err := drivers.Open(context.Background(), root, drivers.Options{Driver: name})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.Remove(context.Background(), "ctr"))
	require.NoError(t, d.Remove(context.Background(), "base"))
}

// The layer API refuses to listen where others could reach it.
func TestServeAPIOnlyOnLoopback(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--root", serveTempDir(t), "--driver", "vfs", "serve", "--listen", "0.0.0.0:0", "--api"}, nil, &stdout, &stderr)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr.String(), "loopback")
}

type serveFile struct {
	name string
	data []byte
}

func serveTar(t *testing.T, files []serveFile) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}))
	for _, f := range files {
		require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data))}))
		_, err := tw.Write(f.data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// serveTempDir is a fresh directory on disk (not tmpfs) removed after the
// test.
func serveTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/var/tmp", "strata-serve-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveVerdict says why backend name cannot run on root, or nil.
func serveVerdict(t *testing.T, root, name string) error {
	d, err := drivers.Open(context.Background(), root, drivers.Options{Driver: name})
	if err != nil {
		return err
	}
	return d.Close()
}

type serveProc struct {
	cmd    *exec.Cmd
	base   string
	stderr *bytes.Buffer
	exited chan error
}

func startServe(t *testing.T, bin, root, name string) *serveProc {
	cmd := exec.Command(bin, "--root", root, "--driver", name, "serve", "--listen", "127.0.0.1:0", "--api", "--copyup-ttl", "-1s")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := &serveProc{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.exited <- cmd.Wait()
	}()
	select {
	case p.base = <-addr:
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("strata serve exited before listening: %v\n%s", err, p.stderr)
	case <-time.After(time.Minute):
		t.Fatalf("strata serve did not say where it listens within a minute\n%s", p.stderr)
	}
	return p
}

func (p *serveProc) do(t *testing.T, method, path string, body []byte, want int) []byte {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, bytes.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, want, resp.StatusCode, "%s %s: %s", method, path, b)
	return b
}

func (p *serveProc) doJSON(t *testing.T, method, path string, body []byte, want int, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(p.do(t, method, path, body, want), v))
}

// stop sends SIGTERM and returns stderr once the process exited cleanly.
func (p *serveProc) stop(t *testing.T) string {
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		require.NoError(t, err, "exit after SIGTERM; stderr:\n%s", p.stderr)
	case <-time.After(time.Minute):
		t.Fatalf("strata serve still running a minute after SIGTERM\n%s", p.stderr)
	}
	return p.stderr.String()
}

func serveValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	require.True(t, ok, "%s not in the scrape", name)
	var found []*dto.Metric
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		found = append(found, m)
	}
	require.Len(t, found, 1, "%s%v", name, labels)
	m := found[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("%s: unexpected type", name)
	return 0
}

// servePromtool runs `promtool check metrics` on a scrape.
func servePromtool(t *testing.T, scrape []byte) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skipf("promtool not installed (Debian package prometheus): %v", err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)
	assert.Empty(t, strings.TrimSpace(string(out)), "promtool check metrics")
}

// assertNoMountsUnder checks that no mount is left below root.
func assertNoMountsUnder(t *testing.T, root string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], root+"/") {
			t.Errorf("mount left behind: %s", line)
		}
	}
}

// In process, as main runs it: --per-layer adds the id-labelled gauges,
// and cancelling the context (what SIGTERM does in main) releases the
// API's mounts and returns 0.
func TestServeInProcess(t *testing.T) {
	root := serveTempDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--root", root, "--driver", "vfs", "serve", "--listen", "127.0.0.1:0", "--api", "--per-layer", "--copyup-ttl", "-1s"}, nil, pw, &stderr)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err, "stderr: %s", &stderr)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	m := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(line)
	require.NotEmpty(t, m, line)
	p := &serveProc{base: m}

	p.do(t, "POST", "/v1/layers/img", nil, http.StatusCreated)
	p.do(t, "PUT", "/v1/layers/img/tar", serveTar(t, []serveFile{{"etc/a", []byte("abc")}}), http.StatusOK)
	p.do(t, "POST", "/v1/layers/ctr?parent=img&writable=yes", nil, http.StatusBadRequest)
	p.do(t, "POST", "/v1/layers/ctr?parent=img&writable=true", nil, http.StatusCreated)
	p.do(t, "POST", "/v1/layers/ctr/mount", nil, http.StatusOK)
	p.do(t, "DELETE", "/v1/layers/ctr", nil, http.StatusConflict)
	p.do(t, "POST", "/v1/layers/bad..id!", nil, http.StatusBadRequest)
	var ls []struct{ ID string }
	p.doJSON(t, "GET", "/v1/layers", nil, http.StatusOK, &ls)
	assert.Len(t, ls, 2)

	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(p.do(t, "GET", "/metrics", nil, http.StatusOK)))
	require.NoError(t, err)
	assert.Equal(t, 1.0, serveValue(t, mfs, "strata_layer_copyup_files", "id", "ctr"))
	assert.Equal(t, 3.0, serveValue(t, mfs, "strata_layer_copyup_bytes", "id", "ctr"))
	assert.Equal(t, 1.0, serveValue(t, mfs, "strata_active_mounts"))

	cancel()
	select {
	case c := <-code:
		assert.Equal(t, 0, c, "stderr: %s", &stderr)
	case <-time.After(time.Minute):
		t.Fatal("serve did not return a minute after its context ended")
	}
	assert.Contains(t, stderr.String(), "released 1 mount(s)")
}
