package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/stratafs/strata/driver"
)

const demoRoot = "/var/tmp/strata-demo"

// demoLayer is one image layer of the demo, built from this machine's files.
type demoLayer struct {
	id, what string
	build    func(b *tarBuilder) error
}

// The demo image is shaped the way Docker tutorials draw one: a base
// rootfs, a layer that installs a package, an application layer, and an
// empty layer standing for metadata-only steps (ENV, CMD).
func demoImage() []demoLayer {
	return []demoLayer{
		{"demo-base", "rootfs: shell tools, libc, /etc from this host", buildBase},
		{"demo-pkgs", "package layer", buildPackage},
		{"demo-app", "application: /app", buildApp},
		{"demo-meta", "metadata only (ENV/CMD): 0 bytes", func(*tarBuilder) error { return nil }},
	}
}

const demoContainer = "demo-ctr"

// cmdDemo stores the demo image, runs a container layer on it, shows what
// changed, and removes the container again. It replaces the demo layers a
// previous run left, so it can be run any number of times.
func cmdDemo(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("demo")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if e.json {
		return usagef("demo prints for people; use ls --json, probe --json and status --json for data")
	}
	if !e.rootSet {
		e.root = demoRoot
	}
	out := e.stdout
	fmt.Fprintf(out, "== Backends on %s\n", e.root)
	if err := cmdProbe(ctx, &env{root: e.root, stdout: out, stderr: e.stderr}, nil); err != nil {
		return err
	}
	d, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(out, "\nUsing %s.\n", d.Name())

	image := demoImage()
	if err := demoCleanup(ctx, e, d, image); err != nil {
		return err
	}

	fmt.Fprintf(out, "\n== Storing a %d-layer image made from files on this machine\n", len(image))
	tw := e.table()
	fmt.Fprintln(tw, "LAYER\tPARENT\tSIZE\tFILES\tCONTENT")
	parent := ""
	for _, l := range image {
		b := newTarBuilder()
		if err := l.build(b); err != nil {
			return fmt.Errorf("build %s: %w", l.id, err)
		}
		what := l.what
		if b.note != "" {
			what += " (" + b.note + ")"
		}
		if err := d.Create(ctx, l.id, parent, &driver.CreateOpts{Labels: map[string]string{"demo": "image"}}); err != nil {
			return err
		}
		if _, err := d.ApplyDiff(ctx, l.id, b.reader()); err != nil {
			return errors.Join(err, d.Remove(context.WithoutCancel(ctx), l.id))
		}
		size, err := d.DiffSize(ctx, l.id)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", l.id, dash(parent), humanSize(size), b.files, what)
		parent = l.id
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	top := parent

	fmt.Fprintf(out, "\n== Container layer %s on %s\n", demoContainer, top)
	if err := d.Create(ctx, demoContainer, top, &driver.CreateOpts{Writable: true}); err != nil {
		return err
	}
	view, err := d.Get(ctx, demoContainer, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "mounted at %s\n", view)
	werr := demoWrite(view, out)
	if err := d.Put(ctx, demoContainer); err != nil {
		return errors.Join(werr, err)
	}
	if werr != nil {
		return werr
	}

	changes, err := d.Changes(ctx, demoContainer)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== Its changes (Changes)\n")
	for _, c := range changes {
		fmt.Fprintf(out, "%s\n", c)
	}
	if err := demoShowDiff(ctx, e, d); err != nil {
		return err
	}
	if cu, ok := d.(driver.CopyUpReporter); ok {
		st, err := cu.CopyUp(ctx, demoContainer)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\n== Copy-up (%s)\n", d.Name())
		tw := e.table()
		fmt.Fprintf(tw, "copied up from lower layers:\t%s\t%s\n", files(st.CopiedFiles), humanSize(st.CopiedBytes))
		fmt.Fprintf(tw, "new in the container:\t%s\t%s\n", files(st.NewFiles), humanSize(st.NewBytes))
		tw.Flush()
		fmt.Fprintln(out, "(what counts as copied depends on the backend: overlay2 copies a whole file on its first write, btrfs the blocks rewritten, vfs the whole parent when the layer is created)")
	} else {
		fmt.Fprintf(out, "\n(%s does not report copy-up figures)\n", d.Name())
	}

	fmt.Fprintf(out, "\n== Removing the container layer\n")
	if err := d.Remove(ctx, demoContainer); err != nil {
		return err
	}
	if err := demoCheckImage(ctx, d, image); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %s; the image is intact: %d layers, /etc/passwd as on this host.\n", demoContainer, len(image))
	fmt.Fprintf(out, "\nTry: strata --root %s ls\n", e.root)
	return nil
}

// demoCleanup removes what a previous demo run left, children first.
func demoCleanup(ctx context.Context, e *env, d driver.Driver, image []demoLayer) error {
	ids := []string{demoContainer}
	for i := len(image) - 1; i >= 0; i-- {
		ids = append(ids, image[i].id)
	}
	var removed []string
	for _, id := range ids {
		if !d.Exists(id) {
			continue
		}
		if n, err := e.mounts().count(id); err != nil {
			return err
		} else if n > 0 {
			return fmt.Errorf("layer %s of an earlier demo is mounted by strata mount: run strata --root %s umount %s", id, e.root, id)
		}
		if err := d.Remove(ctx, id); err != nil {
			return fmt.Errorf("removing layer %s of an earlier demo: %w", id, err)
		}
		removed = append(removed, id)
	}
	if len(removed) > 0 {
		fmt.Fprintf(e.stdout, "removed the layers of an earlier demo run: %s\n", strings.Join(removed, ", "))
	}
	return nil
}

// demoWrite does what a container would: it changes a file of the base
// layer (overlay copies it up) and creates a new one.
func demoWrite(view string, out io.Writer) error {
	f, err := os.OpenFile(filepath.Join(view, "etc/passwd"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("app:x:1000:1000:demo app:/app:/bin/sh\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "appended a user to /etc/passwd (a file of demo-base: copy-up)")
	if err := os.MkdirAll(filepath.Join(view, "app/data"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(view, "app/data/visits.log"), []byte("1 visit\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(out, "added /app/data/visits.log")
	return nil
}

// demoShowDiff lists the entries of the container's layer tar.
func demoShowDiff(ctx context.Context, e *env, d driver.Driver) error {
	rc, err := d.Diff(ctx, demoContainer)
	if err != nil {
		return err
	}
	defer rc.Close()
	cr := &countingReader{r: rc}
	tr := tar.NewReader(cr)
	tw := e.table()
	fmt.Fprintf(e.stdout, "\n== Its diff (OCI layer tar)\n")
	fmt.Fprintln(tw, "TYPE\tMODE\tSIZE\tNAME")
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the diff: %w", err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", tarType(h), h.FileInfo().Mode(), humanSize(h.Size), h.Name)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s of tar\n", humanSize(cr.n.Load()))
	return nil
}

func files(n int64) string {
	if n == 1 {
		return "1 file"
	}
	return fmt.Sprintf("%d files", n)
}

func tarType(h *tar.Header) string {
	if strings.HasPrefix(path.Base(h.Name), ".wh.") {
		return "whiteout"
	}
	switch h.Typeflag {
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return "special"
	}
	return "file"
}

// demoCheckImage checks that removing the container left the image whole:
// every layer is there and the file the container changed is unchanged.
func demoCheckImage(ctx context.Context, d driver.Driver, image []demoLayer) error {
	for _, l := range image {
		if !d.Exists(l.id) {
			return fmt.Errorf("layer %s is gone after removing the container", l.id)
		}
	}
	top := image[len(image)-1].id
	view, err := d.Get(ctx, top, nil)
	if err != nil {
		return err
	}
	defer d.Put(ctx, top)
	got, err := os.ReadFile(filepath.Join(view, "etc/passwd"))
	if err != nil {
		return err
	}
	want, err := hostPasswd()
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("the image's /etc/passwd changed when the container wrote to it")
	}
	return nil
}

// tarBuilder builds a layer tar in memory (the demo layers are small).
type tarBuilder struct {
	buf   bytes.Buffer
	tw    *tar.Writer
	files int
	dirs  map[string]bool
	names map[string]bool
	note  string
}

// demoTime is the mtime of generated files, fixed so the layers do not
// change from run to run.
func demoTime() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) }

func newTarBuilder() *tarBuilder {
	b := &tarBuilder{dirs: map[string]bool{}, names: map[string]bool{}}
	b.tw = tar.NewWriter(&b.buf)
	return b
}

func (b *tarBuilder) reader() io.Reader {
	b.tw.Close()
	return bytes.NewReader(b.buf.Bytes())
}

func (b *tarBuilder) write(h *tar.Header, data []byte) error {
	if b.names[h.Name] {
		return nil
	}
	b.names[h.Name] = true
	if err := b.parents(h.Name); err != nil {
		return err
	}
	h.Format = tar.FormatPAX
	if err := b.tw.WriteHeader(h); err != nil {
		return err
	}
	if len(data) > 0 {
		if _, err := b.tw.Write(data); err != nil {
			return err
		}
	}
	b.files++
	return nil
}

// parents adds the directories above name that the tar lacks so far.
func (b *tarBuilder) parents(name string) error {
	dir := path.Dir(strings.TrimSuffix(name, "/"))
	if dir == "." || dir == "/" || b.dirs[dir] {
		return nil
	}
	return b.dir(dir, 0o755)
}

func (b *tarBuilder) dir(name string, mode int64) error {
	name = strings.TrimSuffix(name, "/")
	if b.dirs[name] {
		return nil
	}
	b.dirs[name] = true
	return b.write(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: demoTime()}, nil)
}

func (b *tarBuilder) file(name string, mode int64, data []byte) error {
	return b.write(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: demoTime()}, data)
}

func (b *tarBuilder) symlink(name, target string) error {
	return b.write(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, ModTime: demoTime()}, nil)
}

// host copies a file, symlink or directory of this machine into the tar
// under the same name, owned by root. A missing file is skipped: the demo
// should run on any Linux host, with what it has.
func (b *tarBuilder) host(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(p, "/")
	h := &tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime().Truncate(time.Second)}
	switch {
	case fi.Mode().IsRegular():
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		return b.write(h, data)
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
		return b.write(h, nil)
	case fi.IsDir():
		return b.dir(name, int64(fi.Mode().Perm()))
	}
	return nil // devices, sockets: not part of an image
}

func buildBase(b *tarBuilder) error {
	for _, d := range []string{"usr/bin", "usr/lib", "etc", "root", "tmp", "var/lib", "app"} {
		mode := int64(0o755)
		switch d {
		case "tmp":
			mode = 0o1777
		case "root":
			mode = 0o700
		}
		if err := b.dir(d, mode); err != nil {
			return err
		}
	}
	if err := b.symlink("bin", "usr/bin"); err != nil {
		return err
	}
	if err := b.symlink("lib", "usr/lib"); err != nil {
		return err
	}
	for _, tool := range []string{"sh", "dash", "ls", "cat", "cp", "mv", "rm", "mkdir", "echo", "env", "grep", "sed"} {
		if err := b.host("/usr/bin/" + tool); err != nil {
			return err
		}
	}
	libs, _ := filepath.Glob("/usr/lib/*-linux-gnu/libc.so.6")
	for _, l := range libs {
		if err := b.host(l); err != nil {
			return err
		}
	}
	for _, f := range []string{"/etc/os-release", "/usr/lib/os-release", "/etc/debian_version", "/etc/group", "/etc/hostname"} {
		if err := b.host(f); err != nil {
			return err
		}
	}
	// /etc/passwd is the file the container changes; the image keeps the
	// host's exact bytes so the demo can check that it stays unchanged.
	pw, err := hostPasswd()
	if err != nil {
		return err
	}
	return b.file("etc/passwd", 0o644, pw)
}

func hostPasswd() ([]byte, error) {
	data, err := os.ReadFile("/etc/passwd")
	if errors.Is(err, os.ErrNotExist) {
		return []byte("root:x:0:0:root:/root:/bin/sh\n"), nil
	}
	return data, err
}

// buildPackage copies one package installed on this host, as dpkg lists
// its files, the way a "RUN apt-get install" step adds them.
func buildPackage(b *tarBuilder) error {
	for _, pkg := range []string{"gzip", "hostname", "sed"} {
		list := "/var/lib/dpkg/info/" + pkg + ".list"
		f, err := os.Open(list)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			p, ok := canonical(sc.Text())
			if !ok {
				continue
			}
			if err := b.host(p); err != nil {
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
		if err := b.host(list); err != nil {
			return err
		}
		b.note = "the files of this host's " + pkg + " package"
		return nil
	}
	// No dpkg: a generated stand-in keeps the layer shape.
	b.note = "generated, no dpkg on this host"
	return b.file("usr/share/doc/demo-pkg/README", 0o644, []byte("a package would be here\n"))
}

// canonical resolves symlinked parent directories of a dpkg path
// (/bin/gzip is /usr/bin/gzip on a merged-/usr host), so that no tar entry
// goes through a symlink; top-level links like /bin are the base's.
func canonical(p string) (string, bool) {
	if p == "" || p == "/." {
		return "", false
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		return "", false
	}
	p = filepath.Join(dir, filepath.Base(p))
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 && filepath.Dir(p) == "/" {
		return "", false
	}
	return p, true
}

func buildApp(b *tarBuilder) error {
	if err := b.file("app/hello.sh", 0o755, []byte("#!/bin/sh\necho \"hello from a strata layer\"\n")); err != nil {
		return err
	}
	if err := b.file("app/config.json", 0o644, []byte("{\n  \"listen\": \":8080\",\n  \"greeting\": \"hello\"\n}\n")); err != nil {
		return err
	}
	return b.file("app/VERSION", 0o644, []byte("1.0.0\n"))
}
