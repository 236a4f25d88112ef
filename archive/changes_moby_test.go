package archive

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestChangesListsDirectoriesLikeDockerDiff: a directory holding an added,
// removed or modified entry is itself listed as modified, as moby's
// Changes and docker diff list it ("C /etc" above "A /etc/new"); the root
// is not, nor an untouched directory.
func TestChangesListsDirectoriesLikeDockerDiff(t *testing.T) {
	sb := sandbox(t)
	parent, layer := filepath.Join(sb, "parent"), filepath.Join(sb, "layer")
	for _, dir := range []string{parent, layer} {
		for _, d := range []string{"etc", "var/log", "var/lib/x", "usr", "srv/deep/er"} {
			must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
		}
		must(t, os.WriteFile(filepath.Join(dir, "var/log/old"), []byte("old\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "srv/deep/er/f"), []byte("f\n"), 0o644))
	}
	// Same mtimes for the untouched parts of both trees.
	must(t, os.WriteFile(filepath.Join(layer, "etc/new"), []byte("new\n"), 0o644))
	must(t, os.Remove(filepath.Join(layer, "var/log/old")))
	must(t, os.Chmod(filepath.Join(layer, "srv/deep/er/f"), 0o600))
	ch, err := Changes(context.Background(), parent, layer)
	must(t, err)
	var got []string
	for _, c := range ch {
		got = append(got, c.String())
	}
	want := []string{"C /etc", "A /etc/new", "C /srv", "C /srv/deep", "C /srv/deep/er", "C /srv/deep/er/f", "C /var", "C /var/log", "D /var/log/old"}
	if !slices.Equal(got, want) {
		t.Errorf("Changes =\n\t%v\nwant\n\t%v", got, want)
	}
	// Native backends finish with CompleteChanges: the same list from
	// the leaves alone, duplicates dropped.
	leaves := []Change{{"/var/log/old", ChangeDelete}, {"/etc/new", ChangeAdd}, {"/srv/deep/er/f", ChangeModify}, {"/etc/new", ChangeAdd}, {"/etc", ChangeModify}}
	got = got[:0]
	for _, c := range CompleteChanges(leaves) {
		got = append(got, c.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("CompleteChanges =\n\t%v\nwant\n\t%v", got, want)
	}
}
