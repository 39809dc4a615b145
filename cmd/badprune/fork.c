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
// its role from bp_fork_role.
#define _GNU_SOURCE // pipe2
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int bp_fork_role;    // 0: not forked, 1: the supervisor, 2: the child
int bp_fork_pid;     // the supervisor's child
int bp_fork_reports; // the supervisor's end of the child's reports
int bp_fork_stderr;  // the supervisor's end of the child's stderr
int bp_fork_tty;     // in the child: its stderr was a terminal before the fork

static int has_env(char **envp, const char *name) {
	const size_t n = strlen(name);
	for (; *envp; envp++)
		if (!strncmp(*envp, name, n) && (*envp)[n] == '=') return 1;
	return 0;
}

__attribute__((constructor)) static void bp_fork_early(int argc, char **argv, char **envp) {
	if (argc < 1 || !argv || !argv[0] || !envp) return;
	// Test binaries of this package (badprune.test) run tests, not the command.
	const size_t n = strlen(argv[0]);
	if (n >= 5 && !strcmp(argv[0] + n - 5, ".test")) return;
	// Already a child (of an exec'ing supervisor), or asked not to supervise.
	if (has_env(envp, "BADPRUNE_CHILD") || has_env(envp, "BADPRUNE_GUARD_FD") ||
	    has_env(envp, "BADPRUNE_NO_SUPERVISOR"))
		return;
	int rp[2], ep[2]; // reports, stderr
	if (pipe2(rp, O_CLOEXEC)) return;
	if (pipe2(ep, O_CLOEXEC)) {
		close(rp[0]);
		close(rp[1]);
		return;
	}
	const int tty = isatty(2);
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
		// through the supervisor. If the supervisor dies before it can
		// pass signals on (Go not started yet), the child is told to stop.
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
