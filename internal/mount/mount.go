package mount

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mount calls mount(2), reporting the arguments on failure.
func Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return &Error{Op: "mount", Target: target, Source: source, FSType: fstype, Data: data, Err: err}
	}
	return nil
}

// Unmount unmounts target. A target that is not mounted (EINVAL) or gone
// (ENOENT) is not an error: callers use Unmount to reach a state, not to
// perform a step. EBUSY is retried briefly, since a process that was just
// inside the mount may still be leaving it.
func Unmount(target string, flags int) error {
	var err error
	for i := 0; i < 10; i++ {
		err = unix.Unmount(target, flags)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EBUSY):
			time.Sleep(time.Duration(i+1) * 5 * time.Millisecond)
			continue
		}
		break
	}
	return &Error{Op: "umount", Target: target, Err: err}
}

// UnmountAll unmounts every mount at or below dir, deepest first; for a
// mount that stays busy it falls back to a lazy detach so that the tree
// can be cleaned up. It returns the mount points it unmounted.
func UnmountAll(dir string) ([]string, error) {
	ms, err := Under(dir)
	if err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for _, m := range ms {
		err := Unmount(m.Mountpoint, 0)
		if err != nil && errors.Is(err, unix.EBUSY) {
			err = Unmount(m.Mountpoint, unix.MNT_DETACH)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, m.Mountpoint)
	}
	return done, errors.Join(errs...)
}

// Error describes a failed mount call.
type Error struct {
	Op     string
	Source string
	Target string
	FSType string
	Data   string
	// Log is what the kernel wrote to the filesystem context's log (new
	// mount API only): usually the real reason, e.g. "overlayfs: too many
	// lower directories".
	Log string
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Op, e.Target)
	if e.FSType != "" {
		fmt.Fprintf(&b, " (type %s", e.FSType)
		if e.Source != "" {
			fmt.Fprintf(&b, ", source %s", e.Source)
		}
		if e.Data != "" {
			data := e.Data
			if len(data) > 200 {
				data = fmt.Sprintf("%s... (%d bytes)", data[:200], len(e.Data))
			}
			fmt.Fprintf(&b, ", options %q", data)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	if e.Log != "" {
		fmt.Fprintf(&b, ": %s", e.Log)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsMountPoint reports whether path is the mount point of a mount.
func IsMountPoint(path string) (bool, error) {
	_, ok, err := Lookup(path)
	if err != nil {
		return false, err
	}
	if ok {
		return true, nil
	}
	if _, err := os.Lstat(path); err != nil {
		return false, err
	}
	return false, nil
}
