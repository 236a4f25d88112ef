package overlay2

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/internal/fstree"
)

// Interop with real tools. podman runs on its own storage under the
// test's directory (vfs storage driver, chroot isolation: no cgroups or
// registry needed); the base image is a busybox rootfs made here.

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install podman umoci busybox-static): %v", tool, err)
		}
	}
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// busyboxRootfs writes a small rootfs with a shell and returns a tar of it.
func busyboxRootfs(t *testing.T, work string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skipf("busybox is not installed (apt-get install busybox-static): %v", err)
	}
	if out, _ := exec.Command("file", "-L", bb).Output(); len(out) > 0 && !strings.Contains(string(out), "statically") {
		t.Skipf("%s is not statically linked", bb)
	}
	rootfs := filepath.Join(work, "rootfs")
	for _, d := range []string{"bin", "etc/conf.d", "usr/share/doc/pkg", "var/lib", "tmp"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(rootfs, "bin/busybox"), data, 0o755)
	for _, a := range []string{"sh", "rm", "mkdir", "echo", "chmod", "ln", "cat", "mv"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}
	files := map[string]string{
		"etc/hostname": "base\n", "etc/gone": "deleted by the build\n", "etc/conf.d/a": "a\n", "etc/conf.d/b": "b\n",
		"usr/share/doc/pkg/README": "docs\n", "var/lib/state": "state v1\n",
	}
	for p, c := range files {
		os.WriteFile(filepath.Join(rootfs, p), []byte(c), 0o644)
	}
	os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777)
	tarPath := filepath.Join(work, "base.tar")
	run(t, work, "tar", "--numeric-owner", "-C", rootfs, "-cf", tarPath, ".")
	return tarPath
}

type ociIndex struct {
	Manifests []struct {
		Digest string `json:"digest"`
	} `json:"manifests"`
}

type ociManifest struct {
	Layers []struct {
		Digest    string `json:"digest"`
		MediaType string `json:"mediaType"`
	} `json:"layers"`
}

// ociLayers lists the layer blobs of the one image in an OCI layout.
func ociLayers(t *testing.T, layout string) []string {
	t.Helper()
	blob := func(digest string) string {
		return filepath.Join(layout, "blobs", strings.Replace(digest, ":", "/", 1))
	}
	var idx ociIndex
	readJSON(t, filepath.Join(layout, "index.json"), &idx)
	if len(idx.Manifests) != 1 {
		t.Fatalf("%d manifests in %s", len(idx.Manifests), layout)
	}
	var m ociManifest
	readJSON(t, blob(idx.Manifests[0].Digest), &m)
	var out []string
	for _, l := range m.Layers {
		out = append(out, blob(l.Digest))
	}
	return out
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func sameTrees(t *testing.T, what, want, got string) {
	t.Helper()
	w, err := fstree.Snapshot(want)
	if err != nil {
		t.Fatal(err)
	}
	g, err := fstree.Snapshot(got)
	if err != nil {
		t.Fatal(err)
	}
	// Directory mtimes depend on the order a tool touched them in, and the
	// root's metadata on where it was mounted; all else must match.
	opts := fstree.Options{IgnoreDirMtimes: true, IgnoreRoot: true, IgnoreXattrPrefixes: []string{"trusted.overlay.", "security.selinux"}}
	if diffs := fstree.Diff(w, g, opts); len(diffs) > 0 {
		var b strings.Builder
		w.Dump(&b)
		t.Errorf("%s: %d differences:\n\t%s\nwant tree:\n%s", what, len(diffs), strings.Join(diffs, "\n\t"), b.String())
	}
}

// TestPodmanImageReadsTheSame: an image imported and built by podman
// (deleting and adding files), saved as an OCI layout and applied layer by
// layer with strata, looks exactly as podman mounts it.
func TestPodmanImageReadsTheSame(t *testing.T) {
	needTools(t, "podman", "tar")
	work := testRoot(t)
	baseTar := busyboxRootfs(t, work)
	p := []string{"--root", filepath.Join(work, "storage"), "--runroot", filepath.Join(work, "run"), "--storage-driver", "vfs"}
	podman := func(args ...string) string {
		return run(t, work, "podman", append(append([]string{}, p...), args...)...)
	}
	t.Cleanup(func() { exec.Command("podman", append(p, "image", "unmount", "--all")...).Run() })
	podman("import", baseTar, "localhost/strata-base:1")
	os.WriteFile(filepath.Join(work, "added.txt"), []byte("added by COPY\n"), 0o640)
	os.WriteFile(filepath.Join(work, "Containerfile"), []byte(`FROM localhost/strata-base:1
RUN rm /etc/gone && rm -r /usr/share/doc && rm /etc/conf.d/a && echo b2 > /etc/conf.d/b && mkdir -p /opt/app && echo new > /opt/app/new && chmod 0600 /var/lib/state && ln -s /opt/app/new /etc/link
RUN rm -r /opt/app && mkdir -p /opt/app && echo replaced > /opt/app/other
COPY added.txt /etc/added.txt
`), 0o644)
	podman("build", "--isolation=chroot", "-t", "localhost/strata-child:1", "-f", filepath.Join(work, "Containerfile"), work)
	layout := filepath.Join(work, "oci")
	podman("save", "--format", "oci-dir", "-o", layout, "localhost/strata-child:1")
	mnt := podman("image", "mount", "localhost/strata-child:1")

	d := open(t, filepath.Join(work, "strata"), Options{})
	layers := ociLayers(t, layout)
	if len(layers) < 3 {
		t.Fatalf("podman saved %d layers, want the base and the build's layers", len(layers))
	}
	parent := ""
	for i, blob := range layers {
		id := fmt.Sprintf("p%d", i)
		f, err := os.Open(blob)
		if err != nil {
			t.Fatal(err)
		}
		mustCreate(t, d, id, parent, false)
		if _, err := d.ApplyDiff(context.Background(), id, f); err != nil {
			t.Fatalf("ApplyDiff of podman's layer %d: %v", i, err)
		}
		f.Close()
		parent = id
	}
	view := mustGet(t, d, parent, &driver.MountOpts{ReadOnly: true})
	defer mustPut(t, d, parent)
	sameTrees(t, "strata's view of podman's image vs podman image mount", mnt, view)
	for _, gone := range []string{"etc/gone", "usr/share/doc", "etc/conf.d/a", "opt/app/new"} {
		if _, err := os.Lstat(filepath.Join(view, gone)); !os.IsNotExist(err) {
			t.Errorf("%s deleted by the build is in strata's view: %v", gone, err)
		}
	}
}

// TestStrataDiffReadByUmociAndPodman: a layer made through a strata mount
// (deletions, new and changed files), exported with Diff and stacked on
// the base with umoci, unpacks (umoci) and mounts (podman, pulling the
// layout) to the same tree strata shows.
func TestStrataDiffReadByUmociAndPodman(t *testing.T) {
	needTools(t, "umoci", "podman", "tar")
	work := testRoot(t)
	baseTar := busyboxRootfs(t, work)
	d := open(t, filepath.Join(work, "strata"), Options{})
	f, err := os.Open(baseTar)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, d, "base", "", false)
	if _, err := d.ApplyDiff(context.Background(), "base", f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mustCreate(t, d, "ctr", "base", true)
	m := mustGet(t, d, "ctr", nil)
	os.Remove(filepath.Join(m, "etc/gone"))
	os.RemoveAll(filepath.Join(m, "usr/share/doc"))
	os.RemoveAll(filepath.Join(m, "etc/conf.d"))
	writeFile(t, filepath.Join(m, "etc/conf.d/fresh"), "opaque dir now\n")
	writeFile(t, filepath.Join(m, "var/lib/state"), "state v2\n")
	writeFile(t, filepath.Join(m, "srv/data/new"), "new\n")
	os.Symlink("../srv/data/new", filepath.Join(m, "etc/newlink"))
	os.Chmod(filepath.Join(m, "etc/hostname"), 0o600)
	mustPut(t, d, "ctr")

	rc, err := d.Diff(context.Background(), "ctr")
	if err != nil {
		t.Fatal(err)
	}
	diffTar := filepath.Join(work, "ctr.tar")
	out, _ := os.Create(diffTar)
	if _, err := io.Copy(out, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	out.Close()
	names := tarNames(t, mustOpen(t, diffTar))
	for _, want := range []string{"etc/.wh.gone", "usr/share/.wh.doc"} {
		if !contains(names, want) {
			t.Errorf("strata Diff lacks %s: %v", want, names)
		}
	}
	// The replaced directory is an opaque marker or a whiteout per name.
	if !contains(names, "etc/conf.d/.wh..wh..opq") && !(contains(names, "etc/conf.d/.wh.a") && contains(names, "etc/conf.d/.wh.b")) {
		t.Errorf("strata Diff does not delete the old etc/conf.d entries: %v", names)
	}

	img := filepath.Join(work, "img")
	run(t, work, "umoci", "init", "--layout", img)
	run(t, work, "umoci", "new", "--image", img+":t")
	run(t, work, "umoci", "raw", "add-layer", "--image", img+":t", baseTar)
	run(t, work, "umoci", "raw", "add-layer", "--image", img+":t", diffTar)
	bundle := filepath.Join(work, "bundle")
	run(t, work, "umoci", "unpack", "--image", img+":t", bundle)

	view := mustGet(t, d, "ctr", &driver.MountOpts{ReadOnly: true})
	defer mustPut(t, d, "ctr")
	sameTrees(t, "umoci unpack of base + strata Diff vs strata's view", view, filepath.Join(bundle, "rootfs"))

	p := []string{"--root", filepath.Join(work, "storage"), "--runroot", filepath.Join(work, "run"), "--storage-driver", "vfs"}
	podman := func(args ...string) string {
		return run(t, work, "podman", append(append([]string{}, p...), args...)...)
	}
	t.Cleanup(func() { exec.Command("podman", append(p, "image", "unmount", "--all")...).Run() })
	// pull prints progress, then the image ID on the last line.
	pulled := strings.Split(podman("pull", "-q", "oci:"+img+":t"), "\n")
	mnt := podman("image", "mount", pulled[len(pulled)-1])
	sameTrees(t, "podman mount of base + strata Diff vs strata's view", view, mnt)
}

func mustOpen(t *testing.T, p string) io.Reader {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
