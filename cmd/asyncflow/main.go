// Command asyncflow runs asyncflow peers from the shell: it makes
// identities, serves a signed-call endpoint, sends single messages,
// converts the three records to and from Candid, and runs a demo.
//
// Standard output carries only event lines, one JSON object per line;
// logs and errors go to standard error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `usage: asyncflow <command> [flags]

commands:
  identity new --out FILE     write a new Ed25519 identity (dfx PEM), print its principal
  serve                       run a peer whose handler echoes each payload back
  send                        send one message and wait for its ack, after resuming
                              the messages an earlier send left pending
  candid encode|decode        convert an argument of the three methods
  demo                        two peers over loopback HTTP through a faulty proxy

serve and send keep their messages in <principal>.db in the working directory, so
that a restart resumes them: --store FILE names another file, --memory keeps them
in memory only. One process at a time uses a store file.

` + sendHelp + `
Run "asyncflow <command> -h" for the flags of a command.
`

// sendHelp is what send -h says before the flags, and the usage after the
// list of commands.
const sendHelp = `send first resumes what an earlier send left pending in its store: it resends
the messages to --to and waits for them as for its own. A message the receiver
can no longer accept is forgotten with a warning instead: one older than 24h, the
default dedup window, is not resent, and a resumed one the receiver refuses for
good is forgotten then. Keeping either would fail every later send. So a resumed
message fails the run only when it gets no ack within --wait.
`

// commandHelp holds what a command's -h says before its flags.
var commandHelp = map[string]string{"send": sendHelp}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, newEvents(stdout), stderr)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}

	fmt.Fprintln(stderr, "asyncflow:", oneLine(err))
	if _, ok := errors.AsType[*usageError](err); ok {
		return 2
	}
	return 1
}

func dispatch(ctx context.Context, args []string, ev *events, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "identity":
		return identityCmd(rest, stderr, ev)
	case "serve":
		return serveCmd(ctx, rest, ev, stderr)
	case "send":
		return sendCmd(ctx, rest, ev, stderr)
	case "candid":
		return candidCmd(rest, ev, stderr)
	case "demo":
		return demoCmd(ctx, rest, ev, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stderr, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usagef("unknown command %q", cmd)
}

// newFlags returns a flag set that reports errors instead of exiting;
// its help goes to stderr.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args and refuses positional arguments beyond want. A bad
// flag gives one line; -h prints the flags.
func parse(fs *flag.FlagSet, args []string, want int) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)

	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(out, "usage: asyncflow %s [flags]\n", fs.Name())
		if help := commandHelp[fs.Name()]; help != "" {
			fmt.Fprintf(out, "\n%s\n", help)
		}
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return usagef("%s: %v", fs.Name(), err)
	}
	if fs.NArg() > want {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(want))
	}
	return nil
}

// oneLine renders err on one line. The library's errors name their
// package at each level of wrapping; the command names itself once.
func oneLine(err error) string {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	for _, pkg := range []string{"asyncflow: ", "ic: ", "boltstore: "} {
		msg = strings.TrimPrefix(msg, pkg)
		msg = strings.ReplaceAll(msg, ": "+pkg, ": ")
	}
	return msg
}

// newLogger returns the logger for stderr: debug detail when verbose,
// else from level up.
func newLogger(stderr io.Writer, verbose bool, level slog.Level) *slog.Logger {
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}
