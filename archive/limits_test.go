package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	lg "github.com/stratafs/strata/internal/layergen"
)

// TestApplySparseBombRefused: a tar of a few KiB whose PAX sparse entries
// declare 4 TiB each must be refused with ErrTooLarge after at most the
// hole budget, not unpacked for minutes into a "4 TiB" layer. The
// context only bounds the test: the old code spends minutes per entry
// and ends in a deadline error instead of the limit.
func TestApplySparseBombRefused(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	const tib = int64(1) << 40
	bomb := lg.SparseTar(
		lg.SparseFile{Name: "a", Size: 4 * tib, Offset: 4*tib - 5, Data: "tail\n"},
		lg.SparseFile{Name: "b", Size: 4 * tib, Offset: 0, Data: "head\n"},
	)
	t.Logf("bomb: %d bytes of tar", len(bomb))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := Apply(ctx, root, bytes.NewReader(bomb), ApplyOptions{})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Apply of a 4 TiB sparse bomb = %d, %v; want ErrTooLarge", n, err)
	}
	t.Logf("refused: %v", err)
	// The small budget: the same refusal, with the option's name in it.
	_, err = Apply(context.Background(), root, bytes.NewReader(bomb), ApplyOptions{MaxHoleBytes: 1 << 20})
	if !errors.Is(err, ErrTooLarge) || !bytes.Contains([]byte(err.Error()), []byte("MaxHoleBytes")) {
		t.Errorf("Apply with MaxHoleBytes 1 MiB = %v; want ErrTooLarge naming MaxHoleBytes", err)
	}
}

// TestApplySparseWithinBudget: a sparse entry within the budget comes out
// with its data at the right offset, its full size, and holes on disk.
func TestApplySparseWithinBudget(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	const size, off = 256 << 20, 200 << 20
	tb := lg.SparseTar(lg.SparseFile{Name: "s", Size: size, Offset: off, Data: "in the middle"})
	n, err := Apply(context.Background(), root, bytes.NewReader(tb), ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Errorf("Apply returned %d bytes, want %d", n, size)
	}
	p := filepath.Join(root, "s")
	var st unix.Stat_t
	must(t, unix.Stat(p, &st))
	if st.Size != size || st.Blocks*512 > 1<<20 {
		t.Errorf("size %d, %d bytes on disk; want %d and holes", st.Size, st.Blocks*512, size)
	}
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	got := make([]byte, 13)
	_, err = f.ReadAt(got, off)
	must(t, err)
	if string(got) != "in the middle" {
		t.Errorf("data at offset %d = %q", off, got)
	}
	// Unlimited: a negative budget turns the check off.
	_, root2 := target(t)
	if _, err := Apply(context.Background(), root2, bytes.NewReader(tb), ApplyOptions{MaxHoleBytes: -1}); err != nil {
		t.Errorf("MaxHoleBytes -1: %v", err)
	}
	// Below the entry's holes: refused.
	if _, err := Apply(context.Background(), root2, bytes.NewReader(tb), ApplyOptions{MaxHoleBytes: 64 << 20}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxHoleBytes 64 MiB for 256 MiB of holes = %v, want ErrTooLarge", err)
	}
}

// TestApplyCutAfterZeros: a stream cut at an entry boundary right after a
// file whose content ends in zeros (so its last 1024 bytes are zero, like
// an end-of-archive trailer) must be refused as truncated, not applied as
// complete without the entries after it.
func TestApplyCutAfterZeros(t *testing.T) {
	requireRoot(t)
	zeros := lg.Entry{Name: "zeros", Content: append([]byte("head"), make([]byte, 8192)...)}
	whole := lg.Tar(zeros, lg.File("after", "lost if the cut passes\n"))
	first := lg.Tar(zeros)
	cut := whole[:len(first)-1024] // the first entry, whole, and nothing more
	if !bytes.Equal(cut[len(cut)-1024:], make([]byte, 1024)) {
		t.Fatal("fixture: the cut stream should end in 1024 zero bytes")
	}
	_, root := target(t)
	if _, err := Apply(context.Background(), root, bytes.NewReader(cut), ApplyOptions{}); !errors.Is(err, ErrInvalidTar) {
		t.Errorf("Apply of a tar cut after a zero-filled file = %v; want ErrInvalidTar", err)
	}
	// The same bytes with their end-of-archive blocks are a whole tar.
	_, root2 := target(t)
	apply(t, root2, first, ApplyOptions{})
	// A tar cut inside the trailer (one zero block of two) is cut too.
	if _, err := Apply(context.Background(), root, bytes.NewReader(first[:len(first)-512]), ApplyOptions{}); !errors.Is(err, ErrInvalidTar) {
		t.Errorf("Apply of a tar with one end block of two = %v; want ErrInvalidTar", err)
	}
}
