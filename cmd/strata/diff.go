package main

import (
	"context"
	"io"
)

// cmdDiff writes a layer's changes against its parent to stdout.
func cmdDiff(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("diff")
	pos, err := parse(fs, args, 1, "ID > layer.tar")
	if err != nil {
		return err
	}
	if isTerminal(e.stdout) {
		return usagef("stdout is a terminal: redirect the tar (strata diff %s > layer.tar)", pos[0])
	}
	d, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	rc, err := d.Diff(ctx, pos[0])
	if err != nil {
		return err
	}
	_, err = io.Copy(e.stdout, rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return err
}
