package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/stratafs/strata/driver"
)

type layerJSON struct {
	ID       string            `json:"id"`
	Parent   string            `json:"parent,omitempty"`
	Writable bool              `json:"writable"`
	Size     int64             `json:"size"`
	Created  time.Time         `json:"created"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// cmdLs lists the layers of the root, sorted by ID.
func cmdLs(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("ls")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	d, err := e.open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	layers, err := listLayers(ctx, d)
	if err != nil {
		return err
	}
	if e.json {
		out := make([]layerJSON, len(layers))
		for i, l := range layers {
			out[i] = layerJSON{l.ID, l.Parent, l.Writable, l.Size, l.Created.UTC(), l.Labels}
		}
		return writeJSON(e.stdout, out)
	}
	tw := e.table()
	fmt.Fprintln(tw, "ID\tPARENT\tRW\tSIZE\tCREATED")
	for _, l := range layers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.ID, dash(l.Parent), yesNo(l.Writable), humanSize(l.Size), l.Created.UTC().Format(time.DateTime))
	}
	return tw.Flush()
}

// listLayers returns the driver's layers with their current sizes. The
// size comes from DiffSize, which backends answer from their own records
// or counters, so this stays cheap on large layers.
func listLayers(ctx context.Context, d driver.Driver) ([]driver.LayerInfo, error) {
	l, ok := d.(driver.Lister)
	if !ok {
		return nil, fmt.Errorf("backend %s cannot list its layers", d.Name())
	}
	layers, err := l.Layers(ctx)
	if err != nil {
		return nil, err
	}
	for i := range layers {
		if n, err := d.DiffSize(ctx, layers[i].ID); err == nil {
			layers[i].Size = n
		}
	}
	return treeOrder(layers), nil
}

// treeOrder puts every layer after its parent (base layers first, then
// their children depth first, siblings by ID), so that an image reads top
// to bottom as it was built.
func treeOrder(layers []driver.LayerInfo) []driver.LayerInfo {
	byParent := map[string][]driver.LayerInfo{}
	ids := map[string]bool{}
	for _, l := range layers {
		ids[l.ID] = true
	}
	for _, l := range layers {
		p := l.Parent
		if !ids[p] {
			p = "" // parent missing from the list: show it as a root
		}
		byParent[p] = append(byParent[p], l)
	}
	out := make([]driver.LayerInfo, 0, len(layers))
	var walk func(parent string)
	walk = func(parent string) {
		kids := byParent[parent]
		sort.Slice(kids, func(i, j int) bool { return kids[i].ID < kids[j].ID })
		for _, k := range kids {
			out = append(out, k)
			walk(k.ID)
		}
	}
	walk("")
	if len(out) < len(layers) {
		// Only a parent cycle, which the store refuses, could leave
		// layers unvisited; list them rather than hide them.
		seen := map[string]bool{}
		for _, l := range out {
			seen[l.ID] = true
		}
		for _, l := range layers {
			if !seen[l.ID] {
				out = append(out, l)
			}
		}
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
