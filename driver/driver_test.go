package driver

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "layer-1", "sha256_abc.def", strings.Repeat("x", MaxIDLength)} {
		require.NoError(t, ValidateID(id), id)
	}
	for _, id := range []string{"", ".hidden", "-flag", "../x", "a/b", "a b", "ä", "x\x00", strings.Repeat("x", MaxIDLength+1)} {
		err := ValidateID(id)
		require.ErrorIs(t, err, ErrInvalidID, "%q", id)
	}
}

func TestWrapKeepsSentinelAndDoesNotDoubleWrap(t *testing.T) {
	err := Wrap("remove", "L1", ErrHasChildren)
	require.ErrorIs(t, err, ErrHasChildren)
	require.Equal(t, "remove L1: layer has children", err.Error())
	require.Same(t, err, Wrap("remove", "L1", err))
	var le *LayerError
	require.ErrorAs(t, Wrap("apply", "L2", err), &le)
	require.Equal(t, "apply", le.Op)
	require.NoError(t, Wrap("x", "y", nil))
	require.ErrorIs(t, Errorf("get", "L", "mount: %w", ErrNoSpace), ErrNoSpace)
}

func TestRefCounter(t *testing.T) {
	var r RefCounter
	require.Equal(t, -1, r.Decrement("a"), "Put without Get")
	require.Equal(t, 1, r.Increment("a"))
	require.Equal(t, 2, r.Increment("a"))
	require.Equal(t, 1, r.Increment("b"))
	require.Equal(t, 3, r.Total())
	require.ElementsMatch(t, []string{"a", "b"}, r.Active())
	require.Equal(t, 1, r.Decrement("a"))
	require.Equal(t, 0, r.Decrement("a"))
	require.Equal(t, 0, r.Count("a"))
	require.Equal(t, -1, r.Decrement("a"))
}

func TestLockerSeparatesIDs(t *testing.T) {
	var l Locker
	unlockA := l.Lock("a")
	// Another ID is not blocked by "a".
	done := make(chan struct{})
	go func() { l.Lock("b")(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("lock on b waited for a")
	}
	// Readers of one ID share; a writer waits for them.
	unlockA()
	r1, r2 := l.RLock("a"), l.RLock("a")
	got := make(chan struct{})
	go func() { l.Lock("a")(); close(got) }()
	select {
	case <-got:
		t.Fatal("writer did not wait for readers")
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	r2()
	<-got
	require.Empty(t, l.locks, "unused locks are dropped")
}

func TestLockerConcurrent(t *testing.T) {
	var l Locker
	var wg sync.WaitGroup
	n := 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); u := l.Lock("x"); n++; u() }()
	}
	wg.Wait()
	require.Equal(t, 50, n)
}

func TestStreamReleasesAfterCloseAndWrapsErrors(t *testing.T) {
	released := 0
	rc := Stream(context.Background(), "diff", "L", func() { released++ }, func(w io.Writer) error {
		_, err := io.WriteString(w, "hello")
		return err
	})
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
	require.Equal(t, 0, released, "release waits for Close")
	require.NoError(t, rc.Close())
	require.NoError(t, rc.Close())
	require.Equal(t, 1, released)

	boom := errors.New("boom")
	rc = Stream(context.Background(), "diff", "L", nil, func(w io.Writer) error { return boom })
	_, err = io.ReadAll(rc)
	require.ErrorIs(t, err, boom)
	require.Contains(t, err.Error(), "diff L")
	require.NoError(t, rc.Close())
}

func TestStreamStopsWriterOnEarlyCloseAndCancel(t *testing.T) {
	writerErr := make(chan error, 1)
	rc := Stream(context.Background(), "diff", "L", nil, func(w io.Writer) error {
		for {
			if _, err := w.Write(make([]byte, 1024)); err != nil {
				writerErr <- err
				return err
			}
		}
	})
	_, _ = rc.Read(make([]byte, 10))
	require.NoError(t, rc.Close())
	require.Error(t, <-writerErr)

	ctx, cancel := context.WithCancel(context.Background())
	rc = Stream(ctx, "diff", "L", nil, func(w io.Writer) error {
		for {
			if _, err := w.Write(make([]byte, 1024)); err != nil {
				return err
			}
		}
	})
	cancel()
	_, err := io.ReadAll(rc)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, rc.Close())
}
