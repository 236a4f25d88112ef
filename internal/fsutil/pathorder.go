package fsutil

import "strings"

// ComparePaths orders slash-separated paths component by component, so a
// directory sorts right before its contents ("/a", "/a/b", "/a-b"), which
// plain string order does not do ('-' sorts before '/'). Leading and
// trailing slashes are ignored. It is the order of Changes and of tars.
func ComparePaths(a, b string) int {
	a, b = strings.Trim(a, "/"), strings.Trim(b, "/")
	for {
		a0, arest, aok := strings.Cut(a, "/")
		b0, brest, bok := strings.Cut(b, "/")
		if c := strings.Compare(a0, b0); c != 0 {
			return c
		}
		switch {
		case !aok && !bok:
			return 0
		case !aok:
			return -1
		case !bok:
			return 1
		}
		a, b = arest, brest
	}
}
