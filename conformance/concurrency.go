package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stratafs/strata/driver"
)

// Concurrent use: operations on different layers and on a parent and its
// children at once, meant to be run with -race.

func testConcurrent(t *testing.T, e *env) {
	base := smallLayer(t, "base", 1)
	e.layer("base", "", base)
	const workers, rounds = 6, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*8)
	report := func(format string, args ...any) { errs <- fmt.Errorf(format, args...) }
	for w := 0; w < workers; w++ {
		tb := smallLayer(t, fmt.Sprintf("w%d", w), 10+w)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				id := fmt.Sprintf("w%d-r%d", w, r)
				opts := &driver.CreateOpts{Writable: r%2 == 1}
				if err := e.d.Create(e.ctx, id, "base", opts); err != nil {
					report("Create(%s): %v", id, err)
					return
				}
				if !opts.Writable {
					if _, err := e.d.ApplyDiff(e.ctx, id, bytes.NewReader(tb)); err != nil {
						report("ApplyDiff(%s): %v", id, err)
					}
				}
				dir, err := e.d.Get(e.ctx, id, nil)
				if err != nil {
					report("Get(%s): %v", id, err)
					return
				}
				if data, err := os.ReadFile(filepath.Join(dir, "base", "file")); err != nil || string(data) != "content of base\n" {
					report("reading base/file in %s: %q, %v", id, data, err)
				}
				if err := e.d.Put(e.ctx, id); err != nil {
					report("Put(%s): %v", id, err)
				}
				if _, err := e.d.Changes(e.ctx, id); err != nil {
					report("Changes(%s): %v", id, err)
				}
				if err := e.d.Remove(e.ctx, id); err != nil {
					report("Remove(%s): %v", id, err)
				}
			}
		}()
		// Readers of the shared parent at the same time.
		go func() {
			defer wg.Done()
			for r := 0; r < rounds*2; r++ {
				if _, err := e.d.Get(e.ctx, "base", nil); err != nil {
					report("Get(base): %v", err)
					return
				}
				if !e.d.Exists("base") {
					report("Exists(base) = false during the run")
				}
				if err := e.d.Put(e.ctx, "base"); err != nil {
					report("Put(base): %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if l, ok := e.d.(driver.Lister); ok {
		checkLayers(t, e, l, map[string]string{"base": ""})
	}
	e.sameTree("base after the concurrent run", reference(t, base), e.view("base"))
	e.noMounts("after the concurrent run")
	if err := e.d.Remove(e.ctx, "base"); err != nil {
		t.Errorf("Remove(base) after all Gets were Put: %v", err)
	}
}

// Removing a parent while children are being created on it: Remove wins
// only when no child exists or is being made, a Create never builds on a
// removed parent, and every layer left has its parent.
func testConcurrentParentRemove(t *testing.T, e *env) {
	const rounds = 8
	errs := make(chan error, rounds*16)
	for r := 0; r < rounds; r++ {
		parent := fmt.Sprintf("p%d", r)
		e.layer(parent, "", smallLayer(t, parent, r))
		var wg sync.WaitGroup
		wg.Add(3)
		for c := 0; c < 2; c++ {
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("%s-c%d", parent, c)
				err := e.d.Create(e.ctx, id, parent, nil)
				switch {
				case err == nil:
					if !e.d.Exists(parent) {
						errs <- fmt.Errorf("Create(%s) succeeded but its parent %s is gone", id, parent)
					}
				case !errors.Is(err, driver.ErrLayerNotFound):
					errs <- fmt.Errorf("Create(%s) racing Remove(%s): %v", id, parent, err)
				}
			}()
		}
		go func() {
			defer wg.Done()
			err := e.d.Remove(e.ctx, parent)
			if err != nil && !errors.Is(err, driver.ErrHasChildren) {
				errs <- fmt.Errorf("Remove(%s) racing Creates of its children: %v", parent, err)
			}
		}()
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if l, ok := e.d.(driver.Lister); ok {
		infos, err := l.Layers(e.ctx)
		if err != nil {
			t.Fatalf("Layers: %v", err)
		}
		for _, in := range infos {
			if in.Parent != "" && !e.d.Exists(in.Parent) {
				t.Errorf("layer %s is left with its parent %s removed", in.ID, in.Parent)
			}
		}
	}
	e.noMounts("after the race")
	e.reopen()
	for r := 0; r < rounds; r++ {
		for c := 0; c < 2; c++ {
			id := fmt.Sprintf("p%d-c%d", r, c)
			if e.d.Exists(id) {
				e.sameTree("child that won its race, after reopen", reference(t, smallLayer(t, fmt.Sprintf("p%d", r), r)), e.view(id))
			}
		}
	}
}

// Two drivers on two roots in one process share nothing: the same ID
// names two different layers, and closing one driver leaves the other
// working.
func testTwoRoots(t *testing.T, e *env) {
	other := &env{t: t, b: e.b, root: makeRoot(t, e.b), ctx: e.ctx}
	other.d = other.open()
	t.Cleanup(func() {
		if other.d != nil {
			other.d.Close()
		}
	})
	l1, l2 := smallLayer(t, "first", 1), smallLayer(t, "second", 2)
	e.layer("x", "", l1)
	other.layer("x", "", l2)
	if _, err := e.d.Get(e.ctx, "x", nil); err != nil {
		t.Fatalf("Get on the first root: %v", err)
	}
	// A Get on one root is no Get on the other.
	if err := other.d.Remove(e.ctx, "x"); err != nil {
		t.Errorf("Remove on the second root while the first root's x is mounted: %v", err)
	}
	if err := e.d.Put(e.ctx, "x"); err != nil {
		t.Fatalf("Put on the first root: %v", err)
	}
	e.sameTree("first root's x after the second root's x was removed", reference(t, l1), e.view("x"))
	if err := other.d.Close(); err != nil {
		t.Fatalf("Close of the second driver: %v", err)
	}
	other.d = nil
	e.create("y", "x", nil)
	e.sameTree("first root after the second driver closed", reference(t, l1), e.view("y"))
}
