package guard

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// Outcome is how a supervised child ended.
type Outcome struct {
	Code    int            // its exit code (0 when it was signalled)
	Signal  syscall.Signal // the signal that ended it, if any
	Crashed bool           // it died of a fault (a signal other than SIGINT/SIGTERM, or a runtime crash report)
	Reading string         // the input it last reported reading
	Hung    bool           // it reported being stuck in a library call, then killed itself
}

// Supervise runs exe with args as a child, with env added to this
// process's environment and the report pipe on descriptor 3. The child's
// stderr is relayed to stderr up to a runtime crash report, which is
// swallowed. SIGINT and SIGTERM sent to this process are passed on; the
// child has its own process group, so a terminal's Ctrl-C reaches it once,
// through here. Whatever way the child ends, the temporaries it left
// registered are cleaned up. ok is false when no child could be started.
func Supervise(exe string, args, env []string, stderr io.Writer) (out Outcome, ok bool) {
	pr, pw, err := os.Pipe() // the child's reports
	if err != nil {
		return out, false
	}
	er, ew, err := os.Pipe() // the child's stderr
	if err != nil {
		pr.Close()
		pw.Close()
		return out, false
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), env...), EnvFD+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, ew
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	err = cmd.Start()
	pw.Close()
	ew.Close()
	if err != nil {
		pr.Close()
		er.Close()
		return out, false
	}
	return supervise(cmd.Process, sigs, pr, er, stderr), true
}

// Adopt is Supervise for a child already running: process pid, forked
// before this process's Go runtime started (so before it could start one
// itself), with the read ends of its report pipe and of its stderr.
func Adopt(pid int, reports, childStderr *os.File, stderr io.Writer) Outcome {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	p, err := os.FindProcess(pid) // on Unix, always found
	if err != nil {
		panic(err)
	}
	return supervise(p, sigs, reports, childStderr, stderr)
}

// supervise passes sigs on to the child p, relays its stderr er, follows
// its reports pr until it ends, and cleans up after it. It closes pr and er.
func supervise(p *os.Process, sigs chan os.Signal, pr, er *os.File, stderr io.Writer) Outcome {
	defer pr.Close()
	defer er.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case s := <-sigs:
				p.Signal(s)
			case <-stop:
				return
			}
		}
	}()
	w := Watch(pr)
	relayed := make(chan bool)
	go func() { relayed <- relay(stderr, er) }()
	st, werr := p.Wait()
	crashed := <-relayed
	w.Wait()
	w.Cleanup() // after success nothing is registered any more

	out := Outcome{Code: -1, Reading: w.Reading(), Crashed: crashed, Hung: w.Hung()}
	if werr != nil {
		out.Crashed = true // cannot happen for a child of this process
		return out
	}
	out.Code = st.ExitCode()
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		out.Code, out.Signal = 0, ws.Signal()
		out.Crashed = out.Signal != syscall.SIGINT && out.Signal != syscall.SIGTERM
	}
	return out
}

// crashMarks begin the Go runtime's report of a fatal fault; from such a
// line on, the child's stderr is not shown.
var crashMarks = [][]byte{[]byte("SIGSEGV:"), []byte("SIGBUS:"), []byte("SIGILL:"), []byte("SIGFPE:"), []byte("SIGABRT:"),
	[]byte("fatal error:"), []byte("panic:"), []byte("runtime:"), []byte("unexpected fault")}

// relay copies r to w until a line begins like a runtime crash report; it
// reports whether one did. Bytes after a newline are held back only until
// they cannot begin such a line, so progress bars redrawn with carriage
// returns pass through at once.
func relay(w io.Writer, r io.Reader) bool {
	buf := make([]byte, 4096)
	var held []byte // the start of the current line, when it might be a mark
	atLine := true
	crashed := false
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if crashed {
				continue
			}
			if atLine {
				held = append(held, b)
				switch mayBeMark(held) {
				case 2:
					crashed = true
					held = nil
				case 0:
					w.Write(held)
					held = nil
					atLine = b == '\n'
				}
				continue
			}
			w.Write([]byte{b})
			if b == '\n' {
				atLine = true
			}
		}
		if err != nil {
			if !crashed && len(held) > 0 {
				w.Write(held)
			}
			return crashed
		}
	}
}

// mayBeMark is 2 when p begins with a crash mark, 1 when it is a proper
// prefix of one, else 0.
func mayBeMark(p []byte) int {
	for _, m := range crashMarks {
		if bytes.HasPrefix(p, m) {
			return 2
		}
		if bytes.HasPrefix(m, p) {
			return 1
		}
	}
	return 0
}
