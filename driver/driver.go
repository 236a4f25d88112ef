// Package driver defines the interface every strata storage backend
// implements, its errors and options, and the helpers backends share.
//
// # Terms
//
// A layer is a filesystem tree with an ID and at most one parent. A layer
// without a parent is a base layer. Read-only layers stack into an image; a
// writable layer (CreateOpts.Writable) is a container's scratch space on top
// of one. The parent is fixed when the layer is created.
//
// # Importing an image
//
//	d.Create(ctx, "base", "", nil)          // empty layer
//	d.ApplyDiff(ctx, "base", tarStream)     // fill it from an OCI layer tar
//	d.Create(ctx, "pkgs", "base", nil)      // child starts as a view of its parent
//	d.ApplyDiff(ctx, "pkgs", tarStream2)    // deletions arrive as .wh. entries
//
// ApplyDiff on a layer that has children or is mounted fails with
// ErrHasChildren or ErrLayerInUse: a layer's content changes only while
// nothing else depends on it. A layer whose ApplyDiff was interrupted by a
// crash is removed the next time the driver is opened, so a layer that
// exists after a restart is always whole.
//
// # Running a container
//
//	d.Create(ctx, "ctr", "pkgs", &driver.CreateOpts{Writable: true})
//	dir, _ := d.Get(ctx, "ctr", nil)        // mount; refcounted
//	... the container writes under dir ...
//	d.Put(ctx, "ctr")                       // unmount when the count drops to 0
//	rc, _ := d.Diff(ctx, "ctr")             // its changes as an OCI layer tar
//	d.Remove(ctx, "ctr")
//
// Get may be called many times; each needs one Put. A Put without a
// matching Get returns an error and changes nothing.
// Remove of a mounted layer fails with ErrLayerInUse; Remove of a layer with
// children fails with ErrHasChildren. Close releases what the driver holds
// (it unmounts layers still mounted); calling Close twice is fine, and every
// other method returns ErrClosed after it.
//
// # Errors
//
// Every error is a *LayerError carrying the operation and the layer ID, and
// wraps one of the sentinels in errors.go where one applies. Bad input
// (invalid IDs, missing parents, hostile tars) changes nothing on disk.
//
// # Concurrency
//
// Every method is safe for concurrent use. Operations on different layers do
// not wait for each other except where one is the other's parent.
package driver

import (
	"context"
	"io"

	"github.com/stratafs/strata/archive"
)

// Driver stores layers on disk. See the package documentation for the
// lifecycle.
type Driver interface {
	// Name is the backend's name ("overlay2", "vfs", "btrfs", ...).
	Name() string
	// Create makes a new empty layer on top of parent ("" for a base layer).
	Create(ctx context.Context, id, parent string, opts *CreateOpts) error
	// Remove deletes a layer that has no children and is not mounted.
	Remove(ctx context.Context, id string) error
	// Exists reports whether a complete layer with that ID exists.
	Exists(id string) bool
	// Get mounts the layer (if the backend needs to) and returns the path
	// of its whole view: its own changes over all its ancestors.
	Get(ctx context.Context, id string, opts *MountOpts) (string, error)
	// Put releases one Get.
	Put(ctx context.Context, id string) error
	// Diff streams the layer's changes against its parent as an OCI layer
	// tar (uncompressed). The caller closes the stream.
	Diff(ctx context.Context, id string) (io.ReadCloser, error)
	// Changes lists the paths that differ between the layer and its parent.
	Changes(ctx context.Context, id string) ([]Change, error)
	// ApplyDiff unpacks an OCI layer tar (plain, gzip or zstd) onto the
	// layer and returns the number of content bytes it unpacked.
	ApplyDiff(ctx context.Context, id string, tar io.Reader) (int64, error)
	// DiffSize is the size of the layer's own changes. It is read from a
	// record or from the backend's own accounting, never by walking the
	// parent's tree.
	DiffSize(ctx context.Context, id string) (int64, error)
	// Status describes the backend on this root for people and programs.
	Status(ctx context.Context) Status
	// Close releases the driver. Calling it twice is fine.
	Close() error
}

// Change is one path that differs between a layer and its parent.
type Change = archive.Change

// CreateOpts are the options of Create. A nil *CreateOpts means the zero value.
type CreateOpts struct {
	// Writable marks a container layer: it may be mounted read-write.
	Writable bool
	// SizeLimit, if non-zero, limits the layer in bytes. A backend that
	// cannot enforce it on this host fails Create with ErrNotSupported;
	// the Quota capability says what the limit counts.
	SizeLimit int64
	// Labels are stored with the layer and returned by Lister.
	Labels map[string]string
}

// MountOpts are the options of Get. A nil *MountOpts means the zero value.
type MountOpts struct {
	// ReadOnly mounts a writable layer read-only.
	ReadOnly bool
	// Volatile skips all syncs for this mount (overlayfs "volatile"): for
	// throwaway containers. After a crash such a layer is discarded.
	// Backends that cannot honour it fail Get with ErrNotSupported.
	Volatile bool
	// MountLabel is an SELinux context for the mount, if the host uses one.
	MountLabel string
}

// Status describes a driver on a root.
type Status struct {
	Driver     string // backend name
	Root       string // root directory
	BackingFS  string // filesystem the root lives on ("ext4", "btrfs", ...)
	Layers     int    // number of complete layers
	NativeDiff bool   // Diff/Changes read only the layer's own changes
	// Info holds backend-specific facts in display order.
	Info []KV
}

// KV is one line of Status.Info.
type KV struct {
	Key, Value string
}

// Get returns the value of key in s.Info, or "".
func (s Status) Get(key string) string {
	for _, kv := range s.Info {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}
