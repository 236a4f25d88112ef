package vfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fsutil"
)

// Probe reports whether vfs can keep layers under root: nil when it can,
// else an error wrapping driver.ErrNotSupported with the reason. vfs needs
// little (plain directories), so this only checks that root, or the
// nearest directory above it that exists, is a writable directory on a
// read-write filesystem. Nothing is left behind.
func Probe(ctx context.Context, root string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, err := nearestDir(root)
	if err != nil {
		return notSupported(err.Error())
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return notSupported(fmt.Sprintf("statfs %s: %v", dir, err))
	}
	if sfs.Flags&unix.ST_RDONLY != 0 {
		return notSupported(fmt.Sprintf("%s is on a read-only %s filesystem", dir, fsutil.FSName(sfs.Type)))
	}
	// Make what Create makes: a directory, a file in it, a rename.
	tmp, err := os.MkdirTemp(dir, ".strata-vfs-probe-")
	if err != nil {
		return notSupported(fmt.Sprintf("%s is not writable: %v", dir, err))
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "f"), []byte("x"), 0o600); err != nil {
		return notSupported(fmt.Sprintf("cannot create files under %s: %v", dir, err))
	}
	if err := os.Rename(filepath.Join(tmp, "f"), filepath.Join(tmp, "g")); err != nil {
		return notSupported(fmt.Sprintf("cannot rename under %s: %v", dir, err))
	}
	return nil
}

func notSupported(reason string) error {
	return driver.Wrap("probe", "", fmt.Errorf("vfs: %w: %s", driver.ErrNotSupported, reason))
}

// nearestDir returns root if it exists, else its nearest existing
// ancestor, which must be a directory.
func nearestDir(root string) (string, error) {
	p, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return "", fmt.Errorf("%s is not a directory", p)
			}
			return p, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", err
		}
		p = parent
	}
}

// backingFS names the filesystem dir lives on.
func backingFS(dir string) string {
	name, err := fsutil.BackingFS(dir)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return name
}

// probeReflink finds out once per driver whether files under dir can be
// cloned, by cloning a one-byte file: the answer goes into Status and
// decides whether copymode=reflink is possible.
func probeReflink(dir string) (bool, error) {
	tmp, err := os.MkdirTemp(dir, ".reflink-probe-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	a, err := os.Create(filepath.Join(tmp, "a"))
	if err != nil {
		return false, err
	}
	defer a.Close()
	if _, err := a.WriteString("x"); err != nil {
		return false, err
	}
	b, err := os.Create(filepath.Join(tmp, "b"))
	if err != nil {
		return false, err
	}
	defer b.Close()
	if err := unix.IoctlFileClone(int(b.Fd()), int(a.Fd())); err != nil {
		return false, fmt.Errorf("FICLONE: %w", err)
	}
	return true, nil
}
