// Command strata stores image and container layers from a terminal: it
// applies OCI layer tars, exports diffs, mounts layers, lists them, and
// says which storage backend suits this host and why.
//
//	strata [--root DIR] [--driver NAME] [--opt key=value]... [--json] COMMAND [ARGS]
//
// Global flags may also follow the command. Errors are one line on stderr
// and a non-zero exit status (2 for usage errors).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratafs/strata/driver"
	"github.com/stratafs/strata/drivers"
)

const defaultRoot = "/var/lib/strata"

// command is one entry of the command table.
type command struct {
	name    string
	args    string // argument synopsis for usage
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands is the whole CLI. New commands are one entry here and one file.
func commands() []command {
	return []command{
		{"apply", "ID [--parent P] [--writable] < layer.tar", "make layer ID from an OCI layer tar (plain, gzip or zstd) on stdin", cmdApply},
		{"diff", "ID > layer.tar", "write layer ID's changes against its parent as an OCI layer tar", cmdDiff},
		{"mount", "ID", "mount layer ID and print its path; it stays mounted until umount", cmdMount},
		{"umount", "ID", "release a mount made by strata mount", cmdUmount},
		{"ls", "", "list layers", cmdLs},
		{"rm", "ID", "remove layer ID", cmdRm},
		{"probe", "", "say which backends work on this host and which one is chosen", cmdProbe},
		{"status", "", "show the backend's status", cmdStatus},
		{"demo", "", "store a small multi-layer image and run a container layer on it", cmdDemo},
		{"serve", "[--listen ADDR] [--api] [--per-layer]", "serve Prometheus /metrics and /healthz until SIGTERM", cmdServe},
	}
}

// env is what every command gets: the global flags and the standard streams.
type env struct {
	root   string
	driver string
	opts   []string
	json   bool
	// rootSet: --root was given (demo uses its own default otherwise).
	rootSet bool

	stdin          io.Reader
	stdout, stderr io.Writer

	// progressAfter and progressEvery time apply's progress line (zero:
	// after 1s, every 250ms); tests shorten them.
	progressAfter, progressEvery time.Duration
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program minus the process: tests call it with buffers.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{root: defaultRoot, stdin: stdin, stdout: stdout, stderr: stderr}
	fs := e.flagSet("strata")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "strata: %s\n", oneLine(err))
		return 2
	}
	if fs.NArg() == 0 {
		usage(stderr)
		return 2
	}
	name := fs.Arg(0)
	var cmd *command
	for _, c := range commands() {
		if c.name == name {
			cmd = &c
			break
		}
	}
	if name == "help" {
		usage(stdout)
		return 0
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "strata: unknown command %q (try strata help)\n", name)
		return 2
	}
	if err := cmd.run(ctx, e, fs.Args()[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: strata %s %s\n  %s\nglobal flags: --root DIR, --driver NAME, --opt key=value, --json\n", cmd.name, cmd.args, cmd.summary)
			return 0
		}
		fmt.Fprintf(stderr, "strata %s: %s\n", name, oneLine(err))
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: strata [--root DIR] [--driver NAME] [--opt key=value]... [--json] COMMAND [ARGS]\n\ncommands:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nbackends, in priority order: %s\n", strings.Join(drivers.Names(), ", "))
}

// flagSet returns a flag set holding the global flags, so that they are
// accepted both before and after the command name.
func (e *env) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package prints errors and usage itself; run prints one
	// line instead, and the usage on -h.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.Func("root", "root directory (default "+defaultRoot+")", func(s string) error {
		if s == "" {
			return errors.New("empty root")
		}
		e.root, e.rootSet = s, true
		return nil
	})
	fs.StringVar(&e.driver, "driver", e.driver, "backend name (default: probe)")
	fs.Func("opt", "backend option key=value (repeatable)", func(s string) error {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("%q is not key=value", s)
		}
		e.opts = append(e.opts, s)
		return nil
	})
	fs.BoolVar(&e.json, "json", e.json, "print data as JSON")
	return fs
}

// parse parses a command's flags, which may come before, between or after
// its positional arguments, and checks the number of positionals.
func parse(fs *flag.FlagSet, args []string, want int, names string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// flag stops at "--" too; everything after it is positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) != want {
		if want == 0 {
			return nil, usagef("%s takes no arguments, got %q", fs.Name(), strings.Join(pos, " "))
		}
		return nil, usagef("usage: strata %s %s", fs.Name(), names)
	}
	return pos, nil
}

func (e *env) options() drivers.Options {
	return drivers.Options{Driver: e.driver, BackendOptions: e.opts}
}

// open opens the backend for e's root.
func (e *env) open(ctx context.Context) (driver.Driver, error) {
	if err := drivers.ValidateOptions(e.options()); err != nil {
		return nil, usageError{err.Error()}
	}
	return drivers.Open(ctx, e.root, e.options())
}

func (e *env) table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
}

// isTerminal reports whether s (stdin, stdout) is a terminal.
func isTerminal(s any) bool {
	f, ok := s.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// humanSize formats n bytes in binary units: "0 B", "512 B", "1.5 KiB",
// "37 MiB".
func humanSize(n int64) string {
	if n < 0 {
		return "-"
	}
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n) / 1024
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 {
		return fmt.Sprintf("%.1f %ciB", v, units[i])
	}
	return fmt.Sprintf("%.0f %ciB", v, units[i])
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
