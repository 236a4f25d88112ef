package overlay2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/mount"
)

// host is what the checks found about the kernel and the backing
// filesystem of one root. It is kept on the Driver: two drivers on two
// roots may sit on different filesystems.
type host struct {
	backingFS string
	dType     bool
	// fsconfig: overlay accepts "lowerdir+" through fsconfig (Linux 6.8+),
	// so chains are not limited by mount(2)'s one-page option string.
	fsconfig       bool
	fsconfigReason string
	// safeOpts are mount options the kernel accepted that keep the upper
	// dir a plain record of the layer's changes (index=off,
	// redirect_dir=off, metacopy=off).
	safeOpts []string
	volatile bool
	// nativeDiff: Diff/Changes may read diff/ directly.
	nativeDiff       bool
	nativeDiffReason string
	// inEffect lists redirect_dir=on / metacopy=on as the kernel showed
	// them in the test mount's options (what it really does, whatever
	// was asked for).
	inEffect []string
}

// unusableReason says why overlay cannot use fs as its upper layer, or "".
// Filesystems not named here (fuse, zfs, ...) are judged by the test mount.
func unusableReason(fs string) string {
	switch fs {
	case "overlayfs":
		return "overlay cannot use another overlay mount as its upper layer"
	case "aufs":
		return "overlay cannot be stacked on aufs"
	case "ecryptfs":
		return "overlay cannot be stacked on ecryptfs"
	case "nfs":
		return "nfs cannot hold an overlay upper layer (no whiteouts or trusted xattrs)"
	}
	return ""
}

func notSupported(format string, args ...any) error {
	return fmt.Errorf("overlay2: %w: %s", driver.ErrNotSupported, fmt.Sprintf(format, args...))
}

// Probe reports whether overlay2 can work on root: nil, or an error
// wrapping driver.ErrNotSupported with the reason. It makes a real test
// mount under root; directories it had to create for that are removed
// again, so probing leaves nothing behind.
func Probe(ctx context.Context, root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("overlay2: %w", err)
	}
	created := firstMissing(root)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("overlay2: %w", err)
	}
	if created != "" {
		defer os.RemoveAll(created)
	}
	_, err = checkHost(ctx, root, Options{}, true)
	return err
}

// firstMissing returns the topmost directory of p that does not exist
// yet, or "" if p exists.
func firstMissing(p string) string {
	missing := ""
	for q := p; ; q = filepath.Dir(q) {
		if _, err := os.Lstat(q); err == nil {
			return missing
		}
		missing = q
		if q == filepath.Dir(q) {
			return missing
		}
	}
}

// checkHost runs the checks in a scratch directory under root and removes
// it again.
func checkHost(ctx context.Context, root string, opts Options, testMount bool) (host, error) {
	var h host
	fs, err := fsutil.BackingFS(root)
	if err != nil {
		return h, err
	}
	h.backingFS = fs
	if why := unusableReason(fs); why != "" {
		return h, notSupported("backing filesystem of %s is %s: %s", root, fs, why)
	}
	scratch, err := os.MkdirTemp(root, checkPrefix)
	if err != nil {
		return h, fmt.Errorf("overlay2: %w", err)
	}
	defer func() {
		mount.UnmountAll(scratch)
		os.RemoveAll(scratch)
	}()
	h.dType, err = supportsDType(scratch)
	if err != nil {
		return h, err
	}
	if !h.dType {
		return h, notSupported("backing filesystem %s of %s does not report d_type (for xfs: mkfs.xfs -n ftype=1)", fs, root)
	}
	if err := ctx.Err(); err != nil {
		return h, err
	}
	if testMount {
		if err := h.testMounts(scratch, opts); err != nil {
			return h, err
		}
	} else {
		// Trust the defaults a mount would have settled on; New's caller
		// asked to skip the test mounts because it has just probed.
		h.safeOpts = []string{"index=off", "redirect_dir=off", "metacopy=off"}
		h.volatile = true
		h.fsconfig = mount.HasNewAPI("overlay") == nil
		if !h.fsconfig {
			h.fsconfigReason = "fsopen(overlay) failed"
		}
	}
	h.decideNativeDiff(opts, moduleParam)
	return h, nil
}

// testMounts mounts overlay for real: once through mount(2) with the
// options every layer mount uses, checking that a deletion leaves a char
// 0/0 whiteout in the upper dir; once with "volatile"; once through
// fsconfig with "lowerdir+".
func (h *host) testMounts(dir string, opts Options) error {
	for _, d := range []string{"l1", "l2", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "l2", "a"), []byte("a"), 0o644); err != nil {
		return err
	}
	merged := filepath.Join(dir, "merged")
	base := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s", filepath.Join(dir, "l1"), filepath.Join(dir, "l2"),
		filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	// volatile (Linux 5.10+) first: where it works the other test mounts
	// use it too, so that unmounting them does not sync the filesystem.
	// The kernel leaves work/work/incompat/volatile behind, which has to
	// go before the work dir is used again.
	clearWork := func() { os.RemoveAll(filepath.Join(dir, "work", "work", "incompat")) }
	if mount.Mount("overlay", merged, "overlay", 0, base+",volatile") == nil {
		h.volatile = true
		mount.Unmount(merged, 0)
		clearWork()
		base += ",volatile"
	}
	extra := append([]string{}, opts.MountOpts...)
	safe := []string{"index=off", "redirect_dir=off", "metacopy=off"}
	err := mount.Mount("overlay", merged, "overlay", 0, strings.Join(append([]string{base}, append(safe, extra...)...), ","))
	if err != nil {
		// Older kernels know fewer of these; keep those accepted alone.
		safe = safe[:0]
		for _, o := range []string{"index=off", "redirect_dir=off", "metacopy=off"} {
			if mount.Mount("overlay", merged, "overlay", 0, base+","+o) == nil {
				safe = append(safe, o)
				mount.Unmount(merged, 0)
				clearWork()
			}
		}
		err = mount.Mount("overlay", merged, "overlay", 0, strings.Join(append([]string{base}, append(safe, extra...)...), ","))
	}
	if err != nil {
		return notSupported("test mount of overlay failed: %v", err)
	}
	h.safeOpts = safe
	if m, ok, _ := mount.Lookup(merged); ok {
		for _, o := range []string{"redirect_dir=on", "metacopy=on"} {
			if m.HasOption(o) {
				h.inEffect = append(h.inEffect, o)
			}
		}
	}
	werr := os.Remove(filepath.Join(merged, "a"))
	if uerr := mount.Unmount(merged, 0); uerr != nil {
		return fmt.Errorf("overlay2: test mount: %w", uerr)
	}
	clearWork()
	if werr != nil {
		return notSupported("deleting through a test overlay mount failed: %v", werr)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "upper", "a"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		return notSupported("a deletion through overlay did not leave a 0/0 whiteout device in the upper dir (err %v)", err)
	}

	if err := h.testFsconfig(dir, merged); err != nil {
		h.fsconfig = false
		h.fsconfigReason = err.Error()
	} else {
		h.fsconfig = true
	}
	return nil
}

func (h *host) testFsconfig(dir, merged string) error {
	c, err := mount.Open("overlay")
	if err != nil {
		return err
	}
	defer c.Close()
	if h.volatile {
		if err := c.SetFlag("volatile"); err != nil {
			return err
		}
	}
	for _, kv := range [][2]string{
		{"lowerdir+", filepath.Join(dir, "l1")},
		{"lowerdir+", filepath.Join(dir, "l2")},
		{"upperdir", filepath.Join(dir, "upper")},
		{"workdir", filepath.Join(dir, "work")},
	} {
		if err := c.SetString(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := c.MountAt(merged, 0); err != nil {
		return err
	}
	return mount.Unmount(merged, 0)
}

// decideNativeDiff: the upper dir describes a layer's changes plainly
// unless the kernel writes redirects (a renamed directory points to its
// old name in a lower layer) or metacopy entries (metadata-only copy-ups
// whose data stays below). Either makes a diff that reads only diff/
// wrong (moby#38111), so then the naive diff is used.
// param reads an overlay module parameter (moduleParam; tests pass
// their own).
func (h *host) decideNativeDiff(opts Options, param func(string) string) {
	if opts.ForceNaiveDiff {
		h.nativeDiff, h.nativeDiffReason = false, "naive diff forced by the naivediff option"
		return
	}
	for _, o := range opts.MountOpts {
		k, v, _ := strings.Cut(o, "=")
		if (k == "redirect_dir" && v == "on") || (k == "metacopy" && v == "on") {
			h.nativeDiff, h.nativeDiffReason = false, fmt.Sprintf("mount option %s makes the upper dir hold redirects/metadata-only copies", o)
			return
		}
	}
	if len(h.inEffect) > 0 {
		h.nativeDiff, h.nativeDiffReason = false, "the test mount shows "+strings.Join(h.inEffect, ",")+" in effect"
		return
	}
	has := func(o string) bool {
		for _, s := range h.safeOpts {
			if s == o {
				return true
			}
		}
		return false
	}
	var on []string
	for _, p := range []struct{ param, opt string }{{"redirect_dir", "redirect_dir=off"}, {"metacopy", "metacopy=off"}} {
		if has(p.opt) {
			continue
		}
		if v := param(p.param); v == "Y" || v == "on" {
			on = append(on, fmt.Sprintf("%s=%s (module default, and the kernel refused %s)", p.param, v, p.opt))
		}
	}
	if len(on) > 0 {
		h.nativeDiff, h.nativeDiffReason = false, "kernel uses "+strings.Join(on, ", ")
		return
	}
	h.nativeDiff = true
	if len(h.safeOpts) > 0 {
		h.nativeDiffReason = "every mount sets " + strings.Join(h.safeOpts, ",")
	} else {
		h.nativeDiffReason = "kernel defaults have redirect_dir and metacopy off"
	}
}

func moduleParam(name string) string {
	b, err := os.ReadFile("/sys/module/overlay/parameters/" + name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// supportsDType creates a file in dir and reads the directory with
// getdents64: overlay needs d_type to find whiteouts quickly, and some
// filesystems (xfs made with ftype=0) report DT_UNKNOWN. os.ReadDir hides
// DT_UNKNOWN behind an lstat, so the raw records are read here.
func supportsDType(dir string) (bool, error) {
	if err := os.WriteFile(filepath.Join(dir, "dtype"), nil, 0o600); err != nil {
		return false, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return false, &os.PathError{Op: "getdents", Path: dir, Err: err}
		}
		if n <= 0 {
			return false, errors.New("overlay2: d_type check: test file not listed")
		}
		// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
		for off := 0; off+19 <= n; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen == 0 {
				break
			}
			typ := buf[off+18]
			name := buf[off+19 : off+reclen]
			if i := indexNUL(name); i >= 0 {
				name = name[:i]
			}
			if string(name) == "dtype" {
				return typ != unix.DT_UNKNOWN, nil
			}
			off += reclen
		}
	}
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}
