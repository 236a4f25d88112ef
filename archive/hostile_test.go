package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	lg "github.com/stratafs/strata/internal/layergen"
)

// applyHostile applies c onto <sandbox>/root and reports every way it got
// out: a listed escape path that exists, a victim changed, anything new
// in the sandbox next to the root, a new link to /etc/passwd.
func applyHostile(t *testing.T, c lg.Case, opts ApplyOptions) (bad []string, err error) {
	sb, root := target(t)
	for _, v := range c.Victims {
		must(t, os.WriteFile(filepath.Join(sb, v), []byte(lg.VictimContent), 0o644))
	}
	passwd := nlink("/etc/passwd")
	_, err = Apply(context.Background(), root, bytes.NewReader(c.Tar), opts)
	for _, e := range c.Escapes {
		p := e
		if !filepath.IsAbs(e) {
			p = filepath.Join(sb, e)
		}
		if exists(p) {
			bad = append(bad, "escape exists: "+p)
			if filepath.IsAbs(e) {
				os.RemoveAll(p)
			}
		}
	}
	for _, v := range c.Victims {
		b, err := os.ReadFile(filepath.Join(sb, v))
		if err != nil || string(b) != lg.VictimContent || nlink(filepath.Join(sb, v)) != 1 {
			bad = append(bad, "victim changed: "+v)
		}
	}
	ents, _ := os.ReadDir(sb)
	for _, e := range ents {
		if e.Name() != "root" && !slices.Contains(c.Victims, e.Name()) {
			bad = append(bad, "written next to the root: "+e.Name())
		}
	}
	if nlink("/etc/passwd") != passwd {
		bad = append(bad, "/etc/passwd link count changed")
	}
	return bad, err
}

func nlink(p string) uint64 {
	fi, err := os.Lstat(p)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Nlink
}

func TestApplyHostile(t *testing.T) {
	requireRoot(t)
	for _, c := range lg.Hostile() {
		for _, f := range []WhiteoutFormat{OCIWhiteouts, OverlayWhiteouts} {
			t.Run(c.Name+"/"+f.String(), func(t *testing.T) {
				bad, err := applyHostile(t, c, ApplyOptions{Whiteouts: f})
				for _, b := range bad {
					t.Error(b)
				}
				if c.WantErr != (err != nil) {
					t.Fatalf("WantErr %v, got %v", c.WantErr, err)
				}
				if err == nil {
					return
				}
				// A clear error: it names the entry, or says which header
				// could not be read, and has a class callers can test.
				var ee *EntryError
				if !errors.As(err, &ee) && !strings.Contains(err.Error(), "header") {
					t.Errorf("error does not name the entry: %v", err)
				}
				if !errors.Is(err, ErrUnsafePath) && !errors.Is(err, ErrInvalidTar) && ee == nil {
					t.Errorf("error has no class: %v", err)
				}
				if len(err.Error()) > 600 {
					t.Errorf("error is %d bytes long", len(err.Error()))
				}
				t.Logf("%v", err)
			})
		}
	}
}

// TestApplyAbsoluteSymlinksResolveInRoot: /usr/bin/x -> /bin/x style
// links are followed inside the root, not refused.
func TestApplyAbsoluteSymlinksResolveInRoot(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	apply(t, root, lg.Tar(lg.Dir("usr"), lg.Dir("usr/bin"), lg.Symlink("bin", "/usr/bin"), lg.File("bin/sh", "sh")), ApplyOptions{})
	if got := readFile(t, filepath.Join(root, "usr/bin/sh")); got != "sh" {
		t.Errorf("usr/bin/sh = %q", got)
	}
	if _, err := Apply(context.Background(), root, bytes.NewReader(lg.Tar(lg.Hardlink("h", "/bin/sh"))), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if nlink(filepath.Join(root, "usr/bin/sh")) != 2 {
		t.Error("hardlink through an absolute symlink did not land on the file inside")
	}
}

func TestWhiteoutOfRootRefused(t *testing.T) {
	requireRoot(t)
	_, root := target(t)
	must(t, os.WriteFile(filepath.Join(root, "f"), nil, 0o644))
	for _, name := range []string{".wh..", "./.wh..", "a/../.wh.."} {
		_, err := Apply(context.Background(), root, bytes.NewReader(lg.Tar(lg.Entry{Name: name})), ApplyOptions{})
		if !errors.Is(err, ErrUnsafePath) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if !exists(filepath.Join(root, "f")) {
		t.Error("root content removed")
	}
}
