package layergen

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strconv"
)

// SparseFile is a file stored the GNU sparse way: Size bytes long, all
// holes but Data at Offset.
type SparseFile struct {
	Name   string
	Size   int64
	Offset int64
	Data   string
}

// SparseTar returns a tar of files in the PAX GNU sparse 0.1 format (the
// sparse map in PAX records), the form a few KiB of tar can use to declare
// terabytes. archive/tar reads this format but will not write it, so the
// PAX header is written as a plain entry and its type patched afterwards.
func SparseTar(files ...SparseFile) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		recs := paxRecord("GNU.sparse.size", strconv.FormatInt(f.Size, 10)) +
			paxRecord("GNU.sparse.numblocks", "1") +
			paxRecord("GNU.sparse.map", fmt.Sprintf("%d,%d", f.Offset, len(f.Data)))
		at := buf.Len()
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/" + f.Name, Size: int64(len(recs)), Mode: 0o644, ModTime: DefaultTime(), Format: tar.FormatUSTAR})
		tw.Write([]byte(recs))
		tw.Flush()
		patchType(buf.Bytes()[at:at+512], tar.TypeXHeader)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Size: int64(len(f.Data)), Mode: 0o644, ModTime: DefaultTime(), Format: tar.FormatUSTAR})
		tw.Write([]byte(f.Data))
	}
	tw.Close()
	return buf.Bytes()
}

// paxRecord formats one PAX record, whose length counts itself.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3 // " ", "=", "\n"
	for l := len(strconv.Itoa(n)); ; l++ {
		if len(strconv.Itoa(n+l)) == l {
			return fmt.Sprintf("%d %s=%s\n", n+l, k, v)
		}
	}
}

// patchType sets a header block's typeflag and recomputes its checksum.
func patchType(blk []byte, typ byte) {
	blk[156] = typ
	copy(blk[148:156], "        ")
	var sum int64
	for _, b := range blk {
		sum += int64(b)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}
