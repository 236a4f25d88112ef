package overlay2

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stratafs/strata/driver"
)

// TestCopyUpCounts: modify 7 files of the image and create 5 through the
// mount: 7 copied up, 5 new, bytes as the files in diff/ hold them.
func TestCopyUpCounts(t *testing.T) {
	root := testRoot(t)
	d := open(t, root, Options{})
	var ents []entry
	ents = append(ents, dir("etc"), dir("usr"), dir("usr/lib"))
	for i := 0; i < 10; i++ {
		ents = append(ents, file(fmt.Sprintf("etc/f%d", i), fmt.Sprintf("lower file %d\n", i)))
	}
	ents = append(ents, file("usr/lib/libx.so", string(make([]byte, 3000))))
	mustLayer(t, d, "base", "", mkTar(t, ents...))
	mustLayer(t, d, "mid", "base", mkTar(t, dir("usr"), dir("usr/lib"), file("usr/lib/liby.so", "yy")))
	mustCreate(t, d, "ctr", "mid", true)
	m := mustGet(t, d, "ctr", nil)
	appendTo := func(rel, s string) {
		f, err := os.OpenFile(filepath.Join(m, rel), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	// 7 copy-ups: five in etc/, one from each layer in usr/lib.
	for i := 0; i < 5; i++ {
		appendTo(fmt.Sprintf("etc/f%d", i), "appended\n")
	}
	appendTo("usr/lib/libx.so", "!")
	appendTo("usr/lib/liby.so", "!")
	// 5 new files.
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(m, fmt.Sprintf("etc/new%d", i), ""), "new\n")
	}
	writeFile(t, filepath.Join(m, "data/a"), "aaaa")
	writeFile(t, filepath.Join(m, "usr/lib/new.so"), "n")
	// A deletion is neither.
	os.Remove(filepath.Join(m, "etc/f9"))
	want := driver.CopyUpStats{CopiedFiles: 7, NewFiles: 5}
	for _, rel := range []string{"etc/f0", "etc/f1", "etc/f2", "etc/f3", "etc/f4", "usr/lib/libx.so", "usr/lib/liby.so"} {
		want.CopiedBytes += size(t, filepath.Join(root, layersDir, "ctr", "diff", rel))
	}
	for _, rel := range []string{"etc/new0", "etc/new1", "etc/new2", "data/a", "usr/lib/new.so"} {
		want.NewBytes += size(t, filepath.Join(root, layersDir, "ctr", "diff", rel))
	}
	got, err := d.CopyUp(context.Background(), "ctr")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("CopyUp = %+v, want %+v", got, want)
	}
	// Cached: a second call agrees; a growing copied-up file (which does
	// not touch its directory) is still measured afresh.
	appendTo("etc/f0", "more")
	want.CopiedBytes += 4
	if got, _ := d.CopyUp(context.Background(), "ctr"); got != want {
		t.Errorf("CopyUp after growing a file = %+v, want %+v", got, want)
	}
	// An eighth copy-up changes the directory and is found.
	appendTo("etc/f5", "x")
	want.CopiedFiles++
	want.CopiedBytes += size(t, filepath.Join(root, layersDir, "ctr", "diff", "etc/f5"))
	if got, _ := d.CopyUp(context.Background(), "ctr"); got != want {
		t.Errorf("CopyUp after another copy-up = %+v, want %+v", got, want)
	}
	mustPut(t, d, "ctr")
	if got, _ := d.CopyUp(context.Background(), "base"); got != (driver.CopyUpStats{}) {
		t.Errorf("CopyUp of a read-only layer = %+v, want zeros", got)
	}
}

func size(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// BenchmarkCopyUpScrape: CopyUp of a layer with 3000 changed files, as a
// metrics scrape calls it (cached after the first call).
func BenchmarkCopyUpScrape(b *testing.B) {
	root := testRoot(b)
	d := open(b, root, Options{})
	var ents []entry
	for i := 0; i < 30; i++ {
		ents = append(ents, dir(fmt.Sprintf("d%02d", i)))
		for j := 0; j < 100; j++ {
			ents = append(ents, file(fmt.Sprintf("d%02d/f%03d", i, j), "x"))
		}
	}
	mustLayer(b, d, "base", "", mkTar(b, ents...))
	mustCreate(b, d, "ctr", "base", true)
	m := mustGet(b, d, "ctr", nil)
	for i := 0; i < 30; i++ {
		for j := 0; j < 100; j += 2 {
			writeFile(b, filepath.Join(m, fmt.Sprintf("d%02d/f%03d", i, j)), "changed")
			writeFile(b, filepath.Join(m, fmt.Sprintf("d%02d/n%03d", i, j)), "new")
		}
	}
	if _, err := d.CopyUp(context.Background(), "ctr"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := d.CopyUp(context.Background(), "ctr")
		if err != nil || s.CopiedFiles != 1500 || s.NewFiles != 1500 {
			b.Fatalf("CopyUp = %+v, %v", s, err)
		}
	}
}
