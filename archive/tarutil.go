package archive

import (
	"archive/tar"
	"fmt"
	"io"
	"slices"
	"strings"
)

// tailReader remembers the last 1024 bytes read, to tell a tar that ends
// with its two zero blocks from one cut short.
type tailReader struct {
	r    io.Reader
	n    int64
	tail [1024]byte
}

func (t *tailReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n >= len(t.tail) {
		copy(t.tail[:], p[n-len(t.tail):n])
	} else if n > 0 {
		copy(t.tail[:], t.tail[n:])
		copy(t.tail[len(t.tail)-n:], p[:n])
	}
	t.n += int64(n)
	return n, err
}

// ended says whether the stream ended properly: two zero blocks, or
// nothing at all (an empty layer).
func (t *tailReader) ended() bool {
	if t.n == 0 {
		return true
	}
	if t.n < int64(len(t.tail)) {
		return false
	}
	for _, b := range t.tail {
		if b != 0 {
			return false
		}
	}
	return true
}

const paxXattr = "SCHILY.xattr."

// xattrKeys lists the entry's xattrs in a fixed order, without overlay's
// own (see Apply).
func xattrKeys(hdr *tar.Header) []string {
	var keys []string
	for k := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, paxXattr); ok && !isOverlayXattr(name) {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys)
	return keys
}

func isOverlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

// shorten keeps error messages readable when a hostile entry name is
// thousands of bytes long.
func shorten(name string) string {
	if len(name) <= 200 {
		return name
	}
	return fmt.Sprintf("%s...(%d bytes)", name[:200], len(name))
}
