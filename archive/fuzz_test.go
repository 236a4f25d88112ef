package archive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	lg "github.com/stratafs/strata/internal/layergen"
)

// FuzzApply: whatever the bytes, Apply writes nothing next to the root
// and leaves the victim file alone.
func FuzzApply(f *testing.F) {
	for _, c := range lg.Hostile() {
		if len(c.Tar) < 1<<16 {
			f.Add(c.Tar)
		}
	}
	f.Add(lg.Tar(lg.Dir("a"), lg.File("a/b", "c"), lg.Symlink("s", "/a"), lg.Hardlink("h", "s/b"), lg.Whiteout("a/b")))
	f.Add(lg.SparseTar(lg.SparseFile{Name: "s", Size: 1 << 20, Offset: 4096, Data: "data"}))
	cut := lg.Tar(lg.Entry{Name: "z", Content: make([]byte, 2048)}, lg.File("after", "x"))
	f.Add(cut[:len(cut)-1024-1024])
	f.Fuzz(func(t *testing.T, data []byte) {
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		sb, root := target(t)
		victim := filepath.Join(sb, "victim")
		must(t, os.WriteFile(victim, []byte(lg.VictimContent), 0o644))
		// A small hole budget keeps each input cheap: a few bytes can
		// declare a terabyte sparse file, and the default budget would
		// spend a second on it. The timeout is only a backstop.
		for _, opts := range []ApplyOptions{{MaxHoleBytes: 1 << 20}, {Whiteouts: OverlayWhiteouts, MaxHoleBytes: 1 << 20}} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			Apply(ctx, root, bytes.NewReader(data), opts)
			cancel()
			ents, _ := os.ReadDir(sb)
			for _, e := range ents {
				if e.Name() != "root" && e.Name() != "victim" {
					t.Fatalf("wrote %s next to the root", e.Name())
				}
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != lg.VictimContent || nlink(victim) != 1 {
				t.Fatalf("victim changed: %q %v", b, err)
			}
		}
	})
}
