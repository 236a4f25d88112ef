package archive

import (
	"archive/tar"
	"fmt"
	"io"
	"slices"
	"strings"
)

// countReader counts the bytes read through it: Apply compares it with
// what archive/tar hands out to tell stored content from sparse holes and
// to see whether the end-of-archive blocks were read.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
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
