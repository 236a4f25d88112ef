package overlay2

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/mount"
)

// testRoot makes a root under /var/tmp (disk-backed) and, when the test
// ends, unmounts whatever is left under it and removes it.
func testRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "strata-overlay2-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if _, err := mount.UnmountAll(dir); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

// open opens a driver on root and closes it at the end of the test.
func open(tb testing.TB, root string, opts Options) *Driver {
	tb.Helper()
	dr, err := New(context.Background(), root, opts)
	if err != nil {
		tb.Fatalf("New(%s): %v", root, err)
	}
	d := dr.(*Driver)
	tb.Cleanup(func() { d.Close() })
	return d
}

type entry struct {
	name, body string
	typ        byte
	mode       int64
}

func file(name, body string) entry {
	return entry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }

// mkTar builds a layer tar; names starting with ".wh." are whiteouts.
func mkTar(tb testing.TB, ents ...entry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2022, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), ModTime: mt, Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func mustCreate(tb testing.TB, d driver.Driver, id, parent string, writable bool) {
	tb.Helper()
	if err := d.Create(context.Background(), id, parent, &driver.CreateOpts{Writable: writable}); err != nil {
		tb.Fatalf("Create(%s, %s): %v", id, parent, err)
	}
}

func mustLayer(tb testing.TB, d driver.Driver, id, parent string, tb2 []byte) {
	tb.Helper()
	mustCreate(tb, d, id, parent, false)
	if _, err := d.ApplyDiff(context.Background(), id, bytes.NewReader(tb2)); err != nil {
		tb.Fatalf("ApplyDiff(%s): %v", id, err)
	}
}

func mustGet(tb testing.TB, d driver.Driver, id string, opts *driver.MountOpts) string {
	tb.Helper()
	p, err := d.Get(context.Background(), id, opts)
	if err != nil {
		tb.Fatalf("Get(%s): %v", id, err)
	}
	return p
}

func mustPut(tb testing.TB, d driver.Driver, id string) {
	tb.Helper()
	if err := d.Put(context.Background(), id); err != nil {
		tb.Fatalf("Put(%s): %v", id, err)
	}
}

// tarNames lists a tar's entry names.
func tarNames(tb testing.TB, r io.Reader) []string {
	tb.Helper()
	var out []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(h.Name, "/"))
	}
}

func diffNames(tb testing.TB, d driver.Driver, id string) []string {
	tb.Helper()
	rc, err := d.Diff(context.Background(), id)
	if err != nil {
		tb.Fatalf("Diff(%s): %v", id, err)
	}
	defer rc.Close()
	return tarNames(tb, rc)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeFile(tb testing.TB, p, body string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		tb.Fatal(err)
	}
}
