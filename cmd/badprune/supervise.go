package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"badprune/internal/guard"
)

// crashMarks begin the Go runtime's report of a fatal fault; from such a
// line on, the child's stderr is not shown.
var crashMarks = []string{"SIGSEGV:", "SIGBUS:", "SIGILL:", "SIGFPE:", "SIGABRT:", "fatal error:", "panic:", "runtime:", "unexpected fault"}

// supervise runs badprune's work in a child process. A fault in the HDF5 C
// library on a damaged file kills the child, not the supervisor, which
// then removes the child's temporary files and reports one line naming the
// file being read. ok is false when no child could be started (the caller
// then does the work itself).
func supervise(args []string) (code int, ok bool) {
	exe, err := os.Executable()
	if err != nil {
		return 0, false
	}
	pr, pw, err := os.Pipe() // the child's reports
	if err != nil {
		return 0, false
	}
	er, ew, err := os.Pipe() // the child's stderr
	if err != nil {
		return 0, false
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envChild+"=1", guard.EnvFD+"=3")
	if isTerminal(os.Stderr) {
		cmd.Env = append(cmd.Env, envTTY+"=1")
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, ew
	cmd.ExtraFiles = []*os.File{pw}
	// Signals reach the supervisor; it passes them on and waits.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		signal.Stop(sigs)
		return 0, false
	}
	pw.Close()
	ew.Close()
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()

	var wg sync.WaitGroup
	var reading string
	temps := map[string]bool{}
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			kind, q, _ := strings.Cut(sc.Text(), " ")
			path, err := strconv.Unquote(q)
			if err != nil {
				continue
			}
			switch kind {
			case "read":
				reading = path
			case "temp":
				temps[path] = true
			case "done":
				delete(temps, path)
			}
		}
	}()
	var crashed bool
	go func() {
		defer wg.Done()
		crashed = relay(os.Stderr, er)
	}()
	werr := cmd.Wait()
	wg.Wait()
	signal.Stop(sigs)
	close(sigs)

	st := cmd.ProcessState
	ws, _ := st.Sys().(syscall.WaitStatus)
	switch {
	case werr == nil:
		return 0, true
	case ws.Signaled() && (ws.Signal() == syscall.SIGINT || ws.Signal() == syscall.SIGTERM):
		cleanup(temps)
		return 128 + int(ws.Signal()), true
	case ws.Signaled() || crashed:
		cleanup(temps)
		what := "an input file"
		if reading != "" {
			what = reading
		}
		fmt.Fprintf(os.Stderr, "badprune: %s: the HDF5 library crashed reading it (a damaged or hostile file?); no output was written\n", what)
		return exitError, true
	}
	return st.ExitCode(), true
}

func cleanup(temps map[string]bool) {
	for p := range temps {
		os.Remove(p)
	}
}

// relay copies the child's stderr to w until a line begins like a runtime
// crash report; it reports whether one did. Bytes after a newline are held
// back only until they cannot begin such a line, so progress bars redrawn
// with carriage returns pass through at once.
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
		if bytes.HasPrefix(p, []byte(m)) {
			return 2
		}
		if bytes.HasPrefix([]byte(m), p) {
			return 1
		}
	}
	return 0
}
