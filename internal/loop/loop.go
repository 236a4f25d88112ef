// Package loop attaches regular files to loop block devices through the
// kernel's ioctls (/dev/loop-control, LOOP_CONFIGURE), so that tests and
// backends need no losetup at run time.
package loop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options are the options of Attach.
type Options struct {
	// ReadOnly attaches the file read-only.
	ReadOnly bool
	// Autoclear makes the kernel detach the device by itself once the last
	// user is gone (the last fd closed and, if mounted, the filesystem
	// unmounted). It is what keeps a crashed process from leaking devices.
	Autoclear bool
	// DirectIO asks the loop driver to bypass the page cache of the
	// backing file, saving double caching.
	DirectIO bool
}

// Device is an attached loop device. It holds an open fd on the device;
// Close releases it (with Autoclear this detaches once unused), Detach
// detaches explicitly.
type Device struct {
	// Path is the device node, e.g. /dev/loop3.
	Path   string
	Number int
	f      *os.File
}

// ErrNoFreeDevice: the kernel has no free loop device to hand out (or this
// process may not open /dev/loop-control).
var ErrNoFreeDevice = errors.New("loop: no free loop device")

// Attach binds backing to a free loop device. The free device the kernel
// names can be taken by another process before we configure it, so Attach
// retries a few times on EBUSY.
func Attach(ctx context.Context, backing string, opts Options) (*Device, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	bf, err := os.OpenFile(backing, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer bf.Close()

	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoFreeDevice, err)
	}
	defer ctl.Close()

	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("%w: LOOP_CTL_GET_FREE: %v", ErrNoFreeDevice, err)
		}
		dev, err := configure(n, bf, opts)
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, unix.EBUSY) || attempt >= 20 {
			return nil, err
		}
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
}

func configure(n int, bf *os.File, opts Options) (*Device, error) {
	path := "/dev/loop" + strconv.Itoa(n)
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	cfg := unix.LoopConfig{Fd: uint32(bf.Fd())}
	if opts.ReadOnly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	if opts.Autoclear {
		cfg.Info.Flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	if opts.DirectIO {
		cfg.Info.Flags |= unix.LO_FLAGS_DIRECT_IO
	}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], bf.Name())
	if err := unix.IoctlLoopConfigure(int(f.Fd()), &cfg); err != nil {
		f.Close()
		return nil, fmt.Errorf("loop: LOOP_CONFIGURE %s: %w", path, err)
	}
	return &Device{Path: path, Number: n, f: f}, nil
}

// Detach unbinds the device from its file and releases the fd. On a device
// that is still mounted the kernel defers the detach until the unmount.
func (d *Device) Detach() error {
	if d.f == nil {
		return DetachPath(d.Path)
	}
	err := unix.IoctlSetInt(int(d.f.Fd()), unix.LOOP_CLR_FD, 0)
	cerr := d.f.Close()
	d.f = nil
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("loop: LOOP_CLR_FD %s: %w", d.Path, err)
	}
	return cerr
}

// Close releases the fd without detaching: an Autoclear device then goes
// away by itself when its last user does.
func (d *Device) Close() error {
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// DetachPath detaches the loop device at path (e.g. one found by
// BackedBy). A device that is already free is not an error.
func DetachPath(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loop: %w", err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("loop: LOOP_CLR_FD %s: %w", path, err)
	}
	return nil
}

// BackedBy returns the loop devices whose backing file is file, from
// sysfs: what recovery code uses to find devices a crashed run left.
func BackedBy(file string) ([]string, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
		if err != nil {
			continue // not attached
		}
		if strings.TrimSuffix(string(b), "\n") == abs {
			out = append(out, "/dev/"+name)
		}
	}
	return out, nil
}
