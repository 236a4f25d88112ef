package archive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/layergen"
)

// testBase holds fixtures on disk (never tmpfs), as the project asks.
const testBase = "/var/tmp/strata-archive-test"

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root for chown, devices and trusted.* xattrs (euid %d)", os.Geteuid())
	}
}

// sandbox returns a fresh directory under testBase, removed after the test.
func sandbox(t testing.TB) string {
	t.Helper()
	if err := os.MkdirAll(testBase, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := os.MkdirTemp(testBase, strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// target makes <sandbox>/root and returns both.
func target(t testing.TB) (sb, root string) {
	t.Helper()
	sb = sandbox(t)
	root = filepath.Join(sb, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return sb, root
}

func apply(t testing.TB, dir string, tarball []byte, opts ApplyOptions) {
	t.Helper()
	if _, err := Apply(context.Background(), dir, bytes.NewReader(tarball), opts); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func snapshot(t testing.TB, dir string) *fstree.Tree {
	t.Helper()
	tr, err := fstree.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// sameTree fails with every difference and a dump of both trees.
func sameTree(t testing.TB, want, got string, opts fstree.Options) {
	t.Helper()
	w, g := snapshot(t, want), snapshot(t, got)
	if d := fstree.Diff(w, g, opts); len(d) > 0 {
		var b strings.Builder
		b.WriteString("want:\n")
		w.Dump(&b)
		b.WriteString("got:\n")
		g.Dump(&b)
		if b.Len() > 20000 {
			b.Reset()
		}
		t.Fatalf("trees differ (%d):\n%s\n%s", len(d), strings.Join(d[:min(len(d), 40)], "\n"), b.String())
	}
}

func writeDir(t testing.TB, dir string, opts DiffOptions) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteDir(context.Background(), &b, dir, opts); err != nil {
		t.Fatalf("WriteDir: %v", err)
	}
	return b.Bytes()
}

func baseTar(t testing.TB, spec layergen.Spec) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := layergen.Base(&b, spec); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
