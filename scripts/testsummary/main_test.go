package main

import (
	"bytes"
	"strings"
	"testing"
)

const stream = `{"Action":"start","Package":"p/a"}
{"Action":"run","Package":"p/a","Test":"TestOK"}
{"Action":"output","Package":"p/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p/a","Test":"TestOK","Elapsed":0}
{"Action":"run","Package":"p/a","Test":"TestSkip"}
{"Action":"output","Package":"p/a","Test":"TestSkip","Output":"    a_test.go:9: no widget on this host\n"}
{"Action":"output","Package":"p/a","Test":"TestSkip","Output":"--- SKIP: TestSkip (0.00s)\n"}
{"Action":"skip","Package":"p/a","Test":"TestSkip","Elapsed":0}
{"Action":"pass","Package":"p/a","Elapsed":0.5}
{"ImportPath":"p/b [p/b.test]","Action":"build-output","Output":"./b_test.go:3:1: undefined: x\n"}
{"Action":"fail","Package":"p/b","Elapsed":0,"FailedBuild":"p/b [p/b.test]"}
{"Action":"run","Package":"p/c","Test":"TestBad"}
{"Action":"output","Package":"p/c","Test":"TestBad","Output":"    c_test.go:4: boom\n"}
{"Action":"fail","Package":"p/c","Test":"TestBad","Elapsed":0}
{"Action":"fail","Package":"p/c","Elapsed":0.1}
{"Action":"skip","Package":"p/d"}
`

func TestSummarize(t *testing.T) {
	var out bytes.Buffer
	code := summarize(strings.NewReader(stream), &out)
	s := out.String()
	if code != 1 {
		t.Errorf("exit %d with failures, want 1", code)
	}
	for _, want := range []string{
		"ok    p/a (0.5s)",
		"undefined: x",
		"FAIL  p/b",
		"packages: 1 ok, 2 failed, 1 without tests",
		"tests: 1 passed, 1 failed, 1 skipped",
		"p/a TestSkip: no widget on this host (a_test.go:9)",
		"c_test.go:4: boom",
		"RESULT: FAIL",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}

func TestSummarizeAllPass(t *testing.T) {
	var out bytes.Buffer
	in := `{"Action":"pass","Package":"p/a","Test":"T"}` + "\n" + `{"Action":"pass","Package":"p/a"}` + "\n"
	if code := summarize(strings.NewReader(in), &out); code != 0 || !strings.Contains(out.String(), "RESULT: PASS") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
}
