package conformance

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fstree"
)

// Hand-built layer tars. Every entry gets its own mtime with nanoseconds
// so that a backend or an archive that rounds or drops times is caught.

// tarEntry is one entry of a hand-built layer tar.
type tarEntry struct {
	hdr  tar.Header
	body []byte
}

// epoch is the first mtime buildTar hands out.
func epoch() time.Time { return time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC) }

func tDir(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimSuffix(name, "/") + "/", Mode: mode}}
}

func tFile(name, content string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content))}, body: []byte(content)}
}

func tSymlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func tHardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

func tChar(name string, major, minor int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o620, Devmajor: major, Devminor: minor}}
}

func tBlock(name string, major, minor int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: name, Mode: 0o660, Devmajor: major, Devminor: minor}}
}

func tFifo(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644}}
}

// tWhiteout deletes p from the layers below.
func tWhiteout(p string) tarEntry {
	dir, base := path.Split(p)
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: dir + archive.WhiteoutPrefix + base, Mode: 0o644}}
}

// tOpaque hides everything below dir that comes from lower layers.
func tOpaque(dir string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimSuffix(dir, "/") + "/" + archive.WhiteoutOpaque, Mode: 0o644}}
}

func (e tarEntry) owner(uid, gid int) tarEntry { e.hdr.Uid, e.hdr.Gid = uid, gid; return e }

func (e tarEntry) xattr(k, v string) tarEntry {
	recs := map[string]string{}
	for rk, rv := range e.hdr.PAXRecords {
		recs[rk] = rv
	}
	recs["SCHILY.xattr."+k] = v
	e.hdr.PAXRecords = recs
	return e
}

func (e tarEntry) mtime(t time.Time) tarEntry { e.hdr.ModTime = t; return e }

// buildTar writes ents as a PAX tar. Entries without an mtime get a
// distinct one each, offset from epoch by their index and salt.
func buildTar(t testing.TB, salt int, ents ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, e := range ents {
		h := e.hdr
		h.Format = tar.FormatPAX
		if h.ModTime.IsZero() {
			h.ModTime = epoch().Add(time.Duration(salt)*time.Hour + time.Duration(i)*1500*time.Millisecond + time.Duration(i*7919))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("building tar: %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("building tar: %s: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("building tar: %v", err)
	}
	return buf.Bytes()
}

// kitchenSink is a layer with every kind of entry a layer may hold, for
// round trips. Devices are left out when the backend cannot store them.
func kitchenSink(t testing.TB, caps Caps) []byte {
	ents := []tarEntry{
		tDir("etc", 0o755),
		tFile("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
		tFile("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640).owner(0, 42),
		tDir("home", 0o755),
		tDir("home/user", 0o700).owner(1000, 1000),
		tFile("home/user/notes", "owned by someone else\n", 0o600).owner(1000, 1000),
		tFile("home/user/empty", "", 0o644).owner(1000, 1000),
		tDir("bin", 0o755),
		tFile("bin/tool", strings.Repeat("\x7fELF binary bytes ", 4096), 0o755),
		tFile("bin/su", "setuid\n", 0o4755),
		tFile("bin/wall", "setgid\n", 0o2755).owner(0, 5),
		tHardlink("bin/tool-hardlink", "bin/tool"),
		tHardlink("bin/tool-hardlink2", "bin/tool"),
		tSymlink("bin/sh", "tool"),
		tSymlink("bin/abs", "/bin/tool"),
		tSymlink("bin/dangling", "../nowhere/at/all"),
		tDir("tmp", 0o1777),
		tFifo("tmp/fifo"),
		tDir("xattrs", 0o755).xattr("user.dir", "on a directory"),
		tFile("xattrs/file", "xattrs\n", 0o644).xattr("user.one", "1").xattr("user.binary", "\x00\x01\xff"),
		tFile("xattrs/cap", "capable\n", 0o755).xattr("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		tFile("odd name with spaces & ünïcode", "names\n", 0o644),
		tDir("deep", 0o755), tDir("deep/a", 0o755), tDir("deep/a/b", 0o755), tDir("deep/a/b/c", 0o711),
		tDir("deep/a/b/c/d", 0o755), tDir("deep/a/b/c/d/e", 0o755), tDir("deep/a/b/c/d/e/f", 0o755),
		tFile("deep/a/b/c/d/e/f/leaf", "leaf\n", 0o444),
	}
	if !caps.NoDevices {
		ents = append(ents,
			tDir("dev", 0o755),
			tChar("dev/null", 1, 3),
			tChar("dev/tty0", 4, 0).owner(0, 5),
			tBlock("dev/loop9", 7, 9),
		)
	}
	return buildTar(t, 0, ents...)
}

// reference applies tars in order to a plain directory with archive.Apply
// and snapshots the result: what a backend's view must equal.
func reference(t testing.TB, tars ...[]byte) *fstree.Tree {
	t.Helper()
	dir := filepath.Join(TempRoot(t), "ref")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, tb := range tars {
		if _, err := archive.Apply(context.Background(), dir, bytes.NewReader(tb), archive.ApplyOptions{}); err != nil {
			t.Fatalf("reference: archive.Apply of tar %d: %v", i, err)
		}
	}
	tr, err := fstree.Snapshot(dir)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	return tr
}

// treeOptions is how views are compared for this backend.
func (e *env) treeOptions() fstree.Options {
	return fstree.Options{
		MtimePrecision:      e.b.Caps.MtimePrecision,
		IgnoreRoot:          true,
		IgnoreXattrPrefixes: e.b.Caps.IgnoreXattrs,
	}
}

// view snapshots layer id's whole view through Get/Put.
func (e *env) view(id string) *fstree.Tree {
	e.t.Helper()
	dir, err := e.d.Get(e.ctx, id, nil)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", id, err)
	}
	tr, err := fstree.Snapshot(dir)
	if perr := e.d.Put(e.ctx, id); perr != nil {
		e.t.Errorf("Put(%s): %v", id, perr)
	}
	if err != nil {
		e.t.Fatalf("view of %s: %v", id, err)
	}
	return tr
}

// sameTree reports every difference between want and got at once, with
// both trees dumped, and returns whether they were equal.
func (e *env) sameTree(what string, want, got *fstree.Tree) bool {
	e.t.Helper()
	return sameTreeOpts(e.t, what, want, got, e.treeOptions())
}

func sameTreeOpts(t testing.TB, what string, want, got *fstree.Tree, opts fstree.Options) bool {
	t.Helper()
	faults := fstree.Diff(want, got, opts)
	if len(faults) == 0 {
		return true
	}
	t.Errorf("%s: %d differences:\n\t%s\nwant tree (%s):\n%s\ngot tree (%s):\n%s",
		what, len(faults), strings.Join(faults, "\n\t"), want.Root, dump(want), got.Root, dump(got))
	return false
}

// dump renders a tree for failure output, cut short for huge trees.
func dump(tr *fstree.Tree) string {
	var b strings.Builder
	tr.Dump(&b)
	s := b.String()
	const max = 200
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > max {
		return strings.Join(lines[:max], "") + fmt.Sprintf("... (%d more lines)\n", len(lines)-max)
	}
	return s
}

// create makes a layer and fails the test if it cannot.
func (e *env) create(id, parent string, opts *driver.CreateOpts) {
	e.t.Helper()
	if err := e.d.Create(e.ctx, id, parent, opts); err != nil {
		e.t.Fatalf("Create(%q, parent %q): %v", id, parent, err)
	}
}

// apply runs ApplyDiff of tb on id and returns the size it reported.
func (e *env) apply(id string, tb []byte) int64 {
	e.t.Helper()
	n, err := e.d.ApplyDiff(e.ctx, id, bytes.NewReader(tb))
	if err != nil {
		e.t.Fatalf("ApplyDiff(%s): %v", id, err)
	}
	return n
}

// layer creates id on parent and applies tb to it.
func (e *env) layer(id, parent string, tb []byte) int64 {
	e.t.Helper()
	e.create(id, parent, nil)
	return e.apply(id, tb)
}

// diff reads the whole Diff of id.
func (e *env) diff(id string) []byte {
	e.t.Helper()
	rc, err := e.d.Diff(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Diff(%s): %v", id, err)
	}
	data, err := io.ReadAll(rc)
	if cerr := rc.Close(); cerr != nil {
		e.t.Errorf("closing Diff(%s): %v", id, cerr)
	}
	if err != nil {
		e.t.Fatalf("reading Diff(%s): %v", id, err)
	}
	return data
}

// changes returns Changes of id as sorted "K /path" strings.
func (e *env) changes(id string) []string {
	e.t.Helper()
	ch, err := e.d.Changes(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Changes(%s): %v", id, err)
	}
	return changeStrings(ch)
}

func changeStrings(ch []driver.Change) []string {
	out := make([]string, 0, len(ch))
	for _, c := range ch {
		out = append(out, c.String())
	}
	sort.Strings(out)
	return out
}

// tarListing lists a tar's entries as "type name[ -> link]" lines: what
// a diff says, independent of content.
func tarListing(t testing.TB, data []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		name := "/" + strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+h.Name), "/"), "/")
		s := fmt.Sprintf("%c %s", h.Typeflag, name)
		if h.Typeflag == tar.TypeLink {
			s += " => /" + strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// sameList reports the differences between two sorted string lists.
func sameList(t testing.TB, what string, want, got []string) bool {
	t.Helper()
	w, g := map[string]bool{}, map[string]bool{}
	for _, s := range want {
		w[s] = true
	}
	for _, s := range got {
		g[s] = true
	}
	var faults []string
	for _, s := range want {
		if !g[s] {
			faults = append(faults, "missing: "+s)
		}
	}
	for _, s := range got {
		if !w[s] {
			faults = append(faults, "unexpected: "+s)
		}
	}
	if len(want) != len(got) && len(faults) == 0 {
		faults = append(faults, fmt.Sprintf("duplicates: want %d entries, got %d", len(want), len(got)))
	}
	if len(faults) == 0 {
		return true
	}
	t.Errorf("%s:\n\t%s\nwant:\n\t%s\ngot:\n\t%s", what, strings.Join(faults, "\n\t"), strings.Join(want, "\n\t"), strings.Join(got, "\n\t"))
	return false
}

// rootState snapshots the whole backend root, to prove an operation
// changed nothing on disk.
func (e *env) rootState() *fstree.Tree {
	e.t.Helper()
	tr, err := fstree.Snapshot(e.root)
	if err != nil {
		e.t.Fatalf("snapshot of root: %v", err)
	}
	return tr
}

// unchanged checks that the root is exactly as before.
func (e *env) unchanged(what string, before *fstree.Tree) {
	e.t.Helper()
	after := e.rootState()
	sameTreeOpts(e.t, what+" changed the root on disk", before, after, fstree.Options{})
}

// mountsUnder lists the mount points strictly below root.
func mountsUnder(root string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	root = filepath.Clean(root)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if strings.HasPrefix(mp, root+"/") {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// noMounts checks that nothing is mounted below the root.
func (e *env) noMounts(what string) {
	e.t.Helper()
	m, err := mountsUnder(e.root)
	if err != nil {
		e.t.Fatalf("reading mountinfo: %v", err)
	}
	if len(m) > 0 {
		e.t.Errorf("%s: mounts left under the root:\n\t%s", what, strings.Join(m, "\n\t"))
	}
}
