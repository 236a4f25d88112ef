package conformance

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stratafs/strata/internal/layergen"
)

// childEnv names the environment variable that turns a re-executed test
// binary into a crash-test child (see Main).
const childEnv = "STRATA_CONFORMANCE_CHILD"

// Lines a child writes on its stdout for the parent.
const (
	childHello    = "strata-conformance-child"
	childProgress = "progress"
	childDone     = "done"
)

// Main is what a backend's test package calls from TestMain:
//
//	func TestMain(m *testing.M) { conformance.Main(m, backends) }
//
// In the normal run it just runs the tests. The crash cases re-execute the
// test binary with a job in the environment; Main then opens the named
// backend on the given root, runs the job until the parent kills it with
// SIGKILL, and never returns. A test binary whose TestMain does not call
// Main still passes the suite, with the crash cases skipped.
func Main(m *testing.M, backends func() []Backend) {
	if job := os.Getenv(childEnv); job != "" {
		os.Exit(RunChild(job, backends()))
	}
	os.Exit(m.Run())
}

// childJob is what the parent asks a child to do.
type childJob struct {
	Backend string `json:"backend"`
	Root    string `json:"root"`
	// Op is "apply" (Create ID on Parent, then ApplyDiff of an endless
	// stream), "apply-finite" (the same with a generated layer that ends),
	// "create" (Create ID on Parent), "mount" (Get ID and write a
	// file through it) or "remove" (Remove ID).
	Op     string `json:"op"`
	ID     string `json:"id"`
	Parent string `json:"parent,omitempty"`
}

// RunChild runs one crash-test job (the value of the environment variable
// the suite sets) against the backend of that name and returns the exit
// code. It only returns early on failure: a job's end is the parent's
// SIGKILL. Main calls it; a test binary with its own TestMain may too.
func RunChild(job string, backends []Backend) int {
	fmt.Println(childHello)
	var j childJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		fmt.Fprintf(os.Stderr, "child: bad job %q: %v\n", job, err)
		return 2
	}
	var b *Backend
	for i := range backends {
		if backends[i].Name == j.Backend {
			b = &backends[i]
		}
	}
	if b == nil {
		fmt.Fprintf(os.Stderr, "child: no backend %q\n", j.Backend)
		return 2
	}
	if err := runJob(context.Background(), *b, j); err != nil {
		fmt.Fprintf(os.Stderr, "child: %s %s: %v\n", j.Op, j.ID, err)
		return 1
	}
	fmt.Println(childDone)
	// Stay alive, holding whatever the job left open, until killed.
	for {
		time.Sleep(time.Hour)
	}
}

func runJob(ctx context.Context, b Backend, j childJob) error {
	d, err := b.New(ctx, j.Root)
	if err != nil {
		return err
	}
	switch j.Op {
	case "apply":
		if err := d.Create(ctx, j.ID, j.Parent, nil); err != nil {
			return err
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(endlessTar(pw, 8<<20)) }()
		_, err := d.ApplyDiff(ctx, j.ID, pr)
		if err == nil {
			err = fmt.Errorf("ApplyDiff of an endless stream returned")
		}
		return err
	case "apply-finite":
		if err := d.Create(ctx, j.ID, j.Parent, nil); err != nil {
			return err
		}
		fmt.Println(childProgress)
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(layergen.Base(pw, finiteSpec())) }()
		_, err := d.ApplyDiff(ctx, j.ID, pr)
		return err
	case "create":
		fmt.Println(childProgress)
		return d.Create(ctx, j.ID, j.Parent, nil)
	case "mount":
		dir, err := d.Get(ctx, j.ID, nil)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dir+"/written-before-the-kill", []byte("kept\n"), 0o644); err != nil {
			return err
		}
		fmt.Println(childProgress)
		return nil
	case "remove":
		fmt.Println(childProgress)
		return d.Remove(ctx, j.ID)
	}
	return fmt.Errorf("unknown op %q", j.Op)
}

// finiteSpec is the generated layer the "apply-finite" child applies.
func finiteSpec() layergen.Spec { return layergen.Spec{Files: 300, TotalBytes: 3 << 20, Seed: 11} }

// endlessTar writes a layer tar that never ends: 64 KiB files in
// directories of 100. Once progressAfter bytes have gone into the pipe
// (and so into ApplyDiff) it tells the parent.
func endlessTar(w io.Writer, progressAfter int64) error {
	tw := tar.NewWriter(w)
	body := []byte(strings.Repeat("endless layer content\n", 3000))[:64<<10]
	var sent int64
	told := false
	mtime := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; ; i++ {
		if i%100 == 0 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%06d/", i/100), Mode: 0o755, ModTime: mtime}); err != nil {
				return err
			}
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%06d/f%06d", i/100, i), Mode: 0o644, Size: int64(len(body)), ModTime: mtime}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(body); err != nil {
			return err
		}
		sent += int64(len(body)) + 512
		if !told && sent >= progressAfter {
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Println(childProgress)
			told = true
		}
	}
}

// readLines feeds the lines of r to a channel, closed at EOF.
func readLines(r io.Reader) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}
