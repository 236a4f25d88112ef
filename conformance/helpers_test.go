package conformance

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/stratafs/strata/internal/fstree"
)

// recorder is a testing.TB that keeps failures instead of reporting them,
// to prove the suite's checkers catch what they are meant to.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestExplainedFlagsPathsOutsideTheView(t *testing.T) {
	view := &fstree.Tree{Entries: map[string]*fstree.Entry{
		"/":    {Path: "/", Type: fs.ModeDir},
		"/a":   {Path: "/a", Type: fs.ModeDir},
		"/a/f": {Path: "/a/f"},
	}}
	before := []string{"dir /", "dir /layers", "dir /layers/l1"}
	ok := append(before[:3:3], "dir /layers/l1/a", "file /layers/l1/a/f", "special /layers/l1/wh")
	r := &recorder{TB: t}
	explained(r, before, ok, view)
	if len(r.errs) != 0 {
		t.Errorf("paths of the view flagged: %v", r.errs)
	}
	escaped := append(ok, "file /layers/x")
	explained(r, before, escaped, view)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "file /layers/x") {
		t.Errorf("escape not flagged: %v", r.errs)
	}
}

func TestSameListReportsEveryDifference(t *testing.T) {
	r := &recorder{TB: t}
	if sameList(r, "x", []string{"A /a", "D /b"}, []string{"A /a", "D /b"}) != true || len(r.errs) != 0 {
		t.Fatalf("equal lists reported: %v", r.errs)
	}
	sameList(r, "x", []string{"A /a", "D /b"}, []string{"A /a", "C /c"})
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "missing: D /b") || !strings.Contains(r.errs[0], "unexpected: C /c") {
		t.Errorf("got %v", r.errs)
	}
	r.errs = nil
	sameList(r, "x", []string{"A /a"}, []string{"A /a", "A /a"})
	if len(r.errs) != 1 {
		t.Errorf("duplicate not reported: %v", r.errs)
	}
}

func TestTarListingNamesWhiteoutsAndLinks(t *testing.T) {
	tb := buildTar(t, 0, tDir("d", 0o755), tFile("d/f", "x", 0o644), tHardlink("d/h", "d/f"), tWhiteout("d/gone"), tOpaque("o"))
	got := tarListing(t, tb)
	want := []string{"0 /d/.wh.gone", "0 /d/f", "0 /o/.wh..wh..opq", "1 /d/h => /d/f", "5 /d"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("tarListing = %q, want %q", got, want)
	}
}

func TestBuildTarGivesDistinctNanosecondMtimes(t *testing.T) {
	tb := buildTar(t, 3, tFile("a", "", 0o644), tFile("b", "", 0o644))
	a, b := headerTime(t, tb, "a"), headerTime(t, tb, "b")
	if a.Equal(b) || a.Nanosecond() == 0 || b.Nanosecond() == 0 {
		t.Errorf("mtimes %v and %v: want distinct, with nanoseconds", a, b)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/t\011x`: "/t\tx", `/plain`: "/plain", `/end\`: `/end\`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCasesHaveUniqueNames(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range cases() {
		if seen[c.name] {
			t.Errorf("case %s listed twice", c.name)
		}
		seen[c.name] = true
	}
}
