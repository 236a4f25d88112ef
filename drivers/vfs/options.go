package vfs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/stratafs/strata/internal/fsutil"
)

// CopyMode says how Create copies the parent's files into a new layer.
type CopyMode string

const (
	// CopyAuto clones files (FICLONE) where the filesystem can (btrfs, xfs
	// with reflink), else copies them in the kernel (copy_file_range), else
	// reads and writes. The zero Options mean CopyAuto.
	CopyAuto CopyMode = "auto"
	// CopyReflink requires cloning: New fails with ErrNotSupported on a
	// filesystem that cannot, instead of silently making full copies.
	CopyReflink CopyMode = "reflink"
	// CopyPlain always reads and writes, so that no layer shares a block
	// with another (copy_file_range is left out: it may clone too).
	CopyPlain CopyMode = "copy"
)

// Options configure a vfs driver. The zero value is the default.
type Options struct {
	// CopyMode: "" means CopyAuto.
	CopyMode CopyMode
}

// ParseOptions reads "key=value" options. Keys may carry a "vfs." prefix
// (as drivers.Open passes them); keys are case-insensitive. Known keys:
//
//	copymode=auto|reflink|copy
//
// Every unknown key or bad value is reported, not only the first.
func ParseOptions(kv []string) (Options, error) {
	var o Options
	var errs []error
	for _, s := range kv {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("vfs option %q: want key=value", s))
			continue
		}
		key := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(k)), "vfs.")
		v = strings.TrimSpace(v)
		switch key {
		case "copymode", "copy_mode", "copy-mode":
			m := CopyMode(strings.ToLower(v))
			if _, err := m.fsutil(); err != nil {
				errs = append(errs, fmt.Errorf("vfs option %q: %w", s, err))
				continue
			}
			o.CopyMode = m
		default:
			errs = append(errs, fmt.Errorf("vfs option %q: unknown key %q (known: copymode)", s, k))
		}
	}
	return o, errors.Join(errs...)
}

func (m CopyMode) fsutil() (fsutil.CopyMode, error) {
	switch m {
	case "", CopyAuto:
		return fsutil.CopyAuto, nil
	case CopyReflink:
		return fsutil.CopyReflink, nil
	case CopyPlain:
		return fsutil.CopyPlain, nil
	}
	return 0, fmt.Errorf("copy mode %q: want auto, reflink or copy", string(m))
}
