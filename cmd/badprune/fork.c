// The supervisor's child, forked before Go starts.
//
// badprune does its work in a child process watched by a supervisor
// (guard.Supervise: a fault in the HDF5 C library kills the child, and the
// supervisor cleans up and names the file). Starting that child with exec
// costs a second start of this program (loading 38 shared libraries, Go's
// runtime and package initialisation: about 45 ms), before any work. A
// constructor forks instead, before Go's runtime exists in either process
// (the one moment a fork without exec is safe): the child goes on to
// initialise Go and do the work, the parent to initialise Go and adopt it
// (guard.Adopt), the two starts side by side on two cores. main learns
// its role from bp_fork_role. Only a program named badprune forks so; a
// copy of another name, or a failed fork, starts the child with exec.
#define _GNU_SOURCE // pipe2, program_invocation_short_name
#include <errno.h> // program_invocation_short_name
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

int bp_fork_role;    // 0: not forked, 1: the supervisor, 2: the child
int bp_fork_pid;     // the supervisor's child
int bp_fork_reports; // the supervisor's end of the child's reports
int bp_fork_stderr;  // the supervisor's end of the child's stderr
int bp_fork_tty;     // in the child: its stderr was a terminal before the fork

// set is whether the environment variable name is set and not empty, as
// Go's os.Getenv(name) != "" sees it.
static int set(const char *name) {
	const char *v = getenv(name);
	return v && *v;
}

__attribute__((constructor)) static void bp_fork_early(void) {
	// Only the command itself: a program of another name (a test binary
	// of this package, badprune.test, runs tests; a renamed copy) starts
	// its child with exec, as when this fork fails.
	if (!program_invocation_short_name || strcmp(program_invocation_short_name, "badprune")) return;
	// Already a child (of an exec'ing supervisor), or asked not to supervise.
	if (set("BADPRUNE_CHILD") || set("BADPRUNE_GUARD_FD") || set("BADPRUNE_NO_SUPERVISOR")) return;
	int rp[2], ep[2]; // reports, stderr
	if (pipe2(rp, O_CLOEXEC)) return;
	if (pipe2(ep, O_CLOEXEC)) {
		close(rp[0]);
		close(rp[1]);
		return;
	}
	struct stat st; // a terminal as progress.IsTerminal sees one: a character device
	const int tty = fstat(2, &st) == 0 && S_ISCHR(st.st_mode);
	const pid_t parent = getpid();
	pid_t pid = -1;
	if (rp[0] > 2 && rp[1] > 2 && ep[0] > 2 && ep[1] > 2) pid = fork(); // else 0..2 were not all open
	if (pid < 0) { // Go's side starts the child with exec
		close(rp[0]);
		close(rp[1]);
		close(ep[0]);
		close(ep[1]);
		return;
	}
	if (pid == 0) {
		// Its own process group: a terminal's Ctrl-C reaches it once,
		// through the supervisor. Whenever the supervisor dies (as it
		// would from a signal before its Go code passes signals on), the
		// child is told to stop.
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent) _exit(128 + SIGTERM);
		if (dup2(ep[1], 2) < 0 || dup2(rp[1], 3) < 0) _exit(70);
		fcntl(3, F_SETFD, 0); // dup2 onto itself keeps close-on-exec
		const int fds[4] = {rp[0], rp[1], ep[0], ep[1]};
		for (int i = 0; i < 4; i++)
			if (fds[i] != 2 && fds[i] != 3) close(fds[i]);
		bp_fork_role = 2;
		bp_fork_tty = tty;
		return;
	}
	close(rp[1]);
	close(ep[1]);
	bp_fork_role = 1;
	bp_fork_pid = pid;
	bp_fork_reports = rp[0];
	bp_fork_stderr = ep[0];
}
