package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns both ends of a new pseudo-terminal, so that a test can
// give a command a stdout that is a terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	// Non-blocking, so that os.File polls it and read deadlines work.
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// gatedReader hands out the first half of data, then waits for open to be
// closed before the rest: an apply that stays busy until the test saw the
// progress line.
type gatedReader struct {
	data []byte
	half int
	open chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if len(g.data) == 0 {
		return 0, io.EOF
	}
	if g.half <= 0 {
		<-g.open
	}
	n := copy(p, g.data)
	if g.half > 0 && n > g.half {
		n = g.half
	}
	g.data = g.data[n:]
	g.half -= n
	return n, nil
}

func TestApplyProgressOnTerminal(t *testing.T) {
	master, slave := openPTY(t)
	root := backendRoot(t, "vfs")
	data := baseTar(t)
	in := &gatedReader{data: data, half: len(data) / 2, open: make(chan struct{})}
	e := &env{root: root, driver: "vfs", stdin: in, stdout: slave, stderr: io.Discard,
		progressAfter: time.Nanosecond, progressEvery: time.Millisecond}

	done := make(chan error, 1)
	go func() { done <- cmdApply(context.Background(), e, []string{"base"}) }()

	// Read the terminal until the progress line shows, then let the
	// apply finish.
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	master.SetReadDeadline(time.Now().Add(30 * time.Second))
	for !strings.Contains(seen.String(), "applying: ") {
		n, err := master.Read(buf)
		if err != nil {
			t.Fatalf("reading the terminal: %v (got %q)", err, seen.String())
		}
		seen.Write(buf[:n])
	}
	close(in.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	slave.Close()
	rest, _ := io.ReadAll(master) // EIO once the slave is closed
	out := seen.String() + string(rest)
	if !strings.Contains(out, "\r\033[K") || !strings.Contains(out, "base: applied ") {
		t.Errorf("terminal output %q: want a progress line, erased, then the result", out)
	}
	if i, j := strings.LastIndex(out, "applying: "), strings.LastIndex(out, "\r\033[Kbase: applied"); i < 0 || j < i {
		t.Errorf("progress line not erased before the result: %q", out)
	}
}

func TestApplyNoProgressWhenPiped(t *testing.T) {
	root := backendRoot(t, "vfs")
	var out bytes.Buffer
	e := &env{root: root, driver: "vfs", stdin: bytes.NewReader(baseTar(t)), stdout: &out, stderr: io.Discard,
		progressAfter: time.Nanosecond, progressEvery: time.Millisecond}
	if err := cmdApply(context.Background(), e, []string{"base"}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "applying") || strings.Contains(out.String(), "\r") {
		t.Errorf("progress written to a pipe: %q", out.String())
	}
}

func TestTarStreamsRefuseTerminals(t *testing.T) {
	_, slave := openPTY(t)
	root := backendRoot(t, "vfs")
	e := &env{root: root, driver: "vfs", stdin: slave, stdout: io.Discard, stderr: io.Discard}
	err := cmdApply(context.Background(), e, []string{"base"})
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "stdin is a terminal") {
		t.Errorf("apply with a terminal on stdin: %v", err)
	}
	e = &env{root: root, driver: "vfs", stdin: bytes.NewReader(nil), stdout: slave, stderr: io.Discard}
	err = cmdDiff(context.Background(), e, []string{"base"})
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "stdout is a terminal") {
		t.Errorf("diff with a terminal on stdout: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "vfs")); err == nil {
		t.Errorf("refused commands opened the backend")
	}
}
