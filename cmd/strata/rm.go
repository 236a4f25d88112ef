package main

import (
	"context"
	"fmt"
)

// cmdRm removes a layer. A layer mounted with strata mount must be
// released with strata umount first.
func cmdRm(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("rm")
	pos, err := parse(fs, args, 1, "ID")
	if err != nil {
		return err
	}
	id := pos[0]
	d, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	if n, err := e.mounts().count(id); err != nil {
		return err
	} else if n > 0 {
		return fmt.Errorf("remove %s: layer in use: mounted by strata mount (%d), run strata umount %s", id, n, id)
	}
	if err := d.Remove(ctx, id); err != nil {
		return err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "removed %s\n", id)
	}
	return nil
}
