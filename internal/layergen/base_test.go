package layergen

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

func TestBaseIsDeterministicAndSized(t *testing.T) {
	spec := Spec{Files: 500, TotalBytes: 8 << 20, Seed: 7}
	var a, b bytes.Buffer
	if err := Base(&a, spec); err != nil {
		t.Fatal(err)
	}
	if err := Base(&b, spec); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(a.Bytes()) != sha256.Sum256(b.Bytes()) {
		t.Fatal("same spec gave different bytes")
	}
	tr := tar.NewReader(&a)
	var total int64
	types := map[byte]int{}
	var largest int64
	seenXattr := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types[h.Typeflag]++
		if h.Typeflag == tar.TypeReg {
			total += h.Size
			largest = max(largest, h.Size)
		}
		if _, ok := h.PAXRecords["SCHILY.xattr.security.capability"]; ok {
			seenXattr = true
		}
	}
	// The fixed special files add 7000 bytes on top of TotalBytes.
	if total != spec.TotalBytes+7096 {
		t.Errorf("content %d bytes, want %d", total, spec.TotalBytes+7096)
	}
	if types[tar.TypeReg] < spec.Files || types[tar.TypeDir] < 10 || types[tar.TypeSymlink] < 10 ||
		types[tar.TypeLink] < 5 || types[tar.TypeFifo] != 1 || types[tar.TypeChar] != 1 || types[tar.TypeBlock] != 1 {
		t.Errorf("entry types %v", types)
	}
	if !seenXattr {
		t.Error("no security.capability")
	}
	if largest < 20*spec.TotalBytes/int64(spec.Files) {
		t.Errorf("largest file %d: no heavy tail", largest)
	}
	t.Logf("types %v largest %d", types, largest)
}
