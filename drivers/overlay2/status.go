package overlay2

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/store"
)

// QuotaScope implements driver.Quota. Enforcing a layer's size needs xfs
// project quotas on the backing filesystem, which this backend does not
// set up; it says so rather than ignore a limit.
func (d *Driver) QuotaScope() (driver.QuotaScope, error) {
	return 0, fmt.Errorf("%w: overlay2 size limits need project quota (xfs mounted with prjquota); backing filesystem here is %s and overlay2 does not manage project quotas",
		driver.ErrNotSupported, d.host.backingFS)
}

// QuotaUsage implements driver.Quota.
func (d *Driver) QuotaUsage(ctx context.Context, id string) (driver.QuotaUsage, error) {
	_, err := d.QuotaScope()
	return driver.QuotaUsage{}, driver.Wrap("quota", id, err)
}

// Status implements driver.Driver.
func (d *Driver) Status(ctx context.Context) driver.Status {
	recs := d.store.List()
	parent := map[string]string{}
	n := 0
	for _, r := range recs {
		parent[r.ID] = r.Parent
		if r.State == store.Ready {
			n++
		}
	}
	depth := maxDepth(parent)
	d.mu.Lock()
	active := len(d.mounts)
	hows := map[string]int{}
	for _, m := range d.mounts {
		hows[m.how]++
	}
	repaired := strings.Join(d.repaired, "; ")
	d.mu.Unlock()
	api := "mount(2) within one page, then relative paths"
	if d.host.fsconfig {
		api = "mount(2) within one page, fsconfig lowerdir+ beyond"
	}
	if d.opts.MountAPI == MountAPILegacy {
		api = "mount(2) only (mountapi=legacy)"
	} else if d.opts.MountAPI == MountAPIFsconfig {
		api = "fsconfig lowerdir+ only (mountapi=fsconfig)"
	}
	if !d.host.fsconfig {
		api += " (no lowerdir+: " + d.host.fsconfigReason + ")"
	}
	info := []driver.KV{
		{Key: "Backing Filesystem", Value: d.host.backingFS},
		{Key: "Supports d_type", Value: strconv.FormatBool(d.host.dType)},
		{Key: "Native Overlay Diff", Value: strconv.FormatBool(d.host.nativeDiff)},
		{Key: "Native Diff Reason", Value: d.host.nativeDiffReason},
		{Key: "Mount API", Value: api},
		{Key: "Mount Options", Value: strings.Join(append(append([]string{}, d.host.safeOpts...), d.opts.MountOpts...), ",")},
		{Key: "Supports volatile", Value: strconv.FormatBool(d.host.volatile)},
		{Key: "Layers", Value: strconv.Itoa(n)},
		{Key: "Max Chain Depth", Value: strconv.Itoa(depth)},
		{Key: "Chain Depth Limit", Value: strconv.Itoa(maxLowers)},
		{Key: "Active Mounts", Value: strconv.Itoa(active)},
	}
	if repaired != "" {
		info = append(info, driver.KV{Key: "Repaired On Open", Value: repaired})
	}
	return driver.Status{Driver: Name, Root: d.root, BackingFS: d.host.backingFS, Layers: n, NativeDiff: d.host.nativeDiff, Info: info}
}

// maxDepth is the longest parent chain, in layers.
func maxDepth(parent map[string]string) int {
	memo := map[string]int{}
	var depth func(id string, guard int) int
	depth = func(id string, guard int) int {
		if v, ok := memo[id]; ok {
			return v
		}
		p, ok := parent[id]
		if !ok || guard > len(parent) {
			return 0
		}
		v := 1
		if p != "" {
			v += depth(p, guard+1)
		}
		memo[id] = v
		return v
	}
	best := 0
	for id := range parent {
		best = max(best, depth(id, 0))
	}
	return best
}
