package archive

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is the format Decompress found at the start of a stream.
type Compression uint8

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return "none"
}

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

const (
	// readBufSize is large enough that tar content reads bypass the
	// buffer and go straight to the source for big files.
	readBufSize = 256 << 10
	// aheadChunk and aheadChunks bound what the gzip read-ahead holds:
	// 4 MiB of inflated data at most, whatever the layer size.
	aheadChunk  = 1 << 20
	aheadChunks = 4
	// maxZstdWindow refuses frames that would make the decoder allocate
	// more than this (zstd --long=27 is the largest common setting).
	maxZstdWindow = 128 << 20
)

// Detect returns the compression of the stream buffered in br without
// consuming anything.
func Detect(br *bufio.Reader) (Compression, error) {
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return Uncompressed, err
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip, nil
	case bytes.HasPrefix(head, magicZstd):
		return Zstd, nil
	case bytes.HasPrefix(head, magicBzip2):
		return Uncompressed, fmt.Errorf("%w: bzip2 is not an OCI layer compression", ErrInvalidTar)
	case bytes.HasPrefix(head, magicXz):
		return Uncompressed, fmt.Errorf("%w: xz is not an OCI layer compression", ErrInvalidTar)
	}
	return Uncompressed, nil
}

// Decompress returns the uncompressed content of r, which may be plain,
// gzip or zstd (detected by magic number). Decompression runs ahead of the
// reader in its own goroutine with bounded buffers, so inflating overlaps
// with whatever the caller does with the data. Close releases the decoder
// and, for gzip, waits for a read of r in progress to return (so r is not
// used after Close); it does not close r.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, readBufSize)
	c, err := Detect(br)
	if err != nil {
		return nil, err
	}
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrInvalidTar, err)
		}
		return newReadAhead(zr, zr.Close), nil
	case Zstd:
		// The zstd decoder already decodes blocks concurrently ahead of
		// the reader; a second read-ahead would only add a copy.
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(2),
			zstd.WithDecoderMaxWindow(maxZstdWindow),
			zstd.WithDecoderMaxMemory(1<<62))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrInvalidTar, err)
		}
		return &zstdReader{zr}, nil
	}
	return io.NopCloser(br), nil
}

type zstdReader struct{ d *zstd.Decoder }

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: zstd: %v", ErrInvalidTar, err)
	}
	return n, err
}

func (z *zstdReader) Close() error { z.d.Close(); return nil }

type chunk struct {
	b   []byte
	err error
}

// readAhead fills a small ring of chunks from src in a goroutine.
type readAhead struct {
	full   chan chunk
	free   chan []byte
	stop   chan struct{}
	done   chan struct{}
	cur    []byte
	held   []byte // the chunk cur points into, returned to free when used up
	err    error
	closer func() error
	once   sync.Once
}

func newReadAhead(src io.Reader, closer func() error) *readAhead {
	ra := &readAhead{
		full:   make(chan chunk, aheadChunks),
		free:   make(chan []byte, aheadChunks),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		closer: closer,
	}
	for range aheadChunks {
		ra.free <- make([]byte, aheadChunk)
	}
	go ra.fill(src)
	return ra
}

func (ra *readAhead) fill(src io.Reader) {
	defer close(ra.done)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(src, buf)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: decompress: %v", ErrInvalidTar, err)
		}
		select {
		case ra.full <- chunk{buf[:n], err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.err != nil {
			return 0, ra.err
		}
		if ra.held != nil {
			ra.free <- ra.held[:cap(ra.held)]
			ra.held = nil
		}
		c := <-ra.full
		ra.cur, ra.held, ra.err = c.b, c.b, c.err
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the goroutine and waits for it, so r is no longer read
// once Close returns.
func (ra *readAhead) Close() error {
	var err error
	ra.once.Do(func() {
		close(ra.stop)
		<-ra.done
		err = ra.closer()
	})
	return err
}
