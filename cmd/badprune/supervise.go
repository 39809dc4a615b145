package main

import (
	"cmp"
	"fmt"
	"os"
	"syscall"

	"badprune/internal/guard"
	"badprune/internal/h5"
	"badprune/internal/progress"
)

// supervise runs badprune's work in a child process. A fault in the HDF5 C
// library on a damaged file kills the child, not the supervisor, which then
// has the child's temporaries removed and reports one line naming the file
// being read. ok is false when no child could be started (the caller then
// does the work itself).
func supervise(args []string) (code int, ok bool) {
	exe, err := os.Executable()
	if err != nil {
		return 0, false
	}
	env := []string{envChild + "=1"}
	if progress.IsTerminal(os.Stderr) {
		env = append(env, envTTY+"=1")
	}
	out, ok := guard.Supervise(exe, args, env, os.Stderr)
	if !ok {
		return 0, false
	}
	return outcome(out), true
}

// superviseForked is supervise for the child fork.c started.
func superviseForked(e early) int {
	return outcome(guard.Adopt(e.pid, e.reports, e.stderr, os.Stderr))
}

// outcome reports how the child ended, in one line unless it ended
// normally (its own messages were relayed), and returns the exit code.
func outcome(out guard.Outcome) int {
	switch {
	case out.Hung:
		fmt.Fprintf(os.Stderr, "badprune: %s: %s\n", cmp.Or(out.Reading, "an input file"), guard.HungProblem(h5.Patience))
		return exitError
	case out.Signal == syscall.SIGKILL:
		fmt.Fprintln(os.Stderr, "badprune: killed (SIGKILL; out of memory?); this run left no output, and files that were in its output folder before are untouched")
		return 128 + int(out.Signal)
	case out.Crashed:
		what := "an input file"
		if out.Reading != "" {
			what = out.Reading
		}
		fmt.Fprintf(os.Stderr, "badprune: %s: the HDF5 library crashed reading it (a damaged or hostile file?); no output was written\n", what)
		return exitError
	case out.Signal != 0:
		fmt.Fprintln(os.Stderr, interrupted)
		return 128 + int(out.Signal)
	}
	return out.Code
}
