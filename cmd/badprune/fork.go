package main

// extern int bp_fork_role, bp_fork_pid, bp_fork_reports, bp_fork_stderr, bp_fork_tty;
import "C"

import "os"

// The roles fork.c gives this process.
const (
	notForked  = 0
	supervisor = 1
	child      = 2
)

// early is what fork.c did before Go started.
type early struct {
	role            int
	pid             int      // the supervisor's child
	reports, stderr *os.File // the supervisor's ends of the child's pipes
	tty             bool     // the child's stderr was a terminal before the fork
}

func forked() early {
	e := early{role: int(C.bp_fork_role), pid: int(C.bp_fork_pid), tty: C.bp_fork_tty != 0}
	if e.role == supervisor {
		e.reports = os.NewFile(uintptr(C.bp_fork_reports), "child reports")
		e.stderr = os.NewFile(uintptr(C.bp_fork_stderr), "child stderr")
	}
	return e
}
