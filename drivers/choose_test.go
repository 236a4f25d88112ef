package drivers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/driver"
)

// These tests run the choosing rules on stand-in backends, so every rule
// is checked whatever this host supports; open_test.go runs the real ones.

func fake(name string, usable bool) backend {
	return backend{
		name: name,
		probe: func(ctx context.Context, dir string) error {
			if usable {
				return nil
			}
			return fmt.Errorf("%s: %w: no %s here", name, driver.ErrNotSupported, name)
		},
	}
}

func tempRoot(t *testing.T) string {
	t.Helper()
	// /var/tmp: disk-backed like a real root (/tmp is tmpfs here).
	dir, err := os.MkdirTemp("/var/tmp", "strata-drivers-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// addState puts a layer record where a backend's store would keep it.
func addState(t *testing.T, root, name string) {
	t.Helper()
	dir := filepath.Join(root, name, "records")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "l1.json"), []byte(`{"id":"l1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
}

func chosenName(c choice) string {
	if c.chosen < 0 {
		return ""
	}
	return c.verdicts[c.chosen].Name
}

func checkVerdicts(t *testing.T, c choice, names ...string) {
	t.Helper()
	if len(c.verdicts) != len(names) {
		t.Fatalf("got %d verdicts, want %d", len(c.verdicts), len(names))
	}
	nChosen := 0
	for i, v := range c.verdicts {
		if v.Name != names[i] {
			t.Errorf("verdict %d is %s, want %s (priority order)", i, v.Name, names[i])
		}
		if strings.TrimSpace(v.Reason) == "" {
			t.Errorf("verdict for %s has no reason: %+v", v.Name, v)
		}
		if v.Chosen {
			nChosen++
			if !v.Usable {
				t.Errorf("%s chosen but unusable", v.Name)
			}
		}
	}
	if nChosen > 1 {
		t.Errorf("%d backends chosen", nChosen)
	}
}

func TestChoosePriorityOrder(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		usable []bool
		want   string
	}{
		{[]bool{true, true, true}, "a"},
		{[]bool{false, true, true}, "b"},
		{[]bool{false, false, true}, "c"},
		{[]bool{true, false, true}, "a"},
		{[]bool{false, false, false}, ""},
	} {
		root := tempRoot(t)
		bs := []backend{fake("a", tc.usable[0]), fake("b", tc.usable[1]), fake("c", tc.usable[2])}
		c := choose(ctx, root, bs)
		checkVerdicts(t, c, "a", "b", "c")
		if got := chosenName(c); got != tc.want {
			t.Errorf("usable %v: chose %q, want %q", tc.usable, got, tc.want)
		}
		if (tc.want == "") != (c.err != nil) {
			t.Errorf("usable %v: err %v", tc.usable, c.err)
		}
		for i, v := range c.verdicts {
			if !tc.usable[i] && !strings.Contains(v.Reason, "no "+v.Name+" here") {
				t.Errorf("unusable %s: reason %q does not carry the probe's reason", v.Name, v.Reason)
			}
		}
	}
}

func TestChooseStateOnDiskWins(t *testing.T) {
	root := tempRoot(t)
	addState(t, root, "c")
	// Empty layout directories of a higher-priority backend are no state.
	if err := os.MkdirAll(filepath.Join(root, "a", "records"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := choose(context.Background(), root, []backend{fake("a", true), fake("b", true), fake("c", true)})
	checkVerdicts(t, c, "a", "b", "c")
	if got := chosenName(c); got != "c" || c.err != nil {
		t.Fatalf("chose %q (err %v), want c: its layers are on disk", got, c.err)
	}
	if !c.verdicts[2].State || c.verdicts[0].State {
		t.Errorf("state flags wrong: %+v", c.verdicts)
	}
	if !strings.Contains(c.verdicts[0].Reason, "root holds c layers") {
		t.Errorf("reason for a: %q", c.verdicts[0].Reason)
	}
}

func TestChooseStateOfUnusableBackendFails(t *testing.T) {
	root := tempRoot(t)
	addState(t, root, "b")
	c := choose(context.Background(), root, []backend{fake("a", true), fake("b", false)})
	checkVerdicts(t, c, "a", "b")
	if c.err == nil || chosenName(c) != "" {
		t.Fatalf("chose %q: a root holding b's layers must not fall back to another backend", chosenName(c))
	}
	if !strings.Contains(c.err.Error(), "no b here") {
		t.Errorf("error does not say why b is unusable: %v", c.err)
	}
}

func TestChooseTwoStatesFail(t *testing.T) {
	root := tempRoot(t)
	addState(t, root, "a")
	addState(t, root, "c")
	c := choose(context.Background(), root, []backend{fake("a", true), fake("b", true), fake("c", true)})
	checkVerdicts(t, c, "a", "b", "c")
	if c.err == nil || chosenName(c) != "" {
		t.Fatalf("chose %q with state of two backends on disk", chosenName(c))
	}
	if msg := c.err.Error(); !strings.Contains(msg, "a, c") || !strings.Contains(msg, "--driver") {
		t.Errorf("error should list both backends and the way out: %v", c.err)
	}
}

func TestChooseCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := choose(ctx, tempRoot(t), []backend{fake("a", true)})
	checkVerdicts(t, c, "a")
	if c.err == nil {
		t.Fatal("a cancelled probe chose a backend")
	}
}

func TestHasStateNotADirectory(t *testing.T) {
	root := tempRoot(t)
	if err := os.WriteFile(filepath.Join(root, "a"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := choose(context.Background(), root, []backend{fake("a", true), fake("b", true)})
	if c.verdicts[0].Usable || chosenName(c) != "b" {
		t.Fatalf("a file where a's directory belongs: %+v", c.verdicts)
	}
	if !errors.Is(notSupported(errors.New("x")), driver.ErrNotSupported) {
		t.Fatal("notSupported does not wrap ErrNotSupported")
	}
}
