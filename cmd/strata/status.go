package main

import (
	"context"
	"fmt"
	"strings"
)

type statusJSON struct {
	Driver     string            `json:"driver"`
	Root       string            `json:"root"`
	BackingFS  string            `json:"backingFS"`
	Layers     int               `json:"layers"`
	NativeDiff bool              `json:"nativeDiff"`
	Info       []statusInfoEntry `json:"info"`
}

type statusInfoEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// cmdStatus prints the Status of the backend the root opens with.
func cmdStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("status")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	d, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	st := d.Status(ctx)
	if e.json {
		out := statusJSON{st.Driver, st.Root, st.BackingFS, st.Layers, st.NativeDiff, []statusInfoEntry{}}
		for _, kv := range st.Info {
			out.Info = append(out.Info, statusInfoEntry{kv.Key, kv.Value})
		}
		return writeJSON(e.stdout, out)
	}
	tw := e.table()
	fmt.Fprintf(tw, "Driver:\t%s\n", st.Driver)
	fmt.Fprintf(tw, "Root:\t%s\n", st.Root)
	fmt.Fprintf(tw, "Backing filesystem:\t%s\n", st.BackingFS)
	fmt.Fprintf(tw, "Layers:\t%d\n", st.Layers)
	fmt.Fprintf(tw, "Native diff:\t%s\n", yesNo(st.NativeDiff))
	// Backends may repeat the structured fields in Info; print them once.
	shown := map[string]bool{"driver": true, "root": true, "backing filesystem": true, "layers": true, "native diff": true}
	for _, kv := range st.Info {
		if k := strings.ToLower(kv.Key); !shown[k] {
			shown[k] = true
			fmt.Fprintf(tw, "%s:\t%s\n", kv.Key, kv.Value)
		}
	}
	return tw.Flush()
}
