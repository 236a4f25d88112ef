package conformance

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
)

// raceSecret is the content of the host files a racing container tries
// to get into a layer's Diff.
const raceSecret = "HOST-SECRET-outside-the-view"

// testDiffRacingWriter: a container swaps a directory of its writable
// layer for a symlink to a host directory, and back, as fast as it can,
// while Diff and Changes run in a loop (docker cp's CVE-2018-15664). No
// byte and no name of the host directory may appear in any output; a
// Diff or Changes that fails because the layer changed under it is fine.
func testDiffRacingWriter(t *testing.T, e *env) {
	host := TempRoot(t)
	names := []string{"a", "b", "c", "f", "g", "h"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(host, n), []byte(raceSecret+" "+n+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(host, n+".hostdir"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	e.layer("p", "", smallLayer(t, "p", 1))
	e.create("w", "p", &driver.CreateOpts{Writable: true})
	view, err := e.d.Get(e.ctx, "w", nil)
	if err != nil {
		t.Fatalf("Get(w): %v", err)
	}
	defer e.d.Put(e.ctx, "w")
	// d and the symlink dlink are exchanged atomically (RENAME_EXCHANGE):
	// d is always there, half of the time as a symlink to the host.
	d, link := filepath.Join(view, "d"), filepath.Join(view, "dlink")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, link); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(d, n), []byte("the layer's own "+n+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var swaps int
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
				swaps++
			}
		}
	}()

	// Each round is one Diff and one Changes; 100 rounds caught the old
	// path-based walk on every backend (overlay2 at once, vfs within a
	// few hundred walks).
	rounds := 100
	if testing.Short() {
		rounds = 30
	}
	var failed, leaked int
	for i := 0; i < rounds && leaked == 0; i++ {
		rc, err := e.d.Diff(e.ctx, "w")
		if err == nil {
			var b []byte
			b, err = io.ReadAll(rc)
			rc.Close()
			if bytes.Contains(b, []byte(raceSecret)) || bytes.Contains(b, []byte(".hostdir")) {
				t.Errorf("Diff round %d carries a host file or directory", i)
				leaked++
			}
		}
		if err != nil {
			failed++
		}
		ch, err := e.d.Changes(e.ctx, "w")
		if err != nil {
			failed++
			continue
		}
		for _, c := range ch {
			if strings.Contains(c.Path, ".hostdir") {
				t.Errorf("Changes round %d lists %s from the host directory", i, c.Path)
				leaked++
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rounds of Diff+Changes, %d calls failed as the layer changed, %d swaps", rounds, failed, swaps)
	if swaps == 0 {
		t.Fatal("the writer never swapped: the case proved nothing")
	}
}
