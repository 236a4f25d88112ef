//go:build linux && cgo

package btrfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// nested is a subvolume created inside another one (by a container, or
// by a nested container runtime).
type nested struct {
	id   uint64
	path string // absolute
}

// nestedSubvols lists the subvolumes directly inside the subvolume at
// path, from its ROOT_REF items in the root tree. This is one tree search
// instead of the walk over every directory of the layer that
// containerd/btrfs's SubvolDelete does to find them.
func nestedSubvols(path string) ([]nested, error) {
	f, err := openDir(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := getSubvolInfo(f)
	if err != nil {
		return nil, err
	}
	type ref struct {
		id, dirid uint64
		name      string
	}
	var refs []ref
	err = treeSearch(f, searchKey{
		TreeID:      rootTreeID,
		MinObjectID: info.TreeID, MaxObjID: info.TreeID,
		MinType: keyRootRef, MaxType: keyRootRef,
		MaxOffset: ^uint64(0), MaxTransid: ^uint64(0),
	}, func(it item) error {
		if it.Type != keyRootRef || len(it.Data) < 18 {
			return nil
		}
		n := int(binary.LittleEndian.Uint16(it.Data[16:]))
		if 18+n > len(it.Data) {
			return fmt.Errorf("short ROOT_REF item")
		}
		refs = append(refs, ref{id: it.Offset, dirid: binary.LittleEndian.Uint64(it.Data), name: string(it.Data[18 : 18+n])})
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]nested, 0, len(refs))
	for _, r := range refs {
		dir, err := inoLookup(f, info.TreeID, r.dirid)
		if err != nil {
			return nil, err
		}
		out = append(out, nested{id: r.id, path: filepath.Join(path, dir, r.name)})
	}
	return out, nil
}

// deleteSubvol deletes the subvolume at path and every subvolume nested
// in it, deepest first. A read-only subvolume that holds nested ones is
// made writable first: their directory entries live in it.
func deleteSubvol(ctx context.Context, path string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	kids, err := nestedSubvols(path)
	if err != nil {
		return err
	}
	if len(kids) > 0 {
		if err := setReadOnly(path, false); err != nil {
			return err
		}
		for _, k := range kids {
			if err := deleteSubvol(ctx, k.path); err != nil {
				return err
			}
		}
	}
	dir, err := openDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return snapDestroy(dir, filepath.Base(path))
}

// removeEntry deletes whatever a sweep finds at path: a subvolume, or a
// plain directory or file left by a step that failed before it became one.
func removeEntry(ctx context.Context, path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == firstFreeID {
		return deleteSubvol(ctx, path)
	}
	return os.RemoveAll(path)
}

// moveSubvol renames a subvolume, clearing its read-only flag first: the
// kernel refuses to move a read-only one (its ".." changes). Callers that
// need the flag set it again in the new place.
func moveSubvol(from, to string) error {
	if err := setReadOnly(from, false); err != nil {
		return err
	}
	return os.Rename(from, to)
}
