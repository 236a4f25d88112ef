package archive

// The content of regular files: holes for zero blocks and for what a
// sparse map makes up, charged to the hole budget.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// content copies size bytes from r to fd through the one buffer, leaving
// all-zero blocks as holes. What archive/tar makes up from a sparse map
// (no byte of it came from the stream) is a hole without looking at it,
// and is charged to the hole budget.
func (a *applier) content(ctx context.Context, fd int, r io.Reader, size int64) error {
	var off int64
	hole := false
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(a.buf)), size-off))
		m, stored, err := a.read(r, a.buf[:n])
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: content truncated at byte %d of %d", ErrInvalidTar, off+int64(m), size)
			}
			return err
		}
		if stored == 0 {
			hole = true
		} else if hole, err = a.writeSparse(fd, a.buf[:m], off); err != nil {
			return err
		}
		off += int64(m)
	}
	if hole {
		if err := unix.Ftruncate(fd, size); err != nil {
			return fmt.Errorf("truncate: %w", err)
		}
	}
	a.size += size
	return nil
}

// read fills b from the entry r and says how many of the bytes came from
// the stream; the rest archive/tar made up from a sparse map.
func (a *applier) read(r io.Reader, b []byte) (n int, stored int64, err error) {
	before := a.raw.n
	n, err = io.ReadFull(r, b)
	stored = a.raw.n - before
	if cerr := a.charge(int64(n) - stored); cerr != nil {
		return n, stored, cerr
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read content: %w", err)
	}
	return n, stored, err
}

// charge takes made-up bytes (holes) from the hole budget.
func (a *applier) charge(made int64) error {
	if made <= 0 || a.holes < 0 {
		return nil
	}
	if a.holes -= made; a.holes >= 0 {
		return nil
	}
	limit := a.opts.MaxHoleBytes
	if limit == 0 {
		limit = DefaultMaxHoleBytes
	}
	return fmt.Errorf("%w: sparse entries declare more than %d bytes of holes in all (raise ApplyOptions.MaxHoleBytes to allow more)", ErrTooLarge, limit)
}

// skip reads what is left of an entry's content and drops it.
func (a *applier) skip(ctx context.Context, r io.Reader) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		before := a.raw.n
		n, err := r.Read(a.buf)
		if cerr := a.charge(int64(n) - (a.raw.n - before)); cerr != nil {
			return cerr
		}
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: content truncated", ErrInvalidTar)
		}
		if err != nil {
			return fmt.Errorf("read content: %w", err)
		}
	}
}

// writeSparse writes b at off, skipping whole zero blocks; it reports
// whether b ended in a skipped block.
func (a *applier) writeSparse(fd int, b []byte, off int64) (endsInHole bool, err error) {
	start := -1 // start of the pending run of data blocks
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		err := pwriteAll(fd, b[start:end], off+int64(start))
		start = -1
		return err
	}
	for i := 0; i < len(b); i += holeBlock {
		blk := b[i:min(i+holeBlock, len(b))]
		if len(blk) == holeBlock && bytes.Equal(blk, a.zero) {
			if err := flush(i); err != nil {
				return false, err
			}
			endsInHole = true
			continue
		}
		endsInHole = false
		if start < 0 {
			start = i
		}
	}
	return endsInHole, flush(len(b))
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}
