package layergen

import (
	"archive/tar"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/stratafs/strata/internal/fsutil"
)

// Spec sizes a generated base layer.
type Spec struct {
	Files      int   // regular files (links, dirs and special files come on top)
	TotalBytes int64 // total regular file content, spread over the files
	Seed       uint64
}

// node is one planned entry; content is generated when written.
type node struct {
	path     string
	typ      byte
	mode     int64
	uid, gid int
	size     int64
	link     string
	major    int64
	minor    int64
	mtime    time.Time
	xattrs   map[string]string
	zero     bool   // content is all zeros (a sparse-looking file)
	seed     uint64 // content seed
}

var words = []string{"usr", "lib", "share", "bin", "etc", "doc", "local", "include",
	"python3", "perl", "locale", "man", "x86_64-linux-gnu", "systemd", "var", "cache",
	"opt", "data", "conf.d", "icons", "zoneinfo", "terminfo", "ssl", "certs", "modules"}

var exts = []string{"", ".so", ".py", ".txt", ".gz", ".conf", ".h", ".json", ".mo", ".pem"}

// owners are the uid/gid pairs files get, root most often.
var owners = [][2]int{{0, 0}, {0, 0}, {0, 0}, {0, 0}, {1000, 1000}, {33, 33}, {65534, 65534}, {0, 42}}

var fileModes = []int64{0o644, 0o644, 0o644, 0o755, 0o755, 0o600, 0o444, 0o640}

// Base writes a deterministic, realistic base layer to w: nested
// directories, Spec.Files regular files with a heavy-tailed size
// distribution (mostly small, a few large) summing to Spec.TotalBytes,
// relative and absolute symlinks (one dangling), hardlinks, a fifo, char
// and block devices, xattrs (user.*, trusted.*, security.capability),
// setuid/setgid files, a sticky directory, varied modes, owners and
// nanosecond mtimes. Entries are in path-component order, directories
// first. Memory is proportional to the number of entries, never to the
// content size; the same Spec always gives the same bytes.
func Base(w io.Writer, spec Spec) error {
	rng := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x9e3779b97f4a7c15))
	nodes := plan(rng, spec)
	pool := makePool(rng)
	tw := tar.NewWriter(w)
	var regular []string
	for i := range nodes {
		n := &nodes[i]
		if n.typ == tar.TypeLink {
			if len(regular) == 0 {
				n.typ = tar.TypeReg
			} else {
				n.link = regular[rng.IntN(len(regular))]
			}
		}
		hdr := &tar.Header{
			Typeflag: n.typ, Name: n.path, Linkname: n.link, Mode: n.mode,
			Uid: n.uid, Gid: n.gid, ModTime: n.mtime, Devmajor: n.major, Devminor: n.minor,
			Format: tar.FormatPAX,
		}
		if n.typ == tar.TypeReg {
			hdr.Size = n.size
			regular = append(regular, strings.TrimSuffix(n.path, "/"))
		}
		for k, v := range n.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Size > 0 {
			if err := writeContent(tw, pool, n); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// makePool returns 1 MiB of content to cut files from: half random bytes
// (compressed data, binaries), half text (compresses like real files).
func makePool(rng *rand.Rand) []byte {
	pool := make([]byte, 1<<20)
	half := len(pool) / 2
	for i := 0; i < half; i += 8 {
		binary.LittleEndian.PutUint64(pool[i:], rng.Uint64())
	}
	var b strings.Builder
	for b.Len() < half {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(8) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	copy(pool[half:], b.String())
	return pool
}

func writeContent(w io.Writer, pool []byte, n *node) error {
	if n.zero {
		zero := make([]byte, min(n.size, 1<<16))
		for left := n.size; left > 0; {
			k := min(left, int64(len(zero)))
			if _, err := w.Write(zero[:k]); err != nil {
				return err
			}
			left -= k
		}
		return nil
	}
	off := int(n.seed % uint64(len(pool)))
	for left := n.size; left > 0; {
		chunk := pool[off:]
		if int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		left -= int64(len(chunk))
		off = int((uint64(off) + n.seed + 4093) % uint64(len(pool)))
	}
	return nil
}

func randTime(rng *rand.Rand) time.Time {
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	return time.Unix(base+rng.Int64N(5*365*24*3600), rng.Int64N(1e9)).UTC()
}

// capability is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_bind_service (bit 10), as setcap stores it.
func capability() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001) // revision 2, effective
	binary.LittleEndian.PutUint32(b[4:], 1<<10)      // permitted, low word
	return string(b)
}

func plan(rng *rand.Rand, spec Spec) []node {
	files := max(spec.Files, 1)
	// Directories: a tree up to 5 deep, with the usual names.
	dirs := []string{"bin", "etc", "tmp", "usr", "usr/bin", "usr/lib", "var"}
	want := len(dirs) + files/15
	for i := 0; len(dirs) < want; i++ {
		parent := dirs[rng.IntN(len(dirs))]
		if strings.Count(parent, "/") >= 4 {
			continue
		}
		dirs = append(dirs, fmt.Sprintf("%s/%s%d", parent, words[rng.IntN(len(words))], i))
	}
	var nodes []node
	for _, d := range dirs {
		uid := owners[rng.IntN(len(owners))]
		mode := int64(0o755)
		switch d {
		case "tmp":
			mode = 0o1777
		case "etc":
			uid = [2]int{0, 0}
		}
		if rng.IntN(20) == 0 {
			mode = 0o2775 // setgid directory
		}
		nodes = append(nodes, node{path: d + "/", typ: tar.TypeDir, mode: mode, uid: uid[0], gid: uid[1], mtime: randTime(rng)})
	}
	sizes := spreadSizes(rng, files, spec.TotalBytes)
	var filePaths []string
	for i, size := range sizes {
		d := dirs[rng.IntN(len(dirs))]
		p := fmt.Sprintf("%s/file%05d%s", d, i, exts[rng.IntN(len(exts))])
		o := owners[rng.IntN(len(owners))]
		n := node{path: p, typ: tar.TypeReg, mode: fileModes[rng.IntN(len(fileModes))],
			uid: o[0], gid: o[1], size: size, mtime: randTime(rng), seed: rng.Uint64()}
		switch {
		case i%97 == 5:
			n.zero = true
		case i%50 == 3:
			n.xattrs = map[string]string{"user.mime_type": "text/plain", "trusted.md5": fmt.Sprintf("%032x", n.seed)}
		}
		nodes = append(nodes, n)
		filePaths = append(filePaths, p)
	}
	// The classic special files, at fixed paths.
	nodes = append(nodes,
		node{path: "usr/bin/passwd", typ: tar.TypeReg, mode: 0o4755, size: 4096, mtime: randTime(rng), seed: 1},
		node{path: "usr/bin/wall", typ: tar.TypeReg, mode: 0o2755, gid: 5, size: 1000, mtime: randTime(rng), seed: 2},
		node{path: "usr/bin/ping", typ: tar.TypeReg, mode: 0o755, size: 2000, mtime: randTime(rng), seed: 3,
			xattrs: map[string]string{"security.capability": capability()}},
		node{path: "var/fifo", typ: tar.TypeFifo, mode: 0o600, mtime: randTime(rng)},
		node{path: "etc/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3, mtime: randTime(rng)},
		node{path: "etc/loop9", typ: tar.TypeBlock, mode: 0o660, gid: 6, major: 7, minor: 9, mtime: randTime(rng)},
		node{path: "etc/dangling", typ: tar.TypeSymlink, mode: 0o777, link: "/no/such/file", mtime: randTime(rng)},
		node{path: "bin/sh", typ: tar.TypeSymlink, mode: 0o777, link: "/usr/bin/passwd", mtime: randTime(rng)},
	)
	for i := range files/20 + 1 {
		target := filePaths[rng.IntN(len(filePaths))]
		p := fmt.Sprintf("%s/link%05d", dirs[rng.IntN(len(dirs))], i)
		link := "/" + target // absolute, resolved in the layer
		if i%2 == 1 {
			link = strings.Repeat("../", strings.Count(p, "/")) + target
		}
		nodes = append(nodes, node{path: p, typ: tar.TypeSymlink, mode: 0o777, link: link, mtime: randTime(rng)})
	}
	for i := range files/50 + 1 {
		p := fmt.Sprintf("%s/hard%05d", dirs[rng.IntN(len(dirs))], i)
		nodes = append(nodes, node{path: p, typ: tar.TypeLink, mtime: randTime(rng)})
	}
	slices.SortStableFunc(nodes, func(a, b node) int { return fsutil.ComparePaths(a.path, b.path) })
	return nodes
}

// spreadSizes draws Pareto-distributed weights (a few large files, many
// small ones, about 3% empty) and scales them to total bytes.
func spreadSizes(rng *rand.Rand, n int, total int64) []int64 {
	w := make([]float64, n)
	var sum float64
	for i := range w {
		if rng.IntN(33) == 0 {
			continue
		}
		w[i] = math.Min(math.Pow(1-rng.Float64(), -1/1.1), float64(n)/2)
		sum += w[i]
	}
	sizes := make([]int64, n)
	var got int64
	for i := range w {
		if sum > 0 {
			sizes[i] = int64(w[i] / sum * float64(total))
		}
		got += sizes[i]
	}
	// Put the rounding remainder on the largest file.
	sizes[slices.Index(sizes, slices.Max(sizes))] += total - got
	return sizes
}
