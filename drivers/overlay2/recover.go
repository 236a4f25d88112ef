package overlay2

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stratafs/strata/internal/mount"
	"github.com/stratafs/strata/internal/store"
)

// unmountLeftovers unmounts everything under the root and returns the
// layers that were mounted volatile.
func (d *Driver) unmountLeftovers() (map[string]bool, error) {
	ms, err := mount.Under(d.root)
	if err != nil {
		return nil, fmt.Errorf("overlay2: reading the mount table: %w", err)
	}
	vol := map[string]bool{}
	for _, m := range ms {
		rel, _ := filepath.Rel(filepath.Join(d.root, layersDir), m.Mountpoint)
		if id, sub, ok := strings.Cut(rel, "/"); ok && sub == "merged" && volatileMount(m) {
			vol[id] = true
		}
	}
	done, err := mount.UnmountAll(d.root)
	for _, p := range done {
		d.repaired = append(d.repaired, "unmounted "+p)
	}
	if err != nil {
		return nil, fmt.Errorf("overlay2: unmounting what a previous process left: %w", err)
	}
	return vol, nil
}

func (d *Driver) recover(ctx context.Context, volatileAtDeath map[string]bool) error {
	for _, r := range d.store.List() {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case r.State == store.Applying:
			d.discard(r.ID, "ApplyDiff was interrupted")
		case volatileAtDeath[r.ID]:
			d.discard(r.ID, "it was mounted volatile when its process died")
		default:
			if why := d.volatileLost(r.ID); why != "" {
				d.discard(r.ID, why)
			}
		}
	}
	removed, err := d.store.Sweep(ctx, filepath.Join(d.root, layersDir), nil, d.removeLayerData)
	for _, id := range removed {
		d.repaired = append(d.repaired, "swept unrecorded layer data "+id)
	}
	if err != nil {
		return err
	}
	if _, err := d.sweepLinks(); err != nil {
		return err
	}
	ents, err := os.ReadDir(d.root)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), checkPrefix) {
			if err := os.RemoveAll(filepath.Join(d.root, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// volatileLost says why a layer once mounted volatile must be discarded,
// or "". Its data is intact as long as the kernel that cached it is still
// running (same boot ID); after a reboot nothing says it reached the
// disk. The kernel's own marker (work/work/incompat/volatile) makes the
// next mount fail until it is removed, which is done here for the layers
// that are kept.
func (d *Driver) volatileLost(id string) string {
	b, err := os.ReadFile(filepath.Join(d.layerDir(id), volatileFile))
	if err != nil {
		return ""
	}
	if strings.TrimSpace(string(b)) != d.bootID {
		return "it was mounted volatile before a reboot, so its data may be lost"
	}
	os.RemoveAll(filepath.Join(d.workDir(id), "work", "incompat"))
	return ""
}

// discard removes a layer found broken at New; a layer with children is
// kept (they depend on it) and the reason is shown in Status.
func (d *Driver) discard(id, why string) {
	if err := d.store.Delete(id); err != nil {
		d.repaired = append(d.repaired, fmt.Sprintf("kept %s although %s: %v", id, why, err))
		return
	}
	if err := d.removeLayerData(id); err != nil {
		d.repaired = append(d.repaired, fmt.Sprintf("discarded %s (%s), data removal failed: %v", id, why, err))
		return
	}
	d.repaired = append(d.repaired, fmt.Sprintf("discarded %s: %s", id, why))
}

// volatileMount: kernels before 6.6 list "volatile", later ones
// "fsync=volatile".
func volatileMount(m mount.Info) bool {
	return m.HasOption("volatile") || m.HasOption("fsync=volatile")
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
