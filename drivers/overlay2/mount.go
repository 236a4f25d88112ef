package overlay2

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/mount"
)

// mountSpec is one overlay mount of a layer.
type mountSpec struct {
	target string
	lowers []string // paths relative to the root ("l/<short>" or "empty"), top first
	upper  string   // layer ID whose diff/ is the upper dir; "" for a read-only view
	// volatile: no syncs at all for this mount (kernel 5.10+).
	volatile bool
	label    string
}

// pageLimit is the most mount(2) copies of its data argument: one page,
// NUL included.
func pageLimit() int { return os.Getpagesize() - 1 }

// options renders the mount options; with prefix "" the lower, upper and
// work dirs are relative to the root (for the chdir fallback).
func (d *Driver) options(s mountSpec, prefix string, withLowers bool) []string {
	var opts []string
	if withLowers {
		ls := make([]string, len(s.lowers))
		for i, l := range s.lowers {
			ls[i] = prefix + l
		}
		opts = append(opts, "lowerdir="+strings.Join(ls, ":"))
	}
	if s.upper != "" {
		opts = append(opts,
			"upperdir="+prefix+filepath.Join(layersDir, s.upper, "diff"),
			"workdir="+prefix+filepath.Join(layersDir, s.upper, "work"))
		if s.volatile {
			opts = append(opts, "volatile")
		}
	}
	opts = append(opts, d.host.safeOpts...)
	opts = append(opts, d.opts.MountOpts...)
	if s.label != "" {
		opts = append(opts, fmt.Sprintf("context=%q", s.label))
	}
	return opts
}

// mountOverlay mounts s, choosing the way by how long the option string
// is: mount(2) with absolute paths when it fits in a page; past that the
// new mount API, one "lowerdir+" per layer (Linux 6.8+); on older kernels
// mount(2) with paths relative to the root from a thread whose working
// directory is the root (moby's and containerd's way), which fits about
// 130 layers. Beyond that the chain is refused with the reason.
func (d *Driver) mountOverlay(s mountSpec) (how string, err error) {
	if len(s.lowers) > maxLowers {
		return "", fmt.Errorf("%w: %d lower layers, the kernel stacks at most %d", driver.ErrNotSupported, len(s.lowers), maxLowers)
	}
	api := d.opts.MountAPI
	abs := strings.Join(d.options(s, d.root+"/", true), ",")
	if api != MountAPIFsconfig && len(abs) <= pageLimit() {
		return "mount", mount.Mount("overlay", s.target, "overlay", 0, abs)
	}
	if api != MountAPILegacy && d.host.fsconfig {
		return "fsconfig", d.mountFsconfig(s)
	}
	if api == MountAPIFsconfig {
		return "", fmt.Errorf("%w: mountapi=fsconfig but the kernel refused it: %s", driver.ErrNotSupported, d.host.fsconfigReason)
	}
	rel := strings.Join(d.options(s, "", true), ",")
	if len(rel) <= pageLimit() {
		return "mount-relative", mountFromRoot(d.root, s.target, rel)
	}
	why := "mountapi=legacy"
	if d.host.fsconfigReason != "" {
		why = "no fsconfig lowerdir+ (Linux 6.8+): " + d.host.fsconfigReason
	}
	return "", fmt.Errorf("%w: %d lower layers need %d bytes of mount options, mount(2) takes %d (%s)",
		driver.ErrNotSupported, len(s.lowers), len(rel), pageLimit(), why)
}

func (d *Driver) mountFsconfig(s mountSpec) error {
	c, err := mount.Open("overlay")
	if err != nil {
		return err
	}
	defer c.Close()
	for _, l := range s.lowers {
		if err := c.SetString("lowerdir+", filepath.Join(d.root, l)); err != nil {
			return err
		}
	}
	for _, o := range d.options(s, d.root+"/", false) {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			err = c.SetFlag(k)
		} else {
			err = c.SetString(k, strings.Trim(v, `"`))
		}
		if err != nil {
			return err
		}
	}
	return c.MountAt(s.target, 0)
}

// mountFromRoot calls mount(2) from a thread whose working directory is
// root, so that relative layer paths resolve there. The thread unshares
// its filesystem attributes first so the chdir affects no other thread,
// and it is never unlocked: the runtime ends it with the goroutine instead
// of handing a thread with a foreign cwd to other goroutines.
func mountFromRoot(root, target, data string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		if err := unix.Chdir(root); err != nil {
			errc <- &os.PathError{Op: "chdir", Path: root, Err: err}
			return
		}
		errc <- mount.Mount("overlay", target, "overlay", 0, data)
	}()
	return <-errc
}
