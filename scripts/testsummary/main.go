// Command testsummary reads `go test -json` on stdin, shows package
// results and failures as they happen, and ends with a summary: counts,
// every skipped test with its reason, and the output of every failed test.
// A plain `go test` hides skip reasons unless run with -v; this keeps the
// console short and still says what was not tested and why.
//
//	go test -json ./... | go run ./scripts/testsummary -log /var/tmp/test.json
//
// It exits 1 if any test or package failed.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
	// ImportPath names the package of build-output events (Go 1.24+).
	ImportPath string
}

type key struct{ pkg, test string }

func main() {
	logPath := flag.String("log", "", "also write the raw JSON here")
	flag.Parse()
	var in io.Reader = os.Stdin
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(2)
		}
		defer f.Close()
		in = io.TeeReader(os.Stdin, f)
	}
	os.Exit(summarize(in, os.Stdout))
}

func summarize(in io.Reader, out io.Writer) int {
	output := map[key][]string{}
	var passed, failed, skipped []key
	var pkgOK, pkgFail, pkgNone int
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Not test2json (a build error printed by go itself).
			fmt.Fprintln(out, string(line))
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "build-output":
			// Compiler errors: show them now, they explain the FAIL.
			fmt.Fprint(out, e.Output)
		case "output":
			if !strings.HasPrefix(e.Output, "=== ") {
				output[k] = append(output[k], e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				switch {
				case e.Action == "fail":
					pkgFail++
					fmt.Fprintf(out, "FAIL  %s (%.1fs)\n", e.Package, e.Elapsed)
				case e.Action == "skip":
					pkgNone++
				default:
					pkgOK++
					fmt.Fprintf(out, "ok    %s (%.1fs)\n", e.Package, e.Elapsed)
				}
				if e.Action == "fail" {
					failed = append(failed, k)
				}
				continue
			}
			switch e.Action {
			case "pass":
				passed = append(passed, k)
				delete(output, k)
			case "fail":
				failed = append(failed, k)
				fmt.Fprintf(out, "  --- FAIL %s %s\n", e.Package, e.Test)
			case "skip":
				skipped = append(skipped, k)
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "testsummary: reading:", err)
		return 2
	}

	fmt.Fprintf(out, "\n== go test summary\n")
	fmt.Fprintf(out, "packages: %d ok, %d failed, %d without tests\n", pkgOK, pkgFail, pkgNone)
	// The plain "tests: N passed, N failed, N skipped" form is what CI
	// reads as the closing count; subtests are included.
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", len(passed), countTests(failed), len(skipped))
	if len(skipped) > 0 {
		fmt.Fprintf(out, "\nskipped, and why:\n")
		for _, k := range sorted(skipped) {
			fmt.Fprintf(out, "  %s %s: %s\n", short(k.pkg), k.test, reason(output[k]))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(out, "\nfailed:\n")
		for _, k := range sorted(failed) {
			name := k.test
			if name == "" {
				name = "(package)"
			}
			fmt.Fprintf(out, "--- %s %s\n", k.pkg, name)
			lines := output[k]
			if len(lines) > 60 {
				lines = append([]string{"    ...\n"}, lines[len(lines)-60:]...)
			}
			for _, l := range lines {
				fmt.Fprint(out, l)
			}
		}
		fmt.Fprintln(out, "RESULT: FAIL")
		return 1
	}
	fmt.Fprintln(out, "RESULT: PASS")
	return 0
}

func countTests(ks []key) int {
	n := 0
	for _, k := range ks {
		if k.test != "" {
			n++
		}
	}
	return n
}

func sorted(ks []key) []key {
	out := append([]key(nil), ks...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].pkg != out[j].pkg {
			return out[i].pkg < out[j].pkg
		}
		return out[i].test < out[j].test
	})
	return out
}

func short(pkg string) string {
	return strings.TrimPrefix(pkg, "github.com/stratafs/strata/")
}

// reason is the skip message: the test's own output minus the status line.
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		// "file_test.go:12: message" -> "message (file_test.go:12)"
		if i := strings.Index(l, ": "); i > 0 && strings.Contains(l[:i], ".go:") {
			l = l[i+2:] + " (" + l[:i] + ")"
		}
		parts = append(parts, l)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	s := strings.Join(parts, " / ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
