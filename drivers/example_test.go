package drivers_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers"
)

// Open a root with the backend Probe picks, import a layer, run a
// container layer on it and export what the container changed.
func ExampleOpen() {
	ctx := context.Background()
	root, err := os.MkdirTemp("/var/tmp", "strata-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)

	d, err := drivers.Open(ctx, root, drivers.Options{}) // or Driver: "overlay2"
	if err != nil {
		log.Fatal(err) // says why, e.g. which backend cannot work here
	}
	defer d.Close()

	// An image layer from an OCI layer tar (here: an empty one).
	if err := d.Create(ctx, "base", "", nil); err != nil {
		log.Fatal(err)
	}
	if _, err := d.ApplyDiff(ctx, "base", emptyTar()); err != nil {
		log.Fatal(err)
	}

	// A container layer on top, written through its mount.
	if err := d.Create(ctx, "ctr", "base", &driver.CreateOpts{Writable: true}); err != nil {
		log.Fatal(err)
	}
	dir, err := d.Get(ctx, "ctr", nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(dir+"/hello.txt", []byte("hi\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := d.Put(ctx, "ctr"); err != nil {
		log.Fatal(err)
	}

	changes, err := d.Changes(ctx, "ctr")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(changes)
	rc, err := d.Diff(ctx, "ctr") // the same changes as an OCI layer tar
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	// Output: [A /hello.txt]
}

func emptyTar() io.Reader {
	return io.LimitReader(zeros{}, 1024) // two zero blocks end a tar
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
