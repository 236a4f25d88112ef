// Package drivers chooses a storage backend for a root directory and opens
// it. It is the one place that knows the list of backends: the backends do
// not register themselves (no init, no global registry), so the list, its
// order and the constructors are visible here and cannot change at run time.
//
// A root holds one directory per backend, named after it (like
// /var/lib/docker/overlay2): backend NAME keeps its layers in <root>/NAME.
// A non-empty <root>/NAME is "state on disk" for NAME.
package drivers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers/btrfs"
	"github.com/stratafs/strata/drivers/overlay2"
	"github.com/stratafs/strata/drivers/vfs"
)

// Options choose and configure a backend.
type Options struct {
	// Driver names the backend; "" lets Open choose (see Probe).
	Driver string
	// BackendOptions are "key=value" strings for the chosen backend's
	// ParseOptions. With Driver == "" they go to whichever backend is
	// chosen, so they only make sense together with a name or on a root
	// whose backend is known.
	BackendOptions []string
}

// backend is one entry of the fixed list.
type backend struct {
	name string
	// probe reports whether the backend can work on dir (<root>/name); nil
	// means usable, otherwise an error saying why not.
	probe func(ctx context.Context, dir string) error
	// parse validates "key=value" options without opening anything.
	parse func(kv []string) error
	open  func(ctx context.Context, dir string, kv []string) (driver.Driver, error)
}

// backends returns the backends in priority order: the order Open tries
// them in when no name is given and no state is on disk. overlay2 first
// (fast create, page cache shared between layers), btrfs next (its Probe
// passes only when the root is on btrfs, where snapshots beat copies), vfs
// last because it works everywhere but copies the whole parent on Create.
// A function rather than a package variable so that nothing can change it.
func backends() []backend {
	return []backend{
		{
			name:  "overlay2",
			probe: overlay2.Probe,
			parse: func(kv []string) error { _, err := overlay2.ParseOptions(kv); return err },
			open: func(ctx context.Context, dir string, kv []string) (driver.Driver, error) {
				o, err := overlay2.ParseOptions(kv)
				if err != nil {
					return nil, err
				}
				return overlay2.New(ctx, dir, o)
			},
		},
		{
			name:  "btrfs",
			probe: btrfs.Probe,
			parse: func(kv []string) error { _, err := btrfs.ParseOptions(kv); return err },
			open: func(ctx context.Context, dir string, kv []string) (driver.Driver, error) {
				o, err := btrfs.ParseOptions(kv)
				if err != nil {
					return nil, err
				}
				return btrfs.New(ctx, dir, o)
			},
		},
		{
			name:  "vfs",
			probe: vfs.Probe,
			parse: func(kv []string) error { _, err := vfs.ParseOptions(kv); return err },
			open: func(ctx context.Context, dir string, kv []string) (driver.Driver, error) {
				o, err := vfs.ParseOptions(kv)
				if err != nil {
					return nil, err
				}
				return vfs.New(ctx, dir, o)
			},
		},
	}
}

// Names returns the backends built into this version, in priority order.
func Names() []string {
	bs := backends()
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.name
	}
	return out
}

func lookup(name string) (backend, error) {
	for _, b := range backends() {
		if b.name == name {
			return b, nil
		}
	}
	return backend{}, fmt.Errorf("unknown driver %q (known: %s)", name, strings.Join(Names(), ", "))
}

// ValidateOptions checks opts without touching the disk: the name must be
// a known backend and its options must parse. Unknown keys and bad values
// are errors.
func ValidateOptions(opts Options) error {
	if opts.Driver == "" {
		return nil // checked by Open once it has chosen a backend
	}
	b, err := lookup(opts.Driver)
	if err != nil {
		return err
	}
	if err := b.parse(opts.BackendOptions); err != nil {
		return fmt.Errorf("%s options: %w", b.name, err)
	}
	return nil
}

// Dir is the directory backend name keeps its layers in under root.
func Dir(root, name string) string { return filepath.Join(root, name) }

// Open opens a backend on root. With opts.Driver set it opens that backend
// or fails with the reason it cannot work here; it never falls back to
// another one. With no name it picks the backend Probe marks as chosen.
func Open(ctx context.Context, root string, opts Options) (driver.Driver, error) {
	if root == "" {
		return nil, errors.New("open: empty root")
	}
	// Bad options fail before anything is created on disk.
	if err := ValidateOptions(opts); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	name := opts.Driver
	if name == "" {
		c := choose(ctx, root, backends())
		if c.err != nil {
			return nil, c.err
		}
		name = c.verdicts[c.chosen].Name
	}
	b, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if err := b.parse(opts.BackendOptions); err != nil {
		return nil, fmt.Errorf("%s options: %w", b.name, err)
	}
	dir := Dir(root, b.name)
	if opts.Driver != "" {
		if err := b.probe(ctx, dir); err != nil {
			return nil, fmt.Errorf("driver %s cannot be used on %s: %w", b.name, root, notSupported(err))
		}
	}
	d, err := b.open(ctx, dir, opts.BackendOptions)
	if err != nil {
		return nil, fmt.Errorf("open %s on %s: %w", b.name, root, err)
	}
	return d, nil
}

// notSupported makes sure a probe failure can be tested with
// errors.Is(err, driver.ErrNotSupported) even if a backend forgot to wrap it.
func notSupported(err error) error {
	if errors.Is(err, driver.ErrNotSupported) {
		return err
	}
	return fmt.Errorf("%w: %w", driver.ErrNotSupported, err)
}
