package layergen

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strings"
)

// Case is one hostile tar. Apply it onto <sandbox>/root: WantErr says
// whether a safe extractor must refuse it (the others must be contained,
// not refused: absolute names and symlinks resolve inside the root).
//
// Escapes are paths that must not exist afterwards: relative ones are
// taken from the sandbox (so "x" is <sandbox>/x, one level above the
// root), absolute ones are host paths. Victims are files the test creates
// in the sandbox beforehand (content "victim", one link); they must be
// unchanged afterwards: same content, still one link, still there.
type Case struct {
	Name    string
	Tar     []byte
	WantErr bool
	Escapes []string
	Victims []string
}

// VictimContent is what the test writes into each Case.Victims file.
const VictimContent = "victim"

// Hostile returns the corpus: path traversal, absolute names, symlink,
// hardlink and whiteout escapes, huge header fields, truncated streams,
// duplicate entries and a directory swapped for a symlink mid-stream.
func Hostile() []Case {
	v := []string{"victim"}
	return []Case{
		{Name: "dotdot", Tar: Tar(File("../x", "escaped")), WantErr: true, Escapes: []string{"x"}},
		{Name: "dotdot-nested", Tar: Tar(Dir("a"), File("a/../../x", "escaped")), WantErr: true, Escapes: []string{"x"}},
		{Name: "dotdot-deep", Tar: Tar(File("a/b/../../../../../../x", "escaped")), WantErr: true, Escapes: []string{"x"}},
		{Name: "dotdot-dir", Tar: Tar(Dir("../d"), File("../d/x", "escaped")), WantErr: true, Escapes: []string{"d"}},
		{Name: "absolute-dotdot", Tar: Tar(File("/../x", "escaped")), WantErr: true, Escapes: []string{"x"}},
		// A leading "/" is dropped, as GNU tar does: the file lands in the root.
		{Name: "absolute-name", Tar: Tar(File("/strata-hostile-abs", "inside")),
			Escapes: []string{"/strata-hostile-abs", "strata-hostile-abs"}},
		{Name: "symlink-root-then-file", Tar: Tar(Symlink("s", "/"), File("s/strata-hostile-sym", "inside")),
			Escapes: []string{"/strata-hostile-sym", "strata-hostile-sym"}},
		{Name: "symlink-dotdot-then-file", Tar: Tar(Symlink("s", "../../../.."), File("s/x", "inside")),
			Escapes: []string{"x"}},
		{Name: "symlink-chain", Tar: Tar(Symlink("a", "b"), Symlink("b", "c/../.."), Dir("c"), File("a/x", "inside")),
			Escapes: []string{"x"}},
		{Name: "symlink-absolute-dir", Tar: Tar(Symlink("bin", "/usr/bin"), Dir("usr"), Dir("usr/bin"), File("bin/strata-hostile-sh", "inside")),
			Escapes: []string{"/usr/bin/strata-hostile-sh"}},
		{Name: "symlink-then-file-same-name", Tar: Tar(Symlink("s", "../victim"), File("s", "replaced")), Victims: v},
		{Name: "symlink-to-victim-then-dir", Tar: Tar(Symlink("s", "../victim"), Dir("s"), File("s/x", "inside")), Victims: v},
		{Name: "hardlink-etc-passwd", Tar: Tar(Hardlink("p", "/etc/passwd")), WantErr: true},
		{Name: "hardlink-dotdot", Tar: Tar(Hardlink("p", "../victim")), WantErr: true, Victims: v},
		{Name: "hardlink-through-symlink", Tar: Tar(Symlink("s", ".."), Hardlink("p", "s/victim")), WantErr: true, Victims: v},
		{Name: "hardlink-to-symlink", Tar: Tar(Symlink("s", "../victim"), Hardlink("p", "s"), File("p", "overwrite")), Victims: v},
		{Name: "hardlink-to-root", Tar: Tar(Hardlink("p", ".")), WantErr: true},
		{Name: "whiteout-dotdot", Tar: Tar(Whiteout("../victim")), WantErr: true, Victims: v},
		{Name: "whiteout-dotdot-name", Tar: Tar(Entry{Name: ".wh...", Mode: 0o600}), WantErr: true, Victims: v},
		{Name: "whiteout-root", Tar: Tar(Entry{Name: "./.wh..", Mode: 0o600}), WantErr: true, Victims: v},
		{Name: "whiteout-empty-name", Tar: Tar(Entry{Name: "d/.wh.", Mode: 0o600}), WantErr: true, Victims: v},
		{Name: "whiteout-through-symlink", Tar: Tar(Symlink("s", ".."), Whiteout("s/victim")), Victims: v},
		{Name: "opaque-through-symlink", Tar: Tar(Symlink("s", "../.."), Opaque("s")), Victims: v},
		{Name: "root-as-file", Tar: rawHeader(".", '0', "00000000000\x00"), WantErr: true},
		{Name: "huge-size", Tar: Tar(Entry{Name: "big", Size: 1 << 62}), WantErr: true},
		{Name: "negative-size", Tar: rawHeader("neg", '0', "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xf0"), WantErr: true},
		{Name: "huge-pax-record", Tar: hugePAX(), WantErr: true},
		{Name: "long-name", Tar: Tar(File(strings.Repeat("n", 100_000), "x")), WantErr: true},
		{Name: "long-component", Tar: Tar(File("d/"+strings.Repeat("c", 300), "x")), WantErr: true},
		{Name: "long-link", Tar: Tar(Symlink("l", strings.Repeat("t/", 5000))), WantErr: true},
		{Name: "truncated-header", Tar: Tar(File("a", "x"))[:700], WantErr: true},
		{Name: "truncated-content", Tar: Tar(Entry{Name: "f", Content: bytes.Repeat([]byte("y"), 100), Size: 1000}), WantErr: true},
		{Name: "header-then-eof", Tar: Tar(Entry{Name: "f", Size: 10}), WantErr: true},
		{Name: "unknown-type", Tar: Tar(Entry{Name: "z", Type: 'Z'}), WantErr: true},
		{Name: "duplicate-entries", Tar: Tar(File("a", "one"), File("a", "two"), Dir("a"), File("a/x", "3"), File("a", "four"))},
		{Name: "dir-replaced-by-symlink", Tar: Tar(Dir("d"), File("d/f", "1"), Symlink("d", "../"), File("d/x", "inside")),
			Escapes: []string{"x"}},
		{Name: "dir-replaced-by-abs-symlink", Tar: Tar(Dir("d"), Symlink("d", "/etc"), File("d/strata-hostile-etc", "x")),
			WantErr: true, Escapes: []string{"/etc/strata-hostile-etc"}},
		{Name: "global-header", Tar: Tar(Entry{Name: "pax_global_header", Type: tar.TypeXGlobalHeader, PAX: map[string]string{"comment": "x"}}, File("f", "x"))},
	}
}

// hugePAX is a PAX header whose one record is 2 MiB long, more than any
// reader should buffer for metadata.
func hugePAX() []byte {
	body := " SCHILY.xattr.user.big=" + strings.Repeat("x", 2<<20) + "\n"
	total := len(body) + 1
	for total != len(body)+len(fmt.Sprint(total)) {
		total = len(body) + len(fmt.Sprint(total))
	}
	rec := fmt.Sprint(total) + body
	out := rawHeader("PaxHeaders/f", 'x', fmt.Sprintf("%011o\x00", len(rec)))[:512]
	out = append(out, rec...)
	out = append(out, make([]byte, (512-len(rec)%512)%512)...)
	return append(out, Tar(File("f", "x"))...)
}

// rawHeader builds a one-entry ustar stream with a hand-set size field,
// which archive/tar's writer would refuse to produce.
func rawHeader(name string, typ byte, size string) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:136], size)
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return append(b, make([]byte, 1024)...)
}
