package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/stratafs/strata/driver"
)

// cmdApply makes a layer from a tar on stdin. The layer appears only if the
// whole tar applied: on failure the half-made layer is removed again, so a
// bad tar changes nothing.
func cmdApply(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("apply")
	parent := fs.String("parent", "", "parent layer ID")
	writable := fs.Bool("writable", false, "make a container layer (mounted read-write)")
	pos, err := parse(fs, args, 1, "ID [--parent P] [--writable] < layer.tar")
	if err != nil {
		return err
	}
	id := pos[0]
	if err := driver.ValidateID(id); err != nil {
		return usageError{err.Error()}
	}
	if isTerminal(e.stdin) {
		return usagef("stdin is a terminal: pipe a layer tar in (strata apply %s < layer.tar)", id)
	}
	d, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Create(ctx, id, *parent, &driver.CreateOpts{Writable: *writable}); err != nil {
		return err
	}
	in := &countingReader{r: e.stdin}
	stop := e.progress(in)
	n, err := d.ApplyDiff(ctx, id, in)
	stop()
	if err != nil {
		// Create succeeded, so the ID was free: removing it restores the
		// state before the command.
		if rerr := d.Remove(context.WithoutCancel(ctx), id); rerr != nil {
			err = errors.Join(err, fmt.Errorf("removing the incomplete layer: %w", rerr))
		}
		return err
	}
	if e.json {
		return writeJSON(e.stdout, struct {
			ID     string `json:"id"`
			Parent string `json:"parent,omitempty"`
			Size   int64  `json:"size"`
			Read   int64  `json:"read"`
		}{id, *parent, n, in.n.Load()})
	}
	fmt.Fprintf(e.stdout, "%s: applied %s (%s read)\n", id, humanSize(n), humanSize(in.n.Load()))
	return nil
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// progress shows a one-line progress counter on stdout while a long apply
// runs, when stdout is a terminal; the returned func stops and erases it.
func (e *env) progress(in *countingReader) (stop func()) {
	if e.json || !isTerminal(e.stdout) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		after, every := e.progressAfter, e.progressEvery
		if every == 0 {
			after, every = time.Second, 250*time.Millisecond
		}
		start := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		shown := false
		for {
			select {
			case <-done:
				if shown {
					fmt.Fprint(e.stdout, "\r\033[K")
				}
				return
			case now := <-t.C:
				el := now.Sub(start)
				if el < after {
					continue // short applies print nothing
				}
				n := in.n.Load()
				rate := float64(n) / el.Seconds()
				fmt.Fprintf(e.stdout, "\r\033[Kapplying: %s read, %s/s, %s", humanSize(n), humanSize(int64(rate)), el.Truncate(time.Second))
				shown = true
			}
		}
	}()
	return func() { close(done); <-finished }
}
