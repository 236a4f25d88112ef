package btrfs

import (
	"fmt"
	"strconv"
	"strings"
)

// QuotaMode says when and how the driver turns on btrfs quotas.
type QuotaMode string

const (
	// QuotaOnDemand (default) enables qgroup accounting the first time a
	// layer is created with a size limit, and leaves it off until then.
	// Quotas are a property of the whole filesystem: enabling them also
	// charges what else lives on it (see qgroup.go for the cost).
	QuotaOnDemand QuotaMode = "ondemand"
	// QuotaAlways enables it when the driver opens.
	QuotaAlways QuotaMode = "always"
	// QuotaSimple is QuotaOnDemand with simple quotas (Linux 6.7+): extents
	// are charged to the subvolume that wrote them, with no backref walks at
	// commit time, which is cheap and counts exactly a layer's own data.
	QuotaSimple QuotaMode = "simple"
	// QuotaNever refuses size limits: Create with one fails with
	// ErrNotSupported.
	QuotaNever QuotaMode = "never"
)

// Options configure the btrfs driver. The zero value is the default.
type Options struct {
	// Quota is when quotas are enabled ("" means QuotaOnDemand).
	Quota QuotaMode
	// DefaultSizeLimit applies to layers created without their own limit
	// (0: none). Key "size".
	DefaultSizeLimit int64
	// AsyncRemove makes Remove rename the subvolume into the trash and
	// delete it in the background, for roots with big layers where
	// Remove's latency matters; the root then holds trash entries for a
	// while after Remove returns. Key "async_remove".
	AsyncRemove bool
	// NoFastDiff turns off the generation-based diff and always compares
	// the layer with its parent in full. Key "fast_diff=false".
	NoFastDiff bool
}

// ParseOptions parses "key=value" options:
//
//	quota=ondemand|always|simple|never
//	size=10G                (default size limit; K, M, G, T suffixes, powers of 1024)
//	async_remove=true|false
//	fast_diff=true|false
func ParseOptions(kv []string) (Options, error) {
	var o Options
	for _, s := range kv {
		k, v, ok := strings.Cut(s, "=")
		k = strings.TrimSpace(strings.ToLower(k))
		v = strings.TrimSpace(v)
		if !ok || k == "" {
			return Options{}, fmt.Errorf("btrfs: option %q: want key=value", s)
		}
		k = strings.TrimPrefix(k, "btrfs.")
		switch k {
		case "quota":
			switch m := QuotaMode(strings.ToLower(v)); m {
			case QuotaOnDemand, QuotaAlways, QuotaSimple, QuotaNever:
				o.Quota = m
			default:
				return Options{}, fmt.Errorf("btrfs: option quota=%q: want ondemand, always, simple or never", v)
			}
		case "size":
			n, err := parseSize(v)
			if err != nil {
				return Options{}, fmt.Errorf("btrfs: option size=%q: %v", v, err)
			}
			o.DefaultSizeLimit = n
		case "async_remove":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Options{}, fmt.Errorf("btrfs: option async_remove=%q: want true or false", v)
			}
			o.AsyncRemove = b
		case "fast_diff":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Options{}, fmt.Errorf("btrfs: option fast_diff=%q: want true or false", v)
			}
			o.NoFastDiff = !b
		default:
			return Options{}, fmt.Errorf("btrfs: unknown option %q (known: quota, size, async_remove, fast_diff)", k)
		}
	}
	return o, nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a non-negative byte count like 512M or 10G")
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("too large")
	}
	return n * mult, nil
}
