package mount

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// FSContext is a filesystem configuration context of the new mount API
// (fsopen(2)). Each key is set by its own fsconfig(2) call, so no option
// string has to fit in one page: overlayfs's "lowerdir+" (Linux 6.8+)
// takes one lower layer per call, up to the kernel's stacking limit.
type FSContext struct {
	fd     int
	fstype string
	keys   []string
}

// Open starts configuring a new filesystem of type fstype. It fails with
// ENOSYS on kernels without the new mount API (before 5.2).
func Open(fstype string) (*FSContext, error) {
	fd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, &Error{Op: "fsopen", FSType: fstype, Err: err}
	}
	return &FSContext{fd: fd, fstype: fstype}, nil
}

// SetString sets key=value.
func (c *FSContext) SetString(key, value string) error {
	if err := unix.FsconfigSetString(c.fd, key, value); err != nil {
		return c.fail("fsconfig", key+"="+value, err)
	}
	c.keys = append(c.keys, key)
	return nil
}

// SetFlag sets a value-less option (e.g. "volatile", "ro").
func (c *FSContext) SetFlag(key string) error {
	if err := unix.FsconfigSetFlag(c.fd, key); err != nil {
		return c.fail("fsconfig", key, err)
	}
	c.keys = append(c.keys, key)
	return nil
}

// MountAt creates the filesystem, makes a detached mount of it with the
// MOUNT_ATTR_* flags in attrs and attaches it at target.
func (c *FSContext) MountAt(target string, attrs int) error {
	if err := unix.FsconfigCreate(c.fd); err != nil {
		return c.fail("fsconfig create", target, err)
	}
	mfd, err := unix.Fsmount(c.fd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return c.fail("fsmount", target, err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return &Error{Op: "move_mount", Target: target, FSType: c.fstype, Err: err}
	}
	return nil
}

// Close releases the context. It is safe to call more than once.
func (c *FSContext) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// fail builds an error that carries the kernel's log for the context,
// which names the real cause where errno alone ("invalid argument") does
// not.
func (c *FSContext) fail(op, what string, err error) error {
	return &Error{Op: op, Target: what, FSType: c.fstype, Err: err, Log: c.readLog()}
}

// readLog drains the context's message log (read(2) on the fsopen fd:
// one message per read, ENODATA when empty).
func (c *FSContext) readLog() string {
	var msgs []string
	buf := make([]byte, 4096)
	for i := 0; i < 16; i++ {
		n, err := unix.Read(c.fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	return strings.Join(msgs, "; ")
}

// ErrNoNewAPI reports that the kernel lacks the new mount API.
var ErrNoNewAPI = errors.New("kernel has no fsopen/fsconfig mount API")

// HasNewAPI reports whether fsopen works for fstype here, with the reason
// when it does not.
func HasNewAPI(fstype string) error {
	c, err := Open(fstype)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("%w (%v)", ErrNoNewAPI, err)
		}
		return err
	}
	return c.Close()
}
