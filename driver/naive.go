package driver

import (
	"context"
	"io"

	"github.com/stratafs/strata/archive"
)

// ViewFunc returns the directory holding layer id's whole view (mounting
// it if needed) and the function that releases it. For id == "" it
// returns "" (an empty parent).
type ViewFunc func(ctx context.Context, id string) (dir string, release func(), err error)

// NaiveDiff computes Changes and Diff of a layer by comparing its view with
// its parent's view. It is the fallback for backends without a native diff
// and the reference the suite compares native diffs against.
type NaiveDiff struct {
	View   ViewFunc
	Parent func(id string) (string, error)
}

// Changes lists what differs between id and its parent.
func (n NaiveDiff) Changes(ctx context.Context, id string) ([]Change, error) {
	dir, parentDir, release, err := n.views(ctx, id)
	if err != nil {
		return nil, Wrap("changes", id, err)
	}
	defer release()
	ch, err := archive.Changes(ctx, parentDir, dir)
	return ch, Wrap("changes", id, err)
}

// Diff streams id's changes as an OCI layer tar. The views stay held until
// the stream is closed.
func (n NaiveDiff) Diff(ctx context.Context, id string) (io.ReadCloser, error) {
	dir, parentDir, release, err := n.views(ctx, id)
	if err != nil {
		return nil, Wrap("diff", id, err)
	}
	ch, err := archive.Changes(ctx, parentDir, dir)
	if err != nil {
		release()
		return nil, Wrap("diff", id, err)
	}
	return Stream(ctx, "diff", id, release, func(w io.Writer) error {
		return archive.WriteChanges(ctx, w, dir, ch)
	}), nil
}

func (n NaiveDiff) views(ctx context.Context, id string) (dir, parentDir string, release func(), err error) {
	parent, err := n.Parent(id)
	if err != nil {
		return "", "", nil, err
	}
	dir, rel, err := n.View(ctx, id)
	if err != nil {
		return "", "", nil, err
	}
	parentDir, relParent, err := n.View(ctx, parent)
	if err != nil {
		rel()
		return "", "", nil, err
	}
	return dir, parentDir, func() { relParent(); rel() }, nil
}

// Stream runs write in a goroutine feeding the returned reader; release
// runs once the writer is done and the reader is closed. Closing the reader
// early, or cancelling ctx, stops the writer with an error. Errors are
// wrapped with op and id.
func Stream(ctx context.Context, op, id string, release func(), write func(w io.Writer) error) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(Wrap(op, id, ctx.Err())) })
	go func() {
		defer close(done)
		defer stop()
		pw.CloseWithError(Wrap(op, id, write(pw)))
	}()
	return &stream{PipeReader: pr, done: done, release: release}
}

type stream struct {
	*io.PipeReader
	done    chan struct{}
	release func()
	closed  bool
}

func (s *stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.PipeReader.CloseWithError(io.ErrClosedPipe)
	<-s.done
	if s.release != nil {
		s.release()
	}
	return nil
}
