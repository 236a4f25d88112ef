package overlay2

import (
	"fmt"
	"strconv"
	"strings"
)

// MountAPI chooses how layers are mounted.
type MountAPI string

const (
	// MountAPIAuto uses mount(2) when the options fit in one page and the
	// new mount API (fsconfig "lowerdir+") beyond it, falling back to
	// relative paths from a private working directory on older kernels.
	MountAPIAuto MountAPI = "auto"
	// MountAPILegacy never uses the new mount API (the path older kernels
	// take); chains then stop where the option page is full.
	MountAPILegacy MountAPI = "legacy"
	// MountAPIFsconfig always uses the new mount API.
	MountAPIFsconfig MountAPI = "fsconfig"
)

// Options configure the overlay2 backend. The zero value is the default.
type Options struct {
	// MountAPI: see the constants ("" means auto).
	MountAPI MountAPI
	// ForceNaiveDiff computes Diff/Changes by comparing mounted views even
	// where the native diff would be correct.
	ForceNaiveDiff bool
	// MountOpts are extra overlay mount options appended to every mount
	// (e.g. "metacopy=on"). Options that make the upper dir describe
	// changes indirectly (redirect_dir, metacopy) switch to the naive diff.
	MountOpts []string
	// SkipMountCheck skips the real test mount in New (Probe still does
	// it); for callers that just probed.
	SkipMountCheck bool
}

// ParseOptions reads "key=value" options, as given on a command line:
//
//	mountapi=auto|legacy|fsconfig
//	naivediff=true|false
//	mountopt=opt[,opt...]        (may repeat)
//	skip_mount_check=true|false
//
// Keys may carry an "overlay2." prefix. Unknown keys and bad values fail.
func ParseOptions(kv []string) (Options, error) {
	var o Options
	for _, s := range kv {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return Options{}, fmt.Errorf("overlay2: option %q: want key=value", s)
		}
		k = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(k), "overlay2."))
		v = strings.TrimSpace(v)
		switch k {
		case "mountapi", "mount_api":
			switch MountAPI(v) {
			case MountAPIAuto, MountAPILegacy, MountAPIFsconfig:
				o.MountAPI = MountAPI(v)
			default:
				return Options{}, fmt.Errorf("overlay2: option %s=%q: want auto, legacy or fsconfig", k, v)
			}
		case "naivediff", "naive_diff":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Options{}, fmt.Errorf("overlay2: option %s=%q: want true or false", k, v)
			}
			o.ForceNaiveDiff = b
		case "skip_mount_check":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Options{}, fmt.Errorf("overlay2: option %s=%q: want true or false", k, v)
			}
			o.SkipMountCheck = b
		case "mountopt", "mount_opt":
			for _, m := range strings.Split(v, ",") {
				if m = strings.TrimSpace(m); m != "" {
					if err := checkMountOpt(m); err != nil {
						return Options{}, err
					}
					o.MountOpts = append(o.MountOpts, m)
				}
			}
		default:
			return Options{}, fmt.Errorf("overlay2: unknown option %q (known: mountapi, naivediff, mountopt, skip_mount_check)", k)
		}
	}
	return o, nil
}

// checkMountOpt refuses options the driver sets itself: letting a user
// override the layer directories would mount something else than the layer.
func checkMountOpt(m string) error {
	k, _, _ := strings.Cut(m, "=")
	switch k {
	case "lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+", "volatile", "ro", "rw":
		return fmt.Errorf("overlay2: mount option %q is set by the driver and cannot be given", m)
	}
	return nil
}

func (o Options) validate() error {
	switch o.MountAPI {
	case "", MountAPIAuto, MountAPILegacy, MountAPIFsconfig:
	default:
		return fmt.Errorf("overlay2: MountAPI %q: want auto, legacy or fsconfig", o.MountAPI)
	}
	for _, m := range o.MountOpts {
		if err := checkMountOpt(m); err != nil {
			return err
		}
	}
	return nil
}
