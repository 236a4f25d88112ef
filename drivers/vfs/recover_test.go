package vfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/fsutil"
	"github.com/stratafs/strata/internal/layergen"
	"github.com/stratafs/strata/internal/store"
)

// TestMain lets the crash test run this binary as the process it kills.
func TestMain(m *testing.M) {
	if root := os.Getenv("STRATA_VFS_CRASH_ROOT"); root != "" {
		crashWorker(root)
		return
	}
	os.Exit(m.Run())
}

func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// TestRecoverLeftovers lays out on disk what a kill at each step of
// Create, ApplyDiff and Remove leaves, then checks that New removes all of
// it, says so, and keeps the whole layers byte for byte.
func TestRecoverLeftovers(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	d := openDriver(t, root, Options{})
	base := filledBase(t, d)
	must(t, d.Create(ctx, "keep", "base", nil))
	for _, id := range []string{"applying", "removing"} {
		must(t, d.Create(ctx, id, "base", nil))
	}
	must(t, d.Close())
	wantBase, wantKeep := snapshot(t, base), snapshot(t, d.layerDir("keep"))

	// Killed while copying the parent: a partial tree in staging/.
	_, err := fsutil.CopyTree(ctx, base, filepath.Join(root, stagingDir, "copying"))
	must(t, err)
	must(t, os.RemoveAll(filepath.Join(root, stagingDir, "copying", "usr")))
	// Killed after the rename, while writing the record: a tree in layers/
	// and the record's temp file.
	_, err = fsutil.CopyTree(ctx, base, filepath.Join(root, layersDir, "publishing"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(root, metaDir, ".publishing.json.tmp-123"), []byte(`{"id":`), 0o600))
	// Killed during ApplyDiff: the record says Applying, the tree is half done.
	st, err := store.Open(filepath.Join(root, metaDir))
	must(t, err)
	must(t, st.Update("applying", func(r *store.Record) { r.State = store.Applying }))
	must(t, os.WriteFile(filepath.Join(root, layersDir, "applying", "half"), []byte("ha"), 0o644))
	// Killed during Remove between deleting the record and the rename.
	must(t, st.Delete("removing"))
	// Killed during Remove after the rename into trash/.
	must(t, os.MkdirAll(filepath.Join(root, trashDir, "rm-42", "tree", "etc"), 0o755))

	d = openDriver(t, root, Options{})
	want := "removed 1 unfinished create, 1 unfinished remove, 1 half-applied layer, 2 layer directories without a record"
	if got := d.Status(ctx).Get("Recovered On Open"); got != want {
		t.Errorf("recovered:\n got %q\nwant %q", got, want)
	}
	for sub, want := range map[string]string{
		layersDir: "base keep", stagingDir: "", trashDir: "", metaDir: "base.json keep.json",
	} {
		if got := strings.Join(listDir(t, filepath.Join(root, sub)), " "); got != want {
			t.Errorf("%s holds %q, want %q", sub, got, want)
		}
	}
	requireUnchangedTree(t, wantBase, base)
	requireUnchangedTree(t, wantKeep, d.layerDir("keep"))
	if got := d.Status(ctx).Get("Damaged"); got != "" {
		t.Errorf("Damaged = %q after a clean recovery", got)
	}
	for _, id := range []string{"copying", "publishing", "applying", "removing"} {
		if d.Exists(id) {
			t.Errorf("%s exists after recovery", id)
		}
		must(t, d.Create(ctx, id, "keep", nil))
	}
}

// TestReportDamage removes a layer's tree behind the driver's back: no
// crash does that, so New reports it instead of guessing.
func TestReportDamage(t *testing.T) {
	ctx := context.Background()
	root := tempRoot(t)
	d := openDriver(t, root, Options{})
	must(t, d.Create(ctx, "a", "", nil))
	must(t, d.Create(ctx, "b", "a", nil))
	must(t, d.Close())
	must(t, os.RemoveAll(filepath.Join(root, layersDir, "a")))
	d = openDriver(t, root, Options{})
	if got, want := d.Status(ctx).Get("Damaged"), "1 layer record(s) without a tree: a"; got != want {
		t.Errorf("Damaged = %q, want %q", got, want)
	}
	if !d.Exists("b") {
		t.Error("child of a damaged layer lost")
	}
}

func requireUnchangedTree(t testing.TB, want *fstree.Tree, dir string) {
	t.Helper()
	if diff := fstree.Diff(want, snapshot(t, dir), fstree.Options{}); diff != nil {
		t.Errorf("%s changed in recovery:\n%s", dir, strings.Join(diff, "\n"))
	}
}

// applyTar is what the crash worker applies: additions, a change, and
// deletions of the base's files.
func applyTar() []byte {
	return layergen.Tar(
		layergen.Dir("etc"),
		layergen.File("etc/hostname", "applied\n"),
		layergen.Whiteout("etc/dangling"),
		layergen.Dir("opt"),
		layergen.File("opt/big", strings.Repeat("z", 8<<20)),
		layergen.Whiteout("tmp"),
	)
}

// crashWorker runs in a child process and creates, fills and removes
// layers until it is killed.
func crashWorker(root string) {
	ctx := context.Background()
	d, err := open(ctx, root, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("ready")
	for i := 0; ; i++ {
		c, a := fmt.Sprintf("c-%d", i), fmt.Sprintf("a-%d", i)
		err := d.Create(ctx, c, "base", nil)
		if err == nil {
			// A base layer: the create is quick, so kills land in the apply too.
			err = d.Create(ctx, a, "", nil)
		}
		if err == nil {
			_, err = d.ApplyDiff(ctx, a, bytes.NewReader(applyTar()))
		}
		if err == nil && i >= 2 {
			err = d.Remove(ctx, fmt.Sprintf("c-%d", i-2))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
}

// TestRecoverAfterKill kills a process that is busy creating, applying and
// removing layers at varied instants, and checks after each kill that New
// leaves only whole layers: each equal to its reference, nothing else on
// disk.
func TestRecoverAfterKill(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	root := tempRoot(t)
	d := openDriver(t, root, Options{})
	base := filledBase(t, d)
	// A bigger base makes the copy long enough to be killed in the middle.
	for i := 0; i < 200; i++ {
		must(t, os.WriteFile(filepath.Join(base, fmt.Sprintf("file%03d", i)), bytes.Repeat([]byte{byte(i)}, 20_000), 0o644))
	}
	must(t, d.Create(ctx, "ref", "", nil))
	_, err := d.ApplyDiff(ctx, "ref", bytes.NewReader(applyTar()))
	must(t, err)
	must(t, d.Close())
	wantBase := snapshot(t, base)
	delays := []time.Duration{0, 3, 7, 15, 30, 60, 120, 250, 330, 410, 490, 570, 650}
	if testing.Short() {
		delays = []time.Duration{0, 30, 250, 490}
	}
	for round, delay := range delays {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "STRATA_VFS_CRASH_ROOT="+root)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("worker did not start: %v: %s", err, stderr.String())
		}
		time.Sleep(delay * time.Millisecond)
		must(t, cmd.Process.Signal(syscall.SIGKILL))
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: worker ended by itself: %v: %s", round, err, stderr.String())
		}

		d := openDriver(t, root, Options{})
		layers, err := d.Layers(ctx)
		must(t, err)
		var ids []string
		for _, l := range layers {
			ids = append(ids, l.ID)
			switch {
			case strings.HasPrefix(l.ID, "c-"):
				requireSameTree(t, base, d.layerDir(l.ID))
			case strings.HasPrefix(l.ID, "a-"):
				// Killed between Create and ApplyDiff: a whole, empty layer.
				if len(listDir(t, d.layerDir(l.ID))) > 0 {
					requireSameContent(t, d.layerDir("ref"), d.layerDir(l.ID))
				}
			}
		}
		requireUnchangedTree(t, wantBase, base)
		if got, want := strings.Join(listDir(t, filepath.Join(root, layersDir)), " "), strings.Join(ids, " "); got != want {
			t.Errorf("round %d: layers/ holds %q, records say %q", round, got, want)
		}
		for _, sub := range []string{stagingDir, trashDir} {
			if ents := listDir(t, filepath.Join(root, sub)); len(ents) != 0 {
				t.Errorf("round %d: %s holds %v after New", round, sub, ents)
			}
		}
		t.Logf("round %d (kill after %v): %d layers, %s", round, delay*time.Millisecond, len(ids), d.Status(ctx).Get("Recovered On Open"))
		// Start the next round from whole layers only, with fresh IDs.
		for _, id := range ids {
			if id != "base" && id != "ref" {
				must(t, d.Remove(ctx, id))
			}
		}
		must(t, d.Close())
	}
}
