// Package mount reads the mount table and wraps the mount system calls the
// backends and the CLI share: mount(2)/umount2(2), and the new mount API
// (fsopen/fsconfig/fsmount/move_mount) whose per-key configuration lifts
// the one-page limit of mount(2)'s option string.
package mount

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Info is one line of /proc/<pid>/mountinfo (proc(5)).
type Info struct {
	ID, Parent   int
	Major, Minor int
	Root         string // root of the mount within its filesystem
	Mountpoint   string
	Options      string // per-mount options (rw, nosuid, ...)
	Optional     string // optional fields (shared:N, master:N), space-separated
	FSType       string
	Source       string
	SuperOptions string // per-superblock options (lowerdir=..., upperdir=...)
}

// HasOption reports whether the comma-separated per-mount or superblock
// options contain opt exactly (or opt=... when opt ends with "=").
func (i Info) HasOption(opt string) bool {
	for _, list := range []string{i.Options, i.SuperOptions} {
		for _, o := range strings.Split(list, ",") {
			if o == opt || (strings.HasSuffix(opt, "=") && strings.HasPrefix(o, opt)) {
				return true
			}
		}
	}
	return false
}

// Parse reads mountinfo lines from r.
func Parse(r io.Reader) ([]Info, error) {
	var out []Info
	sc := bufio.NewScanner(r)
	// Overlay mounts with hundreds of lower layers make lines far longer
	// than bufio's default token size.
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		in, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, in)
	}
	return out, sc.Err()
}

func parseLine(line string) (Info, error) {
	// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return Info{}, fmt.Errorf("no separator in %q", line)
	}
	f := strings.Fields(pre)
	if len(f) < 6 {
		return Info{}, fmt.Errorf("%d fields before the separator in %q", len(f), line)
	}
	var in Info
	var err error
	if in.ID, err = strconv.Atoi(f[0]); err != nil {
		return Info{}, fmt.Errorf("mount id %q", f[0])
	}
	if in.Parent, err = strconv.Atoi(f[1]); err != nil {
		return Info{}, fmt.Errorf("parent id %q", f[1])
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return Info{}, fmt.Errorf("device %q", f[2])
	}
	if in.Major, err = strconv.Atoi(maj); err != nil {
		return Info{}, fmt.Errorf("device %q", f[2])
	}
	if in.Minor, err = strconv.Atoi(min); err != nil {
		return Info{}, fmt.Errorf("device %q", f[2])
	}
	in.Root = unescape(f[3])
	in.Mountpoint = unescape(f[4])
	in.Options = f[5]
	in.Optional = strings.Join(f[6:], " ")
	g := strings.Fields(post)
	if len(g) < 2 {
		return Info{}, fmt.Errorf("%d fields after the separator in %q", len(g), line)
	}
	in.FSType = g[0]
	in.Source = unescape(g[1])
	if len(g) > 2 {
		in.SuperOptions = g[2]
	}
	return in, nil
}

// unescape undoes the kernel's octal escapes (\040 for space, \011, \012,
// \134) in mountinfo paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Self returns the mount table of the calling process's mount namespace.
func Self() ([]Info, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Under returns the mounts at or below dir, deepest mount point first (the
// order to unmount them in). dir is cleaned but not resolved: pass the
// path the mounts were made with.
func Under(dir string) ([]Info, error) {
	all, err := Self()
	if err != nil {
		return nil, err
	}
	return filterUnder(all, dir), nil
}

func filterUnder(all []Info, dir string) []Info {
	dir = filepath.Clean(dir)
	var out []Info
	for _, in := range all {
		if in.Mountpoint == dir || strings.HasPrefix(in.Mountpoint, dir+"/") || dir == "/" {
			out = append(out, in)
		}
	}
	// Children before parents: longer paths first, later mounts first for
	// the same path (mounts stacked on one point come off top down).
	sort.SliceStable(out, func(a, b int) bool {
		if len(out[a].Mountpoint) != len(out[b].Mountpoint) {
			return len(out[a].Mountpoint) > len(out[b].Mountpoint)
		}
		return out[a].ID > out[b].ID
	})
	return out
}

// Lookup returns the topmost mount whose mount point is exactly path.
func Lookup(path string) (Info, bool, error) {
	all, err := Self()
	if err != nil {
		return Info{}, false, err
	}
	path = filepath.Clean(path)
	var found Info
	ok := false
	for _, in := range all {
		// The table lists mounts in the order they were made, so the last
		// match is the one on top.
		if in.Mountpoint == path {
			found, ok = in, true
		}
	}
	return found, ok, nil
}
