package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
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

// interrupted is the message of a run stopped by a signal: every command
// stages its outputs and removes them when it does not finish.
const interrupted = "badprune: interrupted; this run left no output, and files that were in its output folder before are untouched"

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
		fmt.Fprintln(ios.Err, interrupted)
		return 130
	}
	fmt.Fprintf(ios.Err, "badprune: %s\n", userMessage(err))
	var g *gateError
	if errors.As(err, &g) {
		return exitGate
	}
	return exitError
}

// envTTY tells a supervised child that the user's stderr is a terminal
// (its own is a pipe to the supervisor).
const envTTY = "BADPRUNE_STDERR_TTY"
