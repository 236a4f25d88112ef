package driver

import (
	"context"
	"time"
)

// Optional capabilities. A backend implements those it can; callers find
// them by type assertion, and decorators (metrics.Instrument) forward them.

// LayerInfo is what a driver records about a layer.
type LayerInfo struct {
	ID       string
	Parent   string
	Writable bool
	// Size is the layer's own data in bytes as last recorded (see DiffSize).
	Size    int64
	Created time.Time
	Labels  map[string]string
}

// Lister lists the complete layers of a driver, sorted by ID.
type Lister interface {
	Layers(ctx context.Context) ([]LayerInfo, error)
}

// CopyUpStats counts what a writable layer holds of its own. Copied* are
// files that also exist below it (copied up whole by overlay, or whose
// blocks were rewritten on btrfs/zfs/devmapper); New* are files it created.
type CopyUpStats struct {
	CopiedFiles int64
	CopiedBytes int64
	NewFiles    int64
	NewBytes    int64
}

// CopyUpReporter reports how much data copy-on-write copied into a layer.
// It must be cheap enough to call on every metrics scrape.
type CopyUpReporter interface {
	CopyUp(ctx context.Context, id string) (CopyUpStats, error)
}

// QuotaScope says what a size limit counts.
type QuotaScope int

const (
	// QuotaLayerData limits the layer's own data (overlay on project
	// quota, btrfs exclusive qgroup, zfs quota).
	QuotaLayerData QuotaScope = iota + 1
	// QuotaWholeView limits the whole view, parent data included
	// (devmapper's device size).
	QuotaWholeView
)

func (s QuotaScope) String() string {
	switch s {
	case QuotaLayerData:
		return "layer-data"
	case QuotaWholeView:
		return "whole-view"
	}
	return "none"
}

// QuotaUsage is a layer's size limit and what it has used of it.
type QuotaUsage struct {
	Limit int64 // 0: no limit set
	Used  int64
	Scope QuotaScope
}

// Quota is implemented by backends that can enforce CreateOpts.SizeLimit.
type Quota interface {
	// QuotaScope says what limits count. It returns an error wrapping
	// ErrNotSupported, with the reason, when this host cannot enforce them;
	// Create with a SizeLimit then fails the same way.
	QuotaScope() (QuotaScope, error)
	// QuotaUsage reports a layer's limit and usage.
	QuotaUsage(ctx context.Context, id string) (QuotaUsage, error)
}
