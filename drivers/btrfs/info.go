//go:build linux && cgo

package btrfs

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cbtrfs "github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/archive"
	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/store"
)

// DiffSize is the size of layer id's own data: for a layer filled by
// ApplyDiff the size recorded then; for a writable layer the size of the
// files it added or changed, found by the generation scan (never a walk
// of the parent).
func (d *Driver) DiffSize(ctx context.Context, id string) (int64, error) {
	if err := d.check("diffsize", id); err != nil {
		return 0, err
	}
	rec, ok := d.store.Get(id)
	if !ok || rec.State != store.Ready {
		return 0, driver.Wrap("diffsize", id, driver.ErrLayerNotFound)
	}
	if !rec.Writable {
		return rec.Size, nil
	}
	dir, ch, release, err := d.changes(ctx, id)
	if err != nil {
		return 0, driver.Wrap("diffsize", id, err)
	}
	defer release()
	var size int64
	seen := map[uint64]bool{}
	for _, c := range ch {
		if c.Kind == archive.ChangeDelete {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, c.Path), &st); err != nil {
			return 0, driver.Wrap("diffsize", id, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		size += st.Size
	}
	return size, nil
}

// CopyUp reports what copy-on-write put into layer id since it was
// snapshotted from its parent: files that existed in the parent and had
// data blocks rewritten (copied), files created in the layer (new), and
// the bytes of the data extents each group wrote. It reads only the tree
// blocks written since the snapshot, so it stays cheap on big layers.
//
// With quotas on, the bytes add up to the layer's exclusive qgroup
// counter instead: NewBytes as scanned, CopiedBytes the rest, which then
// also counts the metadata blocks copy-on-write gave the layer (the scan
// commits first, so the counter is current).
func (d *Driver) CopyUp(ctx context.Context, id string) (driver.CopyUpStats, error) {
	if err := d.check("copyup", id); err != nil {
		return driver.CopyUpStats{}, err
	}
	dir, release, err := d.view(ctx, id)
	if err != nil {
		return driver.CopyUpStats{}, driver.Wrap("copyup", id, err)
	}
	defer release()
	rec, _ := d.store.Get(id)
	var base uint64
	if rec.Parent != "" {
		base, _ = strconv.ParseUint(rec.Extra[extraBaseGen], 10, 64)
	}
	inodes, err := scanChanged(ctx, dir, base, true)
	if err != nil {
		return driver.CopyUpStats{}, driver.Wrap("copyup", id, err)
	}
	var s driver.CopyUpStats
	for _, in := range inodes {
		if in.mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		switch {
		case in.gen > base:
			s.NewFiles++
			s.NewBytes += in.newBytes
		case in.newBytes > 0:
			s.CopiedFiles++
			s.CopiedBytes += in.newBytes
		}
	}
	if d.quotaOn() {
		excl, err := qgroupExclusive(dir)
		if err != nil {
			return driver.CopyUpStats{}, driver.Wrap("copyup", id, err)
		}
		// A counter below the scan is one the kernel has not caught up on
		// (a rescan); the scan is then the better number.
		if excl >= s.NewBytes+s.CopiedBytes {
			s.CopiedBytes = excl - s.NewBytes
		}
	}
	return s, nil
}

// QuotaScope: limits count the layer's own data (exclusive qgroup bytes).
func (d *Driver) QuotaScope() (driver.QuotaScope, error) {
	if d.opts.Quota == QuotaNever {
		return 0, fmt.Errorf("btrfs: quotas disabled by option quota=never: %w", driver.ErrNotSupported)
	}
	return driver.QuotaLayerData, nil
}

// QuotaUsage reports layer id's limit and its exclusive qgroup bytes
// (after committing the transaction so the numbers are current). With
// quotas off it reports the bytes of the extents the layer wrote.
func (d *Driver) QuotaUsage(ctx context.Context, id string) (driver.QuotaUsage, error) {
	if err := d.check("quota", id); err != nil {
		return driver.QuotaUsage{}, err
	}
	dir, release, err := d.view(ctx, id)
	if err != nil {
		return driver.QuotaUsage{}, driver.Wrap("quota", id, err)
	}
	defer release()
	rec, _ := d.store.Get(id)
	u := driver.QuotaUsage{Limit: rec.SizeLimit, Scope: driver.QuotaLayerData}
	if d.quotaOn() {
		used, err := exclusiveBytes(dir)
		if err != nil {
			return driver.QuotaUsage{}, driver.Wrap("quota", id, err)
		}
		u.Used = used
		return u, nil
	}
	var base uint64
	if rec.Parent != "" {
		base, _ = strconv.ParseUint(rec.Extra[extraBaseGen], 10, 64)
	}
	inodes, err := scanChanged(ctx, dir, base, true)
	if err != nil {
		return driver.QuotaUsage{}, driver.Wrap("quota", id, err)
	}
	for _, in := range inodes {
		u.Used += in.newBytes
	}
	return u, nil
}

// exclusiveBytes is the exclusive qgroup counter of the subvolume at dir,
// after a commit.
func exclusiveBytes(dir string) (int64, error) {
	f, err := openDir(dir)
	if err != nil {
		return 0, err
	}
	err = syncFS(f)
	f.Close()
	if err != nil {
		return 0, err
	}
	return qgroupExclusive(dir)
}

// qgroupExclusive is the exclusive counter as of the last commit.
func qgroupExclusive(dir string) (int64, error) {
	f, err := openDir(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	id, err := cbtrfs.SubvolID(dir)
	if err != nil {
		return 0, err
	}
	qg, err := qgroups(f)
	if err != nil {
		return 0, err
	}
	q, ok := qg[id]
	if !ok {
		return 0, fmt.Errorf("no qgroup 0/%d", id)
	}
	return int64(q.Exclusive), nil
}

// Layers lists the complete layers.
func (d *Driver) Layers(ctx context.Context) ([]driver.LayerInfo, error) {
	if err := d.checkOpen(); err != nil {
		return nil, driver.Wrap("layers", "", err)
	}
	return d.store.Infos(), nil
}

// Status reports the backing device, whether quotas are on and the layer
// count.
func (d *Driver) Status(ctx context.Context) driver.Status {
	n := len(d.store.Ready())
	quota := "off"
	if d.quotaOn() {
		quota = "on"
	}
	dev, err := backingDevice(d.root)
	if err != nil {
		dev = "unknown (" + err.Error() + ")"
	}
	remove := "synchronous"
	if d.opts.AsyncRemove {
		remove = "background"
	}
	info := []driver.KV{
		{Key: "Backing device", Value: dev},
		{Key: "Quota", Value: quota},
		{Key: "Quota mode", Value: string(d.opts.Quota)},
		{Key: "Layers", Value: strconv.Itoa(n)},
		{Key: "Fast diff", Value: strconv.FormatBool(!d.opts.NoFastDiff)},
		{Key: "Remove", Value: remove},
	}
	d.bgErrMu.Lock()
	if d.bgErr != nil {
		info = append(info, driver.KV{Key: "Last background delete error", Value: d.bgErr.Error()})
	}
	d.bgErrMu.Unlock()
	return driver.Status{
		Driver: Name, Root: d.root, BackingFS: "btrfs", Layers: n,
		NativeDiff: !d.opts.NoFastDiff, Info: info,
	}
}

// backingDevice finds the device of the mount that holds root in
// /proc/self/mountinfo (the last, most specific, mount point above it).
func backingDevice(root string) (string, error) {
	abs, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	best, dev := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+3 || len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if fields[sep+1] != "btrfs" || !(abs == mp || mp == "/" || strings.HasPrefix(abs, mp+"/")) {
			continue
		}
		if len(mp) >= len(best) {
			best, dev = mp, unescapeMount(fields[sep+2])
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if dev == "" {
		return "", fmt.Errorf("no btrfs mount holds %s", abs)
	}
	return dev, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Close waits for background deletions and stops the driver. Nothing is
// mounted, so there is nothing to unmount. Calling it twice is fine.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.bg.Wait()
	return nil
}
