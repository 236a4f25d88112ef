package archive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// hostSecret is the content of the file outside the view that a racing
// writer tries to get into a diff.
const hostSecret = "HOST-SECRET-root-only-content"

// swapper plays the container of CVE-2018-15664: it exchanges the
// directory d of the view with a symlink to a host directory holding the
// same names (RENAME_EXCHANGE, so d is always there, half of the time as
// the symlink), as fast as it can, until stop is closed.
func swapper(t testing.TB, view, host string, stop <-chan struct{}, wg *sync.WaitGroup) *atomic.Int64 {
	t.Helper()
	var swaps atomic.Int64
	d, link := filepath.Join(view, "d"), filepath.Join(view, "dlink")
	must(t, os.Symlink(host, link))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				if fi, err := os.Lstat(d); err == nil && fi.Mode()&os.ModeSymlink != 0 {
					unix.Renameat2(unix.AT_FDCWD, d, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE)
				}
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, d, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE) == nil {
				swaps.Add(1)
			}
		}
	}()
	return &swaps
}

// raceFixture makes a view with d/f (and more files, so a walk spends time
// in d) and a host directory with the same names holding hostSecret.
func raceFixture(t testing.TB) (parent, view, host string) {
	sb := sandbox(t)
	parent, view, host = filepath.Join(sb, "parent"), filepath.Join(sb, "view"), filepath.Join(sb, "host")
	for _, dir := range []string{parent, view, host} {
		must(t, os.MkdirAll(dir, 0o755))
	}
	must(t, os.Mkdir(filepath.Join(view, "d"), 0o755))
	for _, n := range []string{"a", "b", "c", "f", "g", "h"} {
		must(t, os.WriteFile(filepath.Join(view, "d", n), []byte("the view's own "+n+"\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(host, n), []byte(hostSecret+" "+n+"\n"), 0o600))
		must(t, os.Mkdir(filepath.Join(host, n+".dir"), 0o700))
	}
	return parent, view, host
}

// TestDiffRacingSymlinkSwap: a writer swapping a directory of the view for
// a symlink to a host directory while WriteDir, Changes and WriteChanges
// run must never get a byte of the host directory into their output
// (CVE-2018-15664). Errors are allowed (the view changed under the walk);
// leaks are not.
func TestDiffRacingSymlinkSwap(t *testing.T) {
	requireRoot(t)
	parent, view, host := raceFixture(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	swaps := swapper(t, view, host, stop, &wg)
	defer func() { close(stop); wg.Wait() }()

	ctx := context.Background()
	iterations := 300
	if testing.Short() {
		iterations = 100
	}
	var runs, errs int
	for i := 0; i < iterations; i++ {
		var buf bytes.Buffer
		err := WriteDir(ctx, &buf, view, DiffOptions{})
		runs++
		if err != nil {
			errs++
		}
		if bytes.Contains(buf.Bytes(), []byte(hostSecret)) || bytes.Contains(buf.Bytes(), []byte(".dir/")) {
			t.Fatalf("WriteDir run %d put a host file or directory into the tar", i)
		}
		ch, err := Changes(ctx, parent, view)
		runs++
		if err != nil {
			errs++
			continue
		}
		for _, c := range ch {
			if strings.Contains(c.Path, ".dir") {
				t.Fatalf("Changes run %d listed %s, a host directory's entry", i, c.Path)
			}
		}
		buf.Reset()
		if err := WriteChanges(ctx, &buf, view, ch); err != nil {
			errs++
		}
		runs++
		if bytes.Contains(buf.Bytes(), []byte(hostSecret)) {
			t.Fatalf("WriteChanges run %d put host file content into the tar", i)
		}
	}
	t.Logf("%d walks, %d ended in an error (the view changed), %d swaps", runs, errs, swaps.Load())
	if swaps.Load() == 0 {
		t.Fatal("the writer never swapped: the test proved nothing")
	}
}
