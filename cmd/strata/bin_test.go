package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/conformance/fixtures"
	"github.com/stratafs/strata/internal/fstree"
	"github.com/stratafs/strata/internal/mount"
)

// These tests build the strata binary once and run it as separate
// processes: exit codes, stderr, and mounts that must outlive the process
// that made them.

func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not building the binary")
	}
	bin := filepath.Join(testRoot(t), "strata")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("ExitCodes", func(t *testing.T) { testExitCodes(t, bin) })
	for _, name := range cliBackendNames {
		t.Run("MountAcrossProcesses/"+name, func(t *testing.T) { testMountAcrossProcesses(t, bin, name, backendRoot(t, name)) })
	}
	t.Run("MountAcrossProcesses/btrfs", func(t *testing.T) {
		root := filepath.Join(fixtures.Btrfs(t, fixtures.MinBtrfsSize), "strata")
		requireUsable(t, root, "btrfs")
		testMountAcrossProcesses(t, bin, "btrfs", root)
	})
	for _, name := range cliBackendNames {
		t.Run("DebianRoundTrip/"+name, func(t *testing.T) { testDebianRoundTrip(t, bin, name) })
	}
}

type proc struct {
	stdout, stderr string
	code           int
}

func runBin(t *testing.T, bin string, stdin []byte, stdoutFile *os.File, args ...string) proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdoutFile != nil {
		cmd.Stdout = stdoutFile
	}
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return proc{out.String(), errb.String(), code}
}

func binOK(t *testing.T, bin string, stdin []byte, args ...string) string {
	t.Helper()
	p := runBin(t, bin, stdin, nil, args...)
	if p.code != 0 {
		t.Fatalf("strata %s: exit %d: %s", strings.Join(args, " "), p.code, p.stderr)
	}
	return p.stdout
}

func binFails(t *testing.T, bin string, want int, msg string, args ...string) {
	t.Helper()
	p := runBin(t, bin, nil, nil, args...)
	if p.code != want || strings.Count(p.stderr, "\n") != 1 || !strings.Contains(p.stderr, msg) {
		t.Errorf("strata %s: exit %d (want %d), stderr %q (want one line with %q)", strings.Join(args, " "), p.code, want, p.stderr, msg)
	}
}

func testExitCodes(t *testing.T, bin string) {
	root := testRoot(t)
	binFails(t, bin, 2, "unknown command", "nope")
	binFails(t, bin, 2, "flag provided but not defined", "--root", root, "ls", "--bogus")
	binFails(t, bin, 1, "layer not found", "--root", root, "--driver", "vfs", "rm", "missing")
	p := runBin(t, bin, nil, nil)
	if p.code != 2 || !strings.Contains(p.stderr, "usage: strata") {
		t.Errorf("no arguments: exit %d, stderr %q", p.code, p.stderr)
	}
	if p := runBin(t, bin, nil, nil, "--help"); p.code != 0 || !strings.Contains(p.stdout, "commands:") {
		t.Errorf("--help: exit %d, stdout %q", p.code, p.stdout)
	}
}

// testMountAcrossProcesses: a mount made by one strata process stays up
// while other processes open the backend (overlay2's New unmounts what a
// dead process left under its root), nests, blocks rm, and is released by
// a later strata umount.
func testMountAcrossProcesses(t *testing.T, bin, name, root string) {
	t.Cleanup(func() {
		// Release what a failed run left, before the root goes away.
		if _, err := mount.UnmountAll(filepath.Join(root, "mnt")); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	g := []string{"--root", root, "--driver", name}
	binOK(t, bin, baseTar(t), append(g, "apply", "base")...)
	binOK(t, bin, mkTar(t), append(g, "apply", "ctr", "--parent", "base", "--writable")...)

	path := strings.TrimSpace(binOK(t, bin, nil, append(g, "mount", "ctr")...))
	if path != filepath.Join(root, "mnt", "ctr") {
		t.Fatalf("mount printed %q", path)
	}
	mounted := func() bool {
		t.Helper()
		ok, err := mount.IsMountPoint(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return ok
	}
	if !mounted() {
		t.Fatalf("%s is not a mount point after strata mount exited", path)
	}
	// Other processes open the backend; the mount must stay.
	binOK(t, bin, nil, append(g, "ls")...)
	binOK(t, bin, nil, append(g, "status")...)
	if !mounted() {
		t.Fatalf("%s was unmounted when another strata process opened the backend", path)
	}
	if got, err := os.ReadFile(filepath.Join(path, "etc/hello")); err != nil || string(got) != "hello\n" {
		t.Fatalf("reading the base layer through the mount: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(path, "etc/written"), []byte("from outside\n"), 0o644); err != nil {
		t.Fatalf("writing through the mount of a writable layer: %v", err)
	}
	if names := tarNames(t, []byte(binOK(t, bin, nil, append(g, "diff", "ctr")...))); !contains(names, "etc/written") {
		t.Errorf("diff of ctr after writing through its mount: %q", names)
	}

	// Mounts nest; rm waits for the last umount.
	binOK(t, bin, nil, append(g, "mount", "ctr")...)
	binOK(t, bin, nil, append(g, "umount", "ctr")...)
	if !mounted() {
		t.Fatal("first umount of two mounts removed the mount")
	}
	binFails(t, bin, 1, "mounted by strata mount", append(g, "rm", "ctr")...)
	binOK(t, bin, nil, append(g, "umount", "ctr")...)
	if mounted() {
		t.Fatal("still mounted after the last umount")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left behind: %v", err)
	}
	binFails(t, bin, 1, "not mounted", append(g, "umount", "ctr")...)

	// An image layer is mounted read-only.
	ro := strings.TrimSpace(binOK(t, bin, nil, append(g, "mount", "base")...))
	err := os.WriteFile(filepath.Join(ro, "etc/x"), nil, 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("writing into a read-only layer's mount: %v, want EROFS", err)
	}
	binOK(t, bin, nil, append(g, "umount", "base")...)

	binOK(t, bin, nil, append(g, "rm", "ctr")...)
	binOK(t, bin, nil, append(g, "rm", "base")...)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// debianTar returns a Debian rootfs tar made with mmdebstrap, building it
// once per machine under /var/tmp/strata-fixtures (it is not kept in the
// repository; CI builds it afresh). It skips with the reason when it
// cannot be built, e.g. without network access to the mirror.
func debianTar(t *testing.T) string {
	t.Helper()
	dir := "/var/tmp/strata-fixtures"
	p := filepath.Join(dir, "debian-essential.tar")
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p
	}
	os.RemoveAll(p) // not a tar (a leftover of an older run): rebuild
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skipf("no Debian rootfs fixture and no mmdebstrap to make one: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// mmdebstrap picks its output format from the name: it must end in .tar.
	tmp := filepath.Join(dir, "debian-essential.partial.tar")
	os.RemoveAll(tmp)
	// essential: the Essential:yes packages only (~140 MB unpacked),
	// enough for a real rootfs with every kind of entry dpkg makes.
	cmd := exec.CommandContext(ctx, "mmdebstrap", "--variant=essential", "--mode=root", "--quiet", "bookworm", tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		t.Skipf("mmdebstrap could not make the Debian rootfs fixture (no network to the mirror?): %v\n%s", err, lastLines(string(out), 5))
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// gnuUnpack unpacks a tar with GNU tar, an independent reader, keeping
// owners, modes and xattrs.
func gnuUnpack(t *testing.T, tarPath string) *fstree.Tree {
	t.Helper()
	dir := filepath.Join(testRoot(t), "tree")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("tar", "--extract", "--file", tarPath, "--directory", dir,
		"--same-owner", "--numeric-owner", "--preserve-permissions", "--xattrs", "--xattrs-include=*")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x %s: %v\n%s", tarPath, err, out)
	}
	tr, err := fstree.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// testDebianRoundTrip is issue 4's done-when check: strata apply of a real
// Debian rootfs tar, then strata diff, gives back a tar whose unpacked tree
// is identical to the original's (content, modes, owners, links, xattrs,
// mtimes); and the layer's mounted view is that same tree.
func testDebianRoundTrip(t *testing.T, bin, name string) {
	src := debianTar(t)
	root := backendRoot(t, name)
	g := []string{"--root", root, "--driver", name}
	in, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	binOK(t, bin, in, append(g, "apply", "debian")...)
	out := filepath.Join(root, "out.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	p := runBin(t, bin, nil, f, append(g, "diff", "debian")...)
	f.Close()
	if p.code != 0 {
		t.Fatalf("strata diff: exit %d: %s", p.code, p.stderr)
	}
	want := gnuUnpack(t, src)
	got := gnuUnpack(t, out)
	if len(want.Entries) < 1000 {
		t.Fatalf("the fixture has only %d entries", len(want.Entries))
	}
	sameTree(t, want, got, fstree.Options{IgnoreRoot: true})
	t.Logf("%s: %d entries identical after apply + diff", name, len(want.Entries))

	view := strings.TrimSpace(binOK(t, bin, nil, append(g, "mount", "debian")...))
	defer binOK(t, bin, nil, append(g, "umount", "debian")...)
	v, err := fstree.Snapshot(view)
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, want, v, fstree.Options{IgnoreRoot: true, IgnoreXattrPrefixes: []string{"trusted.overlay."}})
}
