package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"badprune/internal/progress"
)

// Exit codes, documented in the README.
const (
	exitOK    = 0
	exitError = 1 // bad input or usage
	exitGate  = 3 // a CI gate was violated
)

type ioStreams struct {
	In       io.Reader
	Out, Err io.Writer
}

// gateError reports violated CI gates; the results were still written.
type gateError struct{ msg string }

func (e *gateError) Error() string { return e.msg }

func newRootCmd(ctx context.Context, ios ioStreams) *cobra.Command {
	root := &cobra.Command{
		Use:           "badprune",
		Short:         "Repair a backdoored network by pruning and turn it into a backdoor detector",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
	}
	root.SetContext(ctx)
	root.SetOut(ios.Out)
	root.SetErr(ios.Err)
	root.SetIn(ios.In)
	root.AddCommand(newEvalCmd(ios), newPredictCmd(ios), newRepairCmd(ios), newPlotCmd(ios), newFinetuneCmd(ios))
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see '%s --help')", c.CommandPath(), err, c.CommandPath())
	})
	return root
}

// run executes the command line and returns the exit code; errors reach
// the user here, once.
func run(ctx context.Context, args []string, ios ioStreams) (code int) {
	defer func() {
		// A bug must not end in a stack trace on a user's terminal: one line,
		// and a failing exit. Outputs are written atomically, so none is left
		// half-written.
		if p := recover(); p != nil {
			fmt.Fprintf(ios.Err, "badprune: internal error: %v (please report it)\n", p)
			code = exitError
		}
	}()
	root := newRootCmd(ctx, ios)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if ctx.Err() != nil {
		fmt.Fprintln(ios.Err, "badprune: interrupted; no partial output was left")
		return 130
	}
	fmt.Fprintf(ios.Err, "badprune: %v\n", err)
	var g *gateError
	if errors.As(err, &g) {
		return exitGate
	}
	return exitError
}

// osErr drops the path an os error repeats, for messages that name the
// file themselves.
func osErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// envTTY tells a supervised child that the user's stderr is a terminal
// (its own is a pipe to the supervisor).
const envTTY = "BADPRUNE_STDERR_TTY"

func isTerminal(w io.Writer) bool { return progress.IsTerminal(w) }

// reporter shows progress on w unless quiet: a bar on a terminal, plain
// lines otherwise.
func reporter(w io.Writer, quiet bool) *progress.Reporter {
	if quiet {
		return progress.New(nil, false)
	}
	return progress.New(w, isTerminal(w) || os.Getenv(envTTY) == "1")
}
