package drivers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Verdict is what Probe found out about one backend on a root.
type Verdict struct {
	Name string `json:"name"`
	// Usable: the backend's own checks pass on this root.
	Usable bool `json:"usable"`
	// Reason always says why: what failed, or why the backend was or was
	// not chosen although usable.
	Reason string `json:"reason"`
	// Chosen marks the backend Open picks when no name is given. At most
	// one verdict is chosen; none is when the choice fails (see Open).
	Chosen bool `json:"chosen"`
	// State: the root already holds this backend's layers.
	State bool `json:"state"`
}

// Probe returns a verdict for every backend built in, in priority order.
// It makes no layers; backends may create their own directory under root
// and make test mounts in scratch space there. The answer depends only on
// the host and on what is on disk, so it is the same on every call.
func Probe(ctx context.Context, root string) []Verdict {
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	return choose(ctx, root, backends()).verdicts
}

type choice struct {
	verdicts []Verdict
	chosen   int   // index into verdicts, -1 if none
	err      error // why nothing could be chosen
}

// choose applies the rules: existing state on disk wins; with state from
// two backends nothing is chosen (guessing would hide one set of layers);
// otherwise the first usable backend in priority order.
func choose(ctx context.Context, root string, bs []backend) choice {
	order := make([]string, len(bs))
	for i, b := range bs {
		order[i] = b.name
	}
	c := choice{verdicts: make([]Verdict, len(bs)), chosen: -1}
	var withState []int
	for i, b := range bs {
		v := Verdict{Name: b.name}
		dir := Dir(root, b.name)
		if err := ctx.Err(); err != nil {
			v.Reason = "probe cancelled: " + err.Error()
		} else if err := b.probe(ctx, dir); err != nil {
			v.Reason = oneLine(err)
		} else {
			v.Usable = true
		}
		st, err := hasState(dir)
		if err != nil {
			v.Usable = false
			v.Reason = "cannot read " + dir + ": " + oneLine(err)
		}
		v.State = st
		if st {
			withState = append(withState, i)
		}
		c.verdicts[i] = v
	}

	switch {
	case len(withState) > 1:
		names := make([]string, len(withState))
		for j, i := range withState {
			names[j] = c.verdicts[i].Name
		}
		c.err = fmt.Errorf("root %s holds layers of %d backends (%s): name one with --driver", root, len(names), strings.Join(names, ", "))
		for _, i := range withState {
			c.verdicts[i].Reason = join(c.verdicts[i].Reason, "has layers here, but so do "+strings.Join(others(names, c.verdicts[i].Name), ", ")+": not chosen without a name")
		}
	case len(withState) == 1:
		i := withState[0]
		v := &c.verdicts[i]
		if !v.Usable {
			// The layers are there but the backend cannot open them;
			// picking another backend would show an empty root.
			c.err = fmt.Errorf("root %s holds %s layers but %s cannot be used here: %s", root, v.Name, v.Name, v.Reason)
			v.Reason = "has layers here but unusable: " + v.Reason
		} else {
			c.chosen = i
			v.Chosen = true
			v.Reason = "usable; chosen: this root already holds its layers"
		}
	default:
		for i := range c.verdicts {
			if c.verdicts[i].Usable {
				c.chosen = i
				c.verdicts[i].Chosen = true
				c.verdicts[i].Reason = fmt.Sprintf("usable; chosen: first usable in priority order (%s)", strings.Join(order, ", "))
				break
			}
		}
		if c.chosen < 0 {
			c.err = fmt.Errorf("no backend is usable on %s", root)
		}
	}
	for i := range c.verdicts {
		v := &c.verdicts[i]
		if v.Usable && !v.Chosen && v.Reason == "" {
			switch {
			case c.chosen >= 0 && len(withState) == 1:
				v.Reason = "usable; not chosen: root holds " + c.verdicts[c.chosen].Name + " layers"
			case c.chosen >= 0:
				v.Reason = "usable; not chosen: " + c.verdicts[c.chosen].Name + " comes first"
			default:
				v.Reason = "usable; not chosen"
			}
		}
	}
	return c
}

// hasState reports whether dir holds layer records. Every backend keeps
// its records with internal/store (one NAME.json per layer) in one
// subdirectory of its dir, next to the layer data, so "a record in a
// subdirectory" means state without drivers knowing each backend's layout.
// Empty layout directories that New or Probe made do not count: opening a
// backend once must not pin a root to it.
func hasState(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s is not a directory", dir)
	}
	subs, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, s := range subs {
		if !s.IsDir() {
			continue
		}
		ok, err := hasRecord(filepath.Join(dir, s.Name()))
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func hasRecord(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(256)
		for _, e := range ents {
			n := e.Name()
			if e.Type().IsRegular() && strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
				return true, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

func oneLine(err error) string {
	s := strings.TrimSpace(err.Error())
	return strings.Join(strings.Fields(s), " ")
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func others(names []string, not string) []string {
	var out []string
	for _, n := range names {
		if n != not {
			out = append(out, n)
		}
	}
	return out
}
