package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/layergen"
)

// The crash cases kill a real process with SIGKILL in the middle of an
// operation and reopen the root, as a restarted daemon would: the
// half-made layer must be gone or whole, complete layers intact, no mount
// leaked, and the ID usable again.

func crashCases() []testCase {
	return []testCase{
		{"CrashDuringApply", testCrashDuringApply},
		{"CrashDuringApplyAnyTime", testCrashDuringApplyAnyTime},
		{"CrashDuringCreate", testCrashDuringCreate},
		{"CrashWhileMounted", testCrashWhileMounted},
		{"CrashDuringRemove", testCrashDuringRemove},
	}
}

// Guards against a hung child; they are never what a case measures.
const (
	childStartTimeout    = 2 * time.Minute
	childProgressTimeout = 5 * time.Minute
)

// closeDriver closes the env's driver, so that a child can own the root.
func (e *env) closeDriver() {
	e.t.Helper()
	if err := e.d.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.d = nil
}

// crash runs job in a child process on the env's root, SIGKILLs it
// `after` the child reports progress, and reopens the driver. It reports
// whether the child finished its operation before the kill. The env's
// driver must be closed.
func (e *env) crash(job childJob, after time.Duration) (finished bool) {
	t := e.t
	t.Helper()
	job.Backend, job.Root = e.b.Name, e.root
	data, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	cmd := exec.Command(exe, "-test.run=^$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(data))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the child: %v", err)
	}
	waited := false
	kill := func() {
		if waited {
			return
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		waited = true
	}
	t.Cleanup(kill)
	lines := readLines(stdout)
	var seen []string
	next := func(timeout time.Duration) (string, bool) {
		select {
		case l, ok := <-lines:
			if ok {
				seen = append(seen, l)
			}
			return l, ok
		case <-time.After(timeout):
			return "", false
		}
	}
	if l, ok := next(childStartTimeout); !ok || l != childHello {
		kill()
		t.Skipf("crash cases need the test binary's TestMain to call conformance.Main (child said %q, stderr: %s)", l, stderr.String())
	}
	for {
		l, ok := next(childProgressTimeout)
		if !ok {
			kill()
			t.Fatalf("child %s %s never reported progress; output %q, stderr:\n%s", job.Op, job.ID, seen, stderr.String())
		}
		if l == childProgress {
			break
		}
		if l == childDone {
			break
		}
	}
	if after > 0 {
		time.Sleep(after)
	}
	kill()
	for l := range lines {
		seen = append(seen, l)
	}
	for _, l := range seen {
		if l == childDone {
			finished = true
		}
	}
	if s := stderr.String(); s != "" {
		t.Logf("child %s %s stderr:\n%s", job.Op, job.ID, s)
	}
	e.d = e.open()
	return finished
}

// rootPaths lists every path under the root with its type.
func (e *env) rootPaths() []string {
	e.t.Helper()
	tr := e.rootState()
	var out []string
	for _, p := range tr.Paths() {
		out = append(out, typeName(tr.Entries[p].Type)+" "+p)
	}
	return out
}

// sameRoot checks that the root holds the same paths as before: crash
// debris (staging dirs, half layers, temp records) must be swept by New,
// and a refused operation must leave nothing behind. Metadata is not
// compared, since using layers legitimately updates it.
func (e *env) sameRoot(what string, before []string) {
	e.t.Helper()
	sameList(e.t, what+": paths under the root differ from before", before, e.rootPaths())
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "file"
	}
	return "special"
}

// bigLayer is a layer with enough files that copying or deleting it takes
// a while, so that a kill can land in the middle.
func bigLayer(t testing.TB, files int) []byte {
	ents := []tarEntry{tDir("big", 0o755)}
	body := strings.Repeat("b", 4096)
	for i := 0; i < files; i++ {
		if i%200 == 0 {
			ents = append(ents, tDir(fmt.Sprintf("big/%03d", i/200), 0o755))
		}
		ents = append(ents, tFile(fmt.Sprintf("big/%03d/f%05d", i/200, i), body, 0o644))
	}
	return buildTar(t, 5, ents...)
}

func testCrashDuringApply(t *testing.T, e *env) {
	base, mid := kitchenSink(t, e.b.Caps), smallLayer(t, "mid", 2)
	e.layer("base", "", base)
	e.layer("mid", "base", mid)
	e.closeDriver()
	before := e.rootPaths()
	e.crash(childJob{Op: "apply", ID: "victim", Parent: "mid"}, 0)
	e.closeDriver()
	e.sameRoot("after a killed ApplyDiff", before)
	e.d = e.open()
	if e.d.Exists("victim") {
		t.Errorf("a layer whose ApplyDiff was killed exists after New")
	}
	if l, ok := e.d.(driver.Lister); ok {
		checkLayers(t, e, l, map[string]string{"base": "", "mid": "base"})
	}
	e.noMounts("after recovery")
	e.sameTree("base after recovery", reference(t, base), e.view("base"))
	e.sameTree("mid after recovery", reference(t, base, mid), e.view("mid"))
	// The ID is free again and works.
	more := smallLayer(t, "victim", 3)
	e.layer("victim", "mid", more)
	e.reopen()
	e.sameTree("victim made again after recovery", reference(t, base, mid, more), e.view("victim"))
}

// Kills at several points of a finite ApplyDiff, up to and past the
// publishing step: the layer is gone, or whole, or still the empty layer
// Create made (the kill came before ApplyDiff began); never part-filled.
func testCrashDuringApplyAnyTime(t *testing.T, e *env) {
	if e.b.Caps.NoDevices {
		t.Skipf("%s cannot store device nodes, which the generated layer has", e.b.Name)
	}
	p := smallLayer(t, "p", 1)
	e.layer("p", "", p)
	var gen bytes.Buffer
	if err := layergen.Base(&gen, finiteSpec()); err != nil {
		t.Fatal(err)
	}
	whole, empty := reference(t, p, gen.Bytes()), reference(t, p)
	e.closeDriver()
	before := e.rootPaths()
	delays := []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	outcomes := map[string]int{}
	for i, after := range delays {
		id := fmt.Sprintf("v%d", i)
		finished := e.crash(childJob{Op: "apply-finite", ID: id, Parent: "p"}, after)
		e.noMounts("after recovery from a killed ApplyDiff")
		switch {
		case !e.d.Exists(id):
			if finished {
				t.Errorf("ApplyDiff of %s finished before the kill, but the layer is gone after New", id)
			}
			outcomes["gone"]++
		default:
			v := e.view(id)
			if len(fstree.Diff(empty, v, e.treeOptions())) == 0 && !finished {
				outcomes["empty"]++
			} else {
				e.sameTree(fmt.Sprintf("layer whose ApplyDiff was killed %v in, present after New", after), whole, v)
				outcomes["whole"]++
			}
			if err := e.d.Remove(e.ctx, id); err != nil {
				t.Errorf("Remove(%s): %v", id, err)
			}
		}
		e.closeDriver()
	}
	t.Logf("outcomes of %d kills: %v", len(delays), outcomes)
	e.sameRoot("after killed ApplyDiffs", before)
	e.d = e.open()
}

func testCrashDuringCreate(t *testing.T, e *env) {
	big := bigLayer(t, 600)
	e.layer("big", "", big)
	want := reference(t, big)
	// Mounting big leaves what a mount leaves (overlay's work dirs) before
	// the first crash, so that only debris tells before from after.
	e.sameTree("big layer", want, e.view("big"))
	e.closeDriver()
	before := e.rootPaths()
	for i, after := range []time.Duration{0, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond} {
		id := fmt.Sprintf("child%d", i)
		start := time.Now()
		finished := e.crash(childJob{Op: "create", ID: id, Parent: "big"}, after)
		t.Logf("crash+reopen took %v", time.Since(start))
		e.noMounts("after recovery from a killed Create")
		switch {
		case e.d.Exists(id):
			e.sameTree("child whose Create was killed, present after New", want, e.view(id))
			if err := e.d.Remove(e.ctx, id); err != nil {
				t.Errorf("Remove(%s): %v", id, err)
			}
		case finished:
			t.Errorf("Create of %s finished before the kill, but the layer is gone after New", id)
		default:
			e.create(id, "big", nil)
			if err := e.d.Remove(e.ctx, id); err != nil {
				t.Errorf("Remove(%s): %v", id, err)
			}
		}
		t.Logf("kill %v after starting Create: finished=%v", after, finished)
		e.sameTree("parent after a killed Create of its child", want, e.view("big"))
		e.closeDriver()
	}
	e.sameRoot("after killed Creates", before)
	e.d = e.open()
}

func testCrashWhileMounted(t *testing.T, e *env) {
	base := smallLayer(t, "base", 1)
	e.layer("base", "", base)
	e.create("ctr", "base", &driver.CreateOpts{Writable: true})
	e.closeDriver()
	e.crash(childJob{Op: "mount", ID: "ctr"}, 0)
	e.noMounts("after New on a root whose owner died with a layer mounted")
	if !e.d.Exists("ctr") {
		t.Fatalf("a writable layer mounted when its owner was killed is gone after New")
	}
	v := e.view("ctr")
	if en := v.Entries["/written-before-the-kill"]; en == nil {
		t.Errorf("a file written through the mount before the kill is lost")
	}
	delete(v.Entries, "/written-before-the-kill")
	e.sameTree("writable layer after recovery", reference(t, base), v)
	// The dead process's Get does not count: the layer can be removed.
	if err := e.d.Remove(e.ctx, "ctr"); err != nil {
		t.Errorf("Remove of a layer mounted by a killed process, after New: %v", err)
	}
	e.noMounts("after Remove")
}

func testCrashDuringRemove(t *testing.T, e *env) {
	e.create("keep", "", nil)
	e.closeDriver()
	before := e.rootPaths()
	e.d = e.open()
	big := bigLayer(t, 600)
	e.layer("big", "", big)
	e.closeDriver()
	finished := e.crash(childJob{Op: "remove", ID: "big"}, 0)
	e.noMounts("after recovery from a killed Remove")
	if e.d.Exists("big") {
		if finished {
			t.Errorf("Remove finished before the kill, but the layer exists after New")
		}
		e.sameTree("layer whose Remove was killed, present after New", reference(t, big), e.view("big"))
		if err := e.d.Remove(e.ctx, "big"); err != nil {
			t.Fatalf("Remove again: %v", err)
		}
	}
	t.Logf("Remove finished before the kill: %v", finished)
	e.closeDriver()
	e.sameRoot("after a killed Remove", before)
	e.d = e.open()
	e.create("big", "keep", nil)
}
