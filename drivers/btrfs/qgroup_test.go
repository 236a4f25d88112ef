//go:build linux && cgo

package btrfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
)

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// writeUntilFull writes up to max bytes of random data to path in 1 MiB
// pieces and returns how much went in and the error that stopped it.
func writeUntilFull(path string, max int) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n := 0
	chunk := randBytes(1 << 20)
	for n < max {
		var w int
		w, err = f.Write(chunk)
		n += w
		if err != nil {
			break
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func TestQuotaStopsWritesAtLimit(t *testing.T) {
	for _, mode := range []QuotaMode{QuotaOnDemand, QuotaSimple} {
		t.Run(string(mode), func(t *testing.T) { testQuotaStopsWrites(t, mode) })
	}
}

func testQuotaStopsWrites(t *testing.T, mode QuotaMode) {
	d, root := newTestDriver(t, 1<<30, Options{Quota: mode})
	ctx := context.Background()
	const limit = 8 << 20
	must(t, d.Create(ctx, "base", "", nil))
	_, err := d.ApplyDiff(ctx, "base", layerTar(t, map[string]string{"big": string(randBytes(16 << 20))}))
	must(t, err)
	if d.quotaOn() {
		t.Fatal("quota on before any layer asked for a limit")
	}
	must(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true, SizeLimit: limit}))
	if !d.quotaOn() {
		t.Fatal("quota still off after a Create with SizeLimit")
	}
	// The limit counts the layer's own data: the parent's 16 MiB it sees
	// through the snapshot do not count against 8 MiB.
	u, err := d.QuotaUsage(ctx, "ctr")
	must(t, err)
	if u.Limit != limit || u.Scope != driver.QuotaLayerData || u.Used > 1<<20 {
		t.Errorf("QuotaUsage of a fresh child = %+v, want limit %d, layer-data scope, used < 1 MiB", u, limit)
	}
	dir, err := d.Get(ctx, "ctr", nil)
	must(t, err)
	n, err := writeUntilFull(filepath.Join(dir, "fill"), 4*limit)
	if !errors.Is(err, unix.EDQUOT) && !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing %d bytes past an %d-byte limit: %v, want EDQUOT or ENOSPC", n, limit, err)
	}
	if n > limit+(1<<20) {
		t.Errorf("wrote %d bytes under an %d-byte limit", n, limit)
	}
	u, err = d.QuotaUsage(ctx, "ctr")
	must(t, err)
	if u.Used < limit/2 || u.Used > limit+(1<<20) {
		t.Errorf("QuotaUsage after filling = %+v, want about %d used", u, limit)
	}
	must(t, d.Put(ctx, "ctr"))

	// A read-only child (born read-only) takes a limit too.
	must(t, d.Create(ctx, "roc", "base", &driver.CreateOpts{SizeLimit: limit}))
	if u, err := d.QuotaUsage(ctx, "roc"); err != nil || u.Limit != limit {
		t.Errorf("QuotaUsage(roc) = %+v, %v", u, err)
	}

	// ApplyDiff past the limit reports ErrNoSpace and leaves the layer as
	// it was.
	must(t, d.Create(ctx, "img", "", &driver.CreateOpts{SizeLimit: 4 << 20}))
	_, err = d.ApplyDiff(ctx, "img", layerTar(t, map[string]string{"too-big": string(randBytes(12 << 20))}))
	if !errors.Is(err, driver.ErrNoSpace) {
		t.Fatalf("ApplyDiff past the limit = %v, want ErrNoSpace", err)
	}
	if ents, _ := os.ReadDir(d.layerPath("img")); len(ents) != 0 {
		t.Errorf("layer holds %d entries after a failed ApplyDiff", len(ents))
	}

	// Remove takes the layer's qgroup with it.
	svid := subvolIDOf(t, d.layerPath("ctr"))
	must(t, d.Remove(ctx, "ctr"))
	must(t, d.Close())
	f, err := openDir(root)
	must(t, err)
	defer f.Close()
	// The kernel drops the qgroup of a deleted subvolume itself once the
	// cleaner is done with it (Remove's own destroy gets EBUSY before
	// that); wait for the cleaner.
	// BTRFS_IOC_SYNC pokes the transaction thread, which wakes the cleaner
	// now rather than at the next 30 s commit.
	must(t, ioctl(f.Fd(), iocSync, nil))
	if out, err := exec.Command("btrfs", "subvolume", "sync", root).CombinedOutput(); err != nil {
		t.Skipf("btrfs subvolume sync: %v: %s", err, out)
	}
	must(t, syncFS(f))
	qg, err := qgroups(f)
	must(t, err)
	if _, ok := qg[svid]; ok {
		t.Errorf("qgroup 0/%d still there after Remove", svid)
	}
}

func subvolIDOf(t testing.TB, path string) uint64 {
	info, err := subvolInfoPath(path)
	must(t, err)
	return info.TreeID
}

func TestQuotaNeverRefusesLimits(t *testing.T) {
	d, root := newTestDriver(t, 0, Options{Quota: QuotaNever})
	ctx := context.Background()
	if _, err := d.QuotaScope(); !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("QuotaScope with quota=never = %v, want ErrNotSupported", err)
	}
	err := d.Create(ctx, "l", "", &driver.CreateOpts{SizeLimit: 1 << 20})
	if !errors.Is(err, driver.ErrNotSupported) {
		t.Fatalf("Create with a limit and quota=never = %v, want ErrNotSupported", err)
	}
	if d.Exists("l") || len(subvolsUnder(t, root)) != 0 {
		t.Error("a refused Create left a layer behind")
	}
}

// TestChildOfBigLayerCopiesNothing: a child of a 10,000-file layer is a
// snapshot: the filesystem's used space and the child's exclusive bytes do
// not grow with the parent (times are in BenchmarkSnapshotCreate).
func TestChildOfBigLayerCopiesNothing(t *testing.T) {
	d, root := newTestDriver(t, 1<<30, Options{Quota: QuotaAlways})
	ctx := context.Background()
	must(t, d.Create(ctx, "big", "", &driver.CreateOpts{Writable: true}))
	dir, err := d.Get(ctx, "big", nil)
	must(t, err)
	block := randBytes(4096)
	for i := 0; i < 10000; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%100))
		if i < 100 {
			must(t, os.Mkdir(sub, 0o755))
		}
		block[0], block[1] = byte(i), byte(i>>8)
		must(t, os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), block, 0o644))
	}
	must(t, d.Put(ctx, "big"))
	f, err := openDir(root)
	must(t, err)
	defer f.Close()
	used := func() int64 {
		must(t, syncFS(f))
		var st unix.Statfs_t
		must(t, unix.Fstatfs(int(f.Fd()), &st))
		return int64(st.Blocks-st.Bfree) * st.Bsize
	}
	before := used()
	must(t, d.Create(ctx, "child", "big", &driver.CreateOpts{Writable: true}))
	grew := used() - before
	if grew > 1<<20 {
		t.Errorf("creating a child of a 10,000-file (40 MB) layer used %d more bytes, want < 1 MiB", grew)
	}
	qg, err := qgroups(f)
	must(t, err)
	big, child := qg[subvolIDOf(t, d.layerPath("big"))], qg[subvolIDOf(t, d.layerPath("child"))]
	if big.Referenced < 40e6 {
		t.Fatalf("parent references %d bytes, want >= 40 MB", big.Referenced)
	}
	if child.Exclusive > 256<<10 || child.Referenced < big.Referenced-(1<<20) {
		t.Errorf("child qgroup: exclusive %d (want < 256 KiB), referenced %d (want ~ parent's %d)", child.Exclusive, child.Referenced, big.Referenced)
	}
	cdir, err := d.Get(ctx, "child", nil)
	must(t, err)
	defer d.Put(ctx, "child")
	b, err := os.ReadFile(filepath.Join(cdir, "d42", "f09942"))
	if err != nil || len(b) != 4096 {
		t.Errorf("child does not see the parent's files: %d bytes, %v", len(b), err)
	}
}

func TestCopyUpAndDiffSize(t *testing.T) {
	for _, mode := range []QuotaMode{QuotaOnDemand, QuotaAlways} {
		t.Run(string(mode), func(t *testing.T) { testCopyUpAndDiffSize(t, mode) })
	}
}

func testCopyUpAndDiffSize(t *testing.T, mode QuotaMode) {
	d, _ := newTestDriver(t, 0, Options{Quota: mode})
	ctx := context.Background()
	must(t, d.Create(ctx, "base", "", nil))
	n, err := d.ApplyDiff(ctx, "base", layerTar(t, map[string]string{"a": string(randBytes(16384)), "b": "bbbb"}))
	must(t, err)
	if s, err := d.DiffSize(ctx, "base"); err != nil || s != n || n != 16388 {
		t.Errorf("DiffSize(base) = %d, %v; want the applied %d (16388)", s, err, n)
	}
	must(t, d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true}))
	dir, err := d.Get(ctx, "ctr", nil)
	must(t, err)
	// Rewrite one 4 KiB block of a (copy-on-write copies that block only),
	// chmod b (metadata only, no data copied), add c.
	f, err := os.OpenFile(filepath.Join(dir, "a"), os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{1}, 4096), 4096)
	must(t, err)
	must(t, f.Close())
	must(t, os.Chmod(filepath.Join(dir, "b"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "c"), randBytes(8192), 0o644))
	must(t, d.Put(ctx, "ctr"))
	got, err := d.CopyUp(ctx, "ctr")
	must(t, err)
	want := driver.CopyUpStats{CopiedFiles: 1, CopiedBytes: 4096, NewFiles: 1, NewBytes: 8192}
	if mode == QuotaAlways {
		// The bytes add up to the exclusive qgroup counter, which also
		// holds the tree blocks the layer copied.
		u, err := d.QuotaUsage(ctx, "ctr")
		must(t, err)
		if got.CopiedBytes+got.NewBytes != u.Used || got.CopiedBytes < want.CopiedBytes {
			t.Errorf("CopyUp = %+v with quotas on, want bytes adding up to the exclusive %d", got, u.Used)
		}
		want.CopiedBytes = got.CopiedBytes
	}
	if got != want {
		t.Errorf("CopyUp = %+v, want %+v", got, want)
	}
	// DiffSize of a writable layer: the files it added or changed (a, b, c).
	if s, err := d.DiffSize(ctx, "ctr"); err != nil || s != 16384+4+8192 {
		t.Errorf("DiffSize(ctr) = %d, %v; want %d", s, err, 16384+4+8192)
	}
}
