package metrics

import (
	"context"

	"github.com/stratafs/strata/driver"
)

// The capability methods, each on its own type so that wrap can embed
// exactly those the inner driver has.

type lister struct {
	in *instrumented
	l  driver.Lister
}

func (x lister) Layers(ctx context.Context) ([]driver.LayerInfo, error) {
	start := x.in.begin(opLayers)
	ls, err := x.l.Layers(ctx)
	x.in.done(opLayers, start, err)
	return ls, err
}

type copyUpReporter struct {
	in *instrumented
	r  driver.CopyUpReporter
}

func (x copyUpReporter) CopyUp(ctx context.Context, id string) (driver.CopyUpStats, error) {
	start := x.in.begin(opCopyUp)
	st, err := x.r.CopyUp(ctx, id)
	x.in.done(opCopyUp, start, err)
	return st, err
}

type quota struct {
	in *instrumented
	q  driver.Quota
}

func (x quota) QuotaScope() (driver.QuotaScope, error) { return x.q.QuotaScope() }

func (x quota) QuotaUsage(ctx context.Context, id string) (driver.QuotaUsage, error) {
	start := x.in.begin(opQuotaUsed)
	u, err := x.q.QuotaUsage(ctx, id)
	x.in.done(opQuotaUsed, start, err)
	return u, err
}

type (
	withL struct {
		*instrumented
		lister
	}
	withC struct {
		*instrumented
		copyUpReporter
	}
	withQ struct {
		*instrumented
		quota
	}
	withLC struct {
		*instrumented
		lister
		copyUpReporter
	}
	withLQ struct {
		*instrumented
		lister
		quota
	}
	withCQ struct {
		*instrumented
		copyUpReporter
		quota
	}
	withLCQ struct {
		*instrumented
		lister
		copyUpReporter
		quota
	}
)

// wrap returns in dressed with exactly the capabilities d has.
func wrap(in *instrumented, d driver.Driver) driver.Driver {
	l, hasL := d.(driver.Lister)
	c, hasC := d.(driver.CopyUpReporter)
	q, hasQ := d.(driver.Quota)
	xl, xc, xq := lister{in, l}, copyUpReporter{in, c}, quota{in, q}
	switch {
	case hasL && hasC && hasQ:
		return withLCQ{in, xl, xc, xq}
	case hasL && hasC:
		return withLC{in, xl, xc}
	case hasL && hasQ:
		return withLQ{in, xl, xq}
	case hasC && hasQ:
		return withCQ{in, xc, xq}
	case hasL:
		return withL{in, xl}
	case hasC:
		return withC{in, xc}
	case hasQ:
		return withQ{in, xq}
	}
	return in
}
