package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stratafs/strata/driver"
)

func put(t *testing.T, s *Store, id, parent string) {
	t.Helper()
	release, err := s.Reserve(id, parent)
	require.NoError(t, err)
	defer release()
	require.NoError(t, s.Put(Record{ID: id, Parent: parent, State: Ready, Created: time.Unix(1, 0).UTC()}))
}

func TestReserveRules(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	put(t, s, "base", "")

	_, err = s.Reserve("base", "")
	require.ErrorIs(t, err, driver.ErrLayerExists)
	_, err = s.Reserve("child", "missing")
	require.ErrorIs(t, err, driver.ErrLayerNotFound)

	release, err := s.Reserve("child", "base")
	require.NoError(t, err)
	_, err = s.Reserve("child", "base")
	require.ErrorIs(t, err, driver.ErrLayerExists, "a pending ID is taken")
	require.Equal(t, []string{"child"}, s.Children("base"), "pending children count")
	require.ErrorIs(t, s.Delete("base"), driver.ErrHasChildren, "parent of a pending layer cannot go")
	require.False(t, s.Exists("child"))
	release()
	require.Empty(t, s.Children("base"))
	require.NoError(t, s.Delete("base"))
	require.ErrorIs(t, s.Delete("base"), driver.ErrLayerNotFound)
}

func TestRecordsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	put(t, s, "a", "")
	put(t, s, "b", "a")
	require.NoError(t, s.Update("b", func(r *Record) { r.Size = 42; r.Extra = map[string]string{"k": "v"} }))
	// A temp file left by a write that a crash interrupted.
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".c.json.tmp-123"), []byte("{"), 0o600))

	s2, err := Open(dir)
	require.NoError(t, err)
	require.Equal(t, s.List(), s2.List())
	b, ok := s2.Get("b")
	require.True(t, ok)
	require.Equal(t, int64(42), b.Size)
	require.Equal(t, "v", b.Extra["k"])
	chain, err := s2.Chain("b")
	require.NoError(t, err)
	require.Equal(t, []string{"b", "a"}, chain)
	_, err = os.Stat(filepath.Join(dir, ".c.json.tmp-123"))
	require.ErrorIs(t, err, os.ErrNotExist, "temp file swept")
}

func TestGetReturnsACopy(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	release, _ := s.Reserve("a", "")
	require.NoError(t, s.Put(Record{ID: "a", State: Ready, Labels: map[string]string{"x": "1"}}))
	release()
	r, _ := s.Get("a")
	r.Labels["x"] = "changed"
	r2, _ := s.Get("a")
	require.Equal(t, "1", r2.Labels["x"])
}

func TestOpenRejectsDamagedRecord(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.json"), []byte(`{"id":"b"}`), 0o600))
	_, err := Open(dir)
	require.ErrorContains(t, err, "names layer")
}

func TestSweepRemovesOnlyUnrecordedData(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	put(t, s, "kept", "")
	data := t.TempDir()
	for _, n := range []string{"kept", "orphan", "staging"} {
		require.NoError(t, os.Mkdir(filepath.Join(data, n), 0o700))
	}
	removed, err := s.Sweep(context.Background(), data, map[string]bool{"staging": true}, func(name string) error {
		return os.RemoveAll(filepath.Join(data, name))
	})
	require.NoError(t, err)
	require.Equal(t, []string{"orphan"}, removed)
	ents, _ := os.ReadDir(data)
	require.Len(t, ents, 2)
}

func TestReadyAndInfosLeaveOutHalfMadeLayers(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	put(t, s, "b", "")
	put(t, s, "a", "")
	require.NoError(t, s.Update("b", func(r *Record) { r.State = Applying }))
	require.Len(t, s.Ready(), 1)
	infos := s.Infos()
	require.Len(t, infos, 1)
	require.Equal(t, "a", infos[0].ID)
	require.Len(t, s.List(), 2, "List still has every record")
}

func TestBeginApply(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	put(t, s, "a", "")

	_, err = s.BeginApply("missing", 0)
	require.ErrorIs(t, err, driver.ErrLayerNotFound)
	_, err = s.BeginApply("a", 1)
	require.ErrorIs(t, err, driver.ErrLayerInUse)

	release, err := s.Reserve("child", "a")
	require.NoError(t, err)
	_, err = s.BeginApply("a", 0)
	require.ErrorIs(t, err, driver.ErrHasChildren, "a child being created counts")
	release()

	was, err := s.BeginApply("a", 0)
	require.NoError(t, err)
	require.Equal(t, Ready, was.State)
	require.False(t, s.Exists("a"), "applying is not complete")
	_, err = s.Reserve("child", "a")
	require.ErrorIs(t, err, driver.ErrLayerNotFound, "no child of a layer being applied")
	_, err = s.BeginApply("a", 0)
	require.ErrorIs(t, err, driver.ErrLayerNotFound, "one apply at a time")

	// The mark is on disk: a crash now leaves the layer for New to remove.
	s2, err := Open(dir)
	require.NoError(t, err)
	r, _ := s2.Get("a")
	require.Equal(t, Applying, r.State)
}
