package fsutil

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestComparePathsPutsDirectoriesBeforeTheirContents(t *testing.T) {
	got := []string{"/a-b", "/b", "/a/b/c", "/a", "/a/b", "/a.b", "/"}
	slices.SortFunc(got, ComparePaths)
	require.Equal(t, []string{"/", "/a", "/a/b", "/a/b/c", "/a-b", "/a.b", "/b"}, got)
	require.Zero(t, ComparePaths("a/b/", "/a/b"))
}
