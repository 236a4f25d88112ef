package main

import (
	"context"
	"fmt"

	"github.com/stratafs/strata/drivers"
)

// cmdProbe prints a verdict for every backend on the root: the same rules
// Open follows when no --driver is given.
func cmdProbe(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("probe")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	vs := drivers.Probe(ctx, e.root)
	if e.json {
		return writeJSON(e.stdout, vs)
	}
	tw := e.table()
	fmt.Fprintln(tw, "BACKEND\tVERDICT\tCHOSEN\tREASON")
	for _, v := range vs {
		verdict := "unusable"
		if v.Usable {
			verdict = "usable"
		}
		chosen := ""
		if v.Chosen {
			chosen = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, verdict, chosen, v.Reason)
	}
	return tw.Flush()
}
