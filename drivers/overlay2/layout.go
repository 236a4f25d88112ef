package overlay2

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stratafs/strata/internal/fsutil"
)

// On-disk layout under the driver's root:
//
//	records/<id>.json      the layer record (internal/store); a layer exists iff it does
//	layers/<id>/diff/      the layer's own files, whiteouts the overlay way
//	layers/<id>/work/      overlay's work dir (same filesystem as diff/)
//	layers/<id>/merged/    the mount point Get returns
//	layers/<id>/link       the layer's short name (see l/)
//	layers/<id>/lower      its ancestors' short names, nearest first: "l/A:l/B"
//	layers/<id>/volatile   present while the layer's data may be unsynced
//	                       because it was mounted "volatile" (holds the boot ID)
//	l/<short>              symlink to ../layers/<id>/diff
//	empty/                 an empty lower dir for layers with no parent
//
// The short names exist so that a mount's option string fits in one page
// for long chains (moby's l/ links): "l/" plus 26 characters per layer
// instead of the full path.
const (
	recordsDir  = "records"
	layersDir   = "layers"
	linksDir    = "l"
	emptyDir    = "empty"
	checkPrefix = ".check-"

	linkFile     = "link"
	lowerFile    = "lower"
	volatileFile = "volatile"

	// extraLink is the record's Extra key for the short name.
	extraLink = "link"

	// maxLowers is the kernel's limit on lower layers (OVL_MAX_STACK).
	maxLowers = 500
)

func (d *Driver) layerDir(id string) string  { return filepath.Join(d.root, layersDir, id) }
func (d *Driver) diffDir(id string) string   { return filepath.Join(d.root, layersDir, id, "diff") }
func (d *Driver) workDir(id string) string   { return filepath.Join(d.root, layersDir, id, "work") }
func (d *Driver) mergedDir(id string) string { return filepath.Join(d.root, layersDir, id, "merged") }

// linkPath is a short name's path relative to the root.
func linkPath(short string) string { return linksDir + "/" + short }

// newShortName returns 26 random base32 characters (130 bits): enough
// never to collide, short enough for ~130 layers per page.
func newShortName() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return strings.TrimRight(base32.StdEncoding.EncodeToString(b[:]), "=")[:26], nil
}

// makeRootDirs creates the fixed directories of a root.
func makeRootDirs(root string) error {
	for _, d := range []string{root, filepath.Join(root, recordsDir), filepath.Join(root, layersDir),
		filepath.Join(root, linksDir), filepath.Join(root, emptyDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(root, emptyDir), 0o755)
}

// buildLayerDir lays out a new layer's directory and its short link, and
// syncs them. It does not publish the layer: the record does that.
func (d *Driver) buildLayerDir(id, short string, lowers []string) error {
	dir := d.layerDir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	for _, sub := range []string{"diff", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, linkFile), []byte(short), 0o600); err != nil {
		return err
	}
	if len(lowers) > 0 {
		if err := os.WriteFile(filepath.Join(dir, lowerFile), []byte(strings.Join(lowers, ":")), 0o600); err != nil {
			return err
		}
	}
	link := filepath.Join(d.root, linksDir, short)
	if err := os.Symlink(filepath.Join("..", layersDir, id, "diff"), link); err != nil {
		return err
	}
	for _, p := range []string{filepath.Join(dir, "diff"), dir, filepath.Join(d.root, layersDir), filepath.Join(d.root, linksDir)} {
		if err := fsutil.SyncDir(p); err != nil {
			return err
		}
	}
	return nil
}

// removeLayerData removes what buildLayerDir made (the record is already
// gone). It is also the sweep's remover.
func (d *Driver) removeLayerData(id string) error {
	dir := d.layerDir(id)
	if b, err := os.ReadFile(filepath.Join(dir, linkFile)); err == nil && validShort(string(b)) {
		if err := os.Remove(filepath.Join(d.root, linksDir, string(b))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

func validShort(s string) bool {
	if len(s) != 26 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// sweepLinks removes short links whose layer is gone (a crash between
// creating the link and publishing the record, or during Remove).
func (d *Driver) sweepLinks() ([]string, error) {
	dir := filepath.Join(d.root, linksDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, err
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}
