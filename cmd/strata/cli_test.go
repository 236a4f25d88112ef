package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers"
	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/mount"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// cliBackends are the backends the CLI tests run on.
var cliBackendNames = []string{"vfs", "overlay2"}

// testRoot makes a root under /var/tmp (disk-backed, like a real root) and
// removes it afterwards, releasing any mount left under it first.
func testRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "strata-cli-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := mount.UnmountAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		os.RemoveAll(dir)
	})
	return dir
}

// backendRoot returns a root for backend name, or skips with the reason it
// cannot work here.
func backendRoot(t *testing.T, name string) string {
	t.Helper()
	root := testRoot(t)
	requireUsable(t, root, name)
	return root
}

// requireUsable skips the test, with the reason, unless backend name can
// work on root.
func requireUsable(t *testing.T, root, name string) {
	t.Helper()
	for _, v := range drivers.Probe(context.Background(), root) {
		if v.Name == name && !v.Usable {
			t.Skipf("%s unusable here: %s", name, v.Reason)
		}
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// cli runs the command in-process with buffers.
func cli(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, bytes.NewReader(stdin), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// ok runs the command and fails the test unless it exits 0.
func ok(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	r := cli(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("strata %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// fails runs the command, expects exit code want and one line on stderr
// containing each of msgs.
func fails(t *testing.T, want int, stdin []byte, args ...string) string {
	t.Helper()
	r := cli(t, stdin, args...)
	if r.code != want {
		t.Fatalf("strata %s: exit %d, want %d (stdout %q, stderr %q)", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("strata %s: stderr is not one line: %q", strings.Join(args, " "), r.stderr)
	}
	return r.stderr
}

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	xattrs           map[string]string
}

func mkTar(t *testing.T, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, ModTime: mt, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func baseTar(t *testing.T) []byte {
	return mkTar(t,
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "etc/hello", body: "hello\n", xattrs: map[string]string{"user.origin": "test"}},
		entry{name: "etc/gone", body: "to be deleted\n"},
		entry{name: "etc/link", typ: tar.TypeSymlink, link: "hello"},
		entry{name: "etc/hard", typ: tar.TypeLink, link: "etc/hello"},
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/tool", body: strings.Repeat("x", 3000), mode: 0o4755},
	)
}

func childTar(t *testing.T) []byte {
	return mkTar(t,
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "etc/.wh.gone", body: ""},
		entry{name: "etc/new", body: "new\n", mode: 0o600},
	)
}

// unpack applies a tar to a fresh directory and snapshots it.
func unpack(t *testing.T, data []byte) *fstree.Tree {
	t.Helper()
	dir := filepath.Join(testRoot(t), "tree")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.Apply(context.Background(), dir, bytes.NewReader(data), archive.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := fstree.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func sameTree(t *testing.T, want, got *fstree.Tree, opts fstree.Options) {
	t.Helper()
	if d := fstree.Diff(want, got, opts); len(d) > 0 {
		t.Errorf("trees differ:\n  %s", strings.Join(d, "\n  "))
	}
}

var (
	reDate = regexp.MustCompile(`\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d`)
)

// golden compares got, with the root path and dates made stable, to
// testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name, root, got string) {
	t.Helper()
	got = strings.ReplaceAll(got, root, "$ROOT")
	got = reDate.ReplaceAllString(got, "YYYY-MM-DD hh:mm:ss")
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from %s:\n--- want\n%s--- got\n%s", name, p, want, got)
	}
}

func TestCLILayerCommands(t *testing.T) {
	for _, name := range cliBackendNames {
		t.Run(name, func(t *testing.T) {
			root := backendRoot(t, name)
			g := []string{"--root", root, "--driver", name}
			base, child := baseTar(t), childTar(t)

			out := ok(t, base, append(g, "apply", "base")...)
			if !strings.HasPrefix(out, "base: applied ") {
				t.Errorf("apply printed %q", out)
			}
			// Flags after the positional argument work too.
			ok(t, child, append(g, "apply", "child", "--parent", "base")...)
			golden(t, "ls-"+name, root, ok(t, nil, append(g, "ls")...))

			var ls []layerJSON
			if err := json.Unmarshal([]byte(ok(t, nil, append(g, "ls", "--json")...)), &ls); err != nil {
				t.Fatal(err)
			}
			if len(ls) != 2 || ls[0].ID != "base" || ls[1].Parent != "base" || ls[0].Size == 0 {
				t.Errorf("ls --json: %+v", ls)
			}

			// diff gives back what apply took in.
			sameTree(t, unpack(t, base), unpack(t, []byte(ok(t, nil, append(g, "diff", "base")...))), fstree.Options{IgnoreRoot: true})
			d := ok(t, nil, append(g, "diff", "child")...)
			names := tarNames(t, []byte(d))
			if strings.Join(names, " ") != "etc/ etc/.wh.gone etc/new" {
				t.Errorf("child diff entries %q", names)
			}

			// Errors: one line, non-zero exit, nothing changed.
			msg := fails(t, 1, nil, append(g, "rm", "base")...)
			if !strings.Contains(msg, "has children") {
				t.Errorf("rm base: %q", msg)
			}
			fails(t, 1, []byte("this is not a tar"), append(g, "apply", "junk")...)
			fails(t, 1, base, append(g, "apply", "orphan", "--parent", "nope")...)
			fails(t, 1, nil, append(g, "diff", "nope")...)
			fails(t, 2, nil, append(g, "apply", "bad/id")...)
			fails(t, 2, nil, append(g, "rm")...)
			golden(t, "ls-"+name, root, ok(t, nil, append(g, "ls")...))

			ok(t, nil, append(g, "rm", "child")...)
			ok(t, nil, append(g, "rm", "base")...)
			golden(t, "ls-empty", root, ok(t, nil, append(g, "ls")...))
		})
	}
}

func tarNames(t *testing.T, data []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return names
}

func TestCLIProbeAndStatus(t *testing.T) {
	root := testRoot(t)
	var vs []drivers.Verdict
	if err := json.Unmarshal([]byte(ok(t, nil, "--root", root, "probe", "--json")), &vs); err != nil {
		t.Fatal(err)
	}
	chosen := ""
	for i, v := range vs {
		if v.Name != drivers.Names()[i] || v.Reason == "" {
			t.Errorf("verdict %d: %+v", i, v)
		}
		if v.Chosen {
			chosen = v.Name
		}
	}
	table := ok(t, nil, "--root", root, "probe")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != len(vs)+1 || !regexp.MustCompile(`^BACKEND +VERDICT +CHOSEN +REASON$`).MatchString(lines[0]) {
		t.Errorf("probe table:\n%s", table)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(ok(t, nil, "--root", root, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Driver != chosen || st.Layers != 0 {
		t.Errorf("status %+v, probe chose %s", st, chosen)
	}
	text := ok(t, nil, "--root", root, "status")
	if !regexp.MustCompile(`(?m)^Driver: +` + chosen + `$`).MatchString(text) {
		t.Errorf("status:\n%s", text)
	}
	for _, name := range cliBackendNames {
		t.Run(name, func(t *testing.T) {
			root := backendRoot(t, name)
			out := ok(t, nil, "--root", root, "--driver", name, "status")
			if !strings.Contains(out, "Driver:") || !strings.Contains(out, name) {
				t.Errorf("status:\n%s", out)
			}
		})
	}
}

func TestCLIUsageErrors(t *testing.T) {
	root := testRoot(t)
	checkUsage(t, ok(t, nil, "help"))
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"--root", root, "ls", "extra"}, 2, "takes no arguments"},
		{[]string{"--root", root, "--driver", "zzz", "ls"}, 2, `unknown driver "zzz"`},
		{[]string{"--root", root, "--driver", "vfs", "--opt", "nosuch=1", "ls"}, 2, "nosuch"},
		{[]string{"--root", root, "--opt", "novalue", "ls"}, 2, "not key=value"},
		{[]string{"--root", root, "umount", "x"}, 1, "not mounted"},
		{[]string{"--root", root, "demo", "--json"}, 2, "demo prints for people"},
	} {
		msg := fails(t, tc.code, nil, tc.args...)
		if !strings.Contains(msg, tc.msg) {
			t.Errorf("strata %v: stderr %q, want %q", tc.args, msg, tc.msg)
		}
	}
}

// checkUsage checks that the usage lists every command of the table with
// its summary, the summaries in one aligned column. (Not a golden file: the
// table grows as commands are added.)
func checkUsage(t *testing.T, out string) {
	t.Helper()
	if !strings.HasPrefix(out, "usage: strata [--root DIR] [--driver NAME] [--opt key=value]... [--json] COMMAND [ARGS]\n") {
		t.Errorf("usage line:\n%s", out)
	}
	col := -1
	for _, c := range commands() {
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "  "+c.name+" ") {
				line = l
			}
		}
		i := strings.Index(line, c.summary)
		if line == "" || i < 0 || !strings.Contains(line, c.args) {
			t.Errorf("usage lacks %s %s / %q:\n%s", c.name, c.args, c.summary, out)
			continue
		}
		if col >= 0 && i != col {
			t.Errorf("summary of %s starts at column %d, others at %d", c.name, i, col)
		}
		col = i
	}
	if !strings.Contains(out, "backends, in priority order: "+strings.Join(drivers.Names(), ", ")) {
		t.Errorf("usage does not list the backends:\n%s", out)
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 10 << 20: "10 MiB", 3 << 40: "3.0 TiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDemo(t *testing.T) {
	for _, name := range cliBackendNames {
		t.Run(name, func(t *testing.T) {
			root := backendRoot(t, name)
			for run := 0; run < 2; run++ { // a second run replaces the first
				out := ok(t, nil, "--root", root, "--driver", name, "demo")
				for _, want := range []string{
					"LAYER", "demo-base", "demo-pkgs", "demo-app",
					"demo-meta  demo-app   0 B",
					"C /etc/passwd", "A /app/data/visits.log",
					"etc/passwd", "app/data/visits.log",
					"removed demo-ctr; the image is intact",
				} {
					if !strings.Contains(out, want) {
						t.Errorf("run %d: demo output lacks %q:\n%s", run, want, out)
					}
				}
				if run == 1 && !strings.Contains(out, "removed the layers of an earlier demo run") {
					t.Errorf("second run did not say it replaced the first:\n%s", out)
				}
				if name == "overlay2" && !strings.Contains(out, "copied up from lower layers:  1 file") {
					t.Errorf("overlay2 demo shows no copy-up:\n%s", out)
				}
			}
			var ls []layerJSON
			if err := json.Unmarshal([]byte(ok(t, nil, "--root", root, "ls", "--json")), &ls); err != nil {
				t.Fatal(err)
			}
			if len(ls) != 4 {
				t.Errorf("after the demo %d layers remain, want the 4 of the image: %+v", len(ls), ls)
			}
		})
	}
}

func TestTreeOrder(t *testing.T) {
	in := []driver.LayerInfo{{ID: "a"}, {ID: "b", Parent: "z"}, {ID: "c", Parent: "a"}, {ID: "x", Parent: "y"}, {ID: "y", Parent: "x"}, {ID: "z"}}
	var got []string
	for _, l := range treeOrder(in) {
		got = append(got, l.ID)
	}
	if want := "a c z b x y"; strings.Join(got, " ") != want {
		t.Errorf("treeOrder = %v, want %s", got, want)
	}
}

func TestCLIApplyCompressed(t *testing.T) {
	root := backendRoot(t, "vfs")
	g := []string{"--root", root, "--driver", "vfs"}
	plain := baseTar(t)
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	zw, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(plain)
	zw.Close()
	want := unpack(t, plain)
	for name, data := range map[string][]byte{"gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		ok(t, data, append(g, "apply", name)...)
		sameTree(t, want, unpack(t, []byte(ok(t, nil, append(g, "diff", name)...))), fstree.Options{IgnoreRoot: true})
	}
}
