// Package guard lets a supervising process clean up after its child
// crashes. The HDF5 C library can fault on a damaged or hostile file, and a
// fault in C code cannot be recovered in Go; so badprune runs its work in a
// child process that reports, on a pipe, the input it is reading and what
// it has put on disk that is not final yet. When the child dies, the parent
// undoes that and names the input in one line.
//
// The package owns both ends of the pipe. The child calls Reading, Temp,
// TempDir, Created, Moved and Done; the parent reads with Watch. Each report
// is one line, a kind and one or two Go-quoted paths:
//
//	read "path"          the input being read (not registered)
//	temp "path"          a file to remove after a crash
//	tempdir "path"       a folder to remove with its contents after a crash
//	created "path"       a folder the run created: remove it if empty
//	moved "from" "to"    a file moved from from to to: move it back
//	done "path"          retire what was registered under path
//
// A registration is keyed by its path (for moved, by to, where the file is
// now); after a crash the parent undoes the live ones in reverse order of
// registration, so a folder is emptied before it is removed.
//
// The child's end of the pipe is opened once from the environment
// (BADPRUNE_GUARD_FD); without it every report does nothing.
package guard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvFD names the environment variable carrying the pipe's descriptor.
const EnvFD = "BADPRUNE_GUARD_FD"

// The protocol's kinds.
const (
	kindRead    = "read"
	kindTemp    = "temp"
	kindTempDir = "tempdir"
	kindCreated = "created"
	kindMoved   = "moved"
	kindDone    = "done"
	kindHung    = "hung"
)

// std is the child's end of the pipe. It is process-wide by nature: it is
// opened at the first report (a child forked before Go started learns its
// role in main, and sets the environment then: nothing may report before
// main) and never changes afterwards; it is the package's only state.
var std = sync.OnceValue(func() *reporter { return newReporter(open()) })

func open() io.Writer {
	fd, err := strconv.Atoi(os.Getenv(EnvFD))
	if err != nil || fd < 3 {
		return nil
	}
	return os.NewFile(uintptr(fd), "guard")
}

// reporter writes reports to w; a nil w drops them.
type reporter struct {
	mu   sync.Mutex
	w    io.Writer
	last string // the last input reported, so a loop does not flood the pipe
}

func newReporter(w io.Writer) *reporter {
	if f, ok := w.(*os.File); ok && f == nil {
		w = nil
	}
	return &reporter{w: w}
}

// line formats one report.
func line(kind string, paths ...string) string {
	var b strings.Builder
	b.WriteString(kind)
	for _, p := range paths {
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(p))
	}
	b.WriteByte('\n')
	return b.String()
}

// send writes the reports in one write, so a crash cannot split them: the
// parent sees all or none (a pipe write up to PIPE_BUF bytes is atomic, and
// larger ones are not cut by the writer's death once the call is made).
func (r *reporter) send(lines string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w == nil || lines == "" {
		return
	}
	// A failed report cannot be helped: the parent is gone or the pipe is
	// broken, and the work should go on.
	io.WriteString(r.w, lines)
}

func (r *reporter) reading(path string) {
	r.mu.Lock()
	if path == r.last {
		r.mu.Unlock()
		return
	}
	r.last = path
	r.mu.Unlock()
	r.send(line(kindRead, path))
}

func (r *reporter) done(paths []string) {
	var b strings.Builder
	for _, p := range paths {
		b.WriteString(line(kindDone, p))
	}
	r.send(b.String())
}

// Reading reports that the library is about to read path.
func Reading(path string) { std().reading(path) }

// Hung ends the process, which is stuck in a library call (after patience)
// on the input it last reported reading: it tells the supervisor, which
// cleans up and says so in one line, or, unsupervised, says so itself.
// A thread stuck in C cannot be stopped any other way.
func Hung(patience time.Duration) {
	r := std()
	r.mu.Lock()
	w, last := r.w, r.last
	r.mu.Unlock()
	if w != nil {
		r.send(kindHung + "\n")
	} else {
		fmt.Fprintf(os.Stderr, "badprune: %s: %s\n", last, HungProblem(patience))
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// HungProblem is the problem a hung run reports with the file it read.
func HungProblem(patience time.Duration) string {
	return fmt.Sprintf("the HDF5 library did not finish reading it in %v (a damaged or hostile file?); no output was written", patience)
}

// Temp reports a file that is to be removed if the run crashes: a
// temporary not in place yet, or an output published by a run that has not
// finished. Report it once it exists, unless its name is the run's own.
func Temp(path string) { std().send(line(kindTemp, path)) }

// TempDir reports a folder that is to be removed with all its contents if
// the run crashes.
func TempDir(path string) { std().send(line(kindTempDir, path)) }

// Created reports a folder the run created, right after creating it and
// before anything goes inside; after a crash it is removed if empty.
func Created(path string) { std().send(line(kindCreated, path)) }

// Moved reports that a file is about to move, or has moved, from from to
// to; after a crash it is moved back, replacing whatever is at from. Report
// it before the move: moving back a file that never moved does nothing.
func Moved(from, to string) { std().send(line(kindMoved, from, to)) }

// Done reports that the files or folders registered under paths were put
// in place or removed, and so need no cleanup. The reports go out in one
// write, so that a crash retires all of them or none.
func Done(paths ...string) { std().done(paths) }

// A Watcher reads a child's reports and undoes the child's leftovers.
type Watcher struct {
	done chan struct{} // closed at the end of the input

	mu      sync.Mutex
	reading string
	hung    bool
	items   []item         // registrations in order
	live    map[string]int // key → index in items of its live registration
}

// item is one registration.
type item struct {
	kind string
	path string // for moved, where the file goes back to
	key  string // for moved, where the file is now
}

// Watch starts reading reports from r in a goroutine, until r ends.
func Watch(r io.Reader) *Watcher {
	w := &Watcher{done: make(chan struct{}), live: map[string]int{}}
	go w.consume(r)
	return w
}

func (w *Watcher) consume(r io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		w.handle(sc.Text())
	}
	// After a line too long to be a report, keep draining so that the child
	// never blocks on a full pipe.
	io.Copy(io.Discard, r)
}

// handle applies one report; malformed ones are ignored, as are unknown
// kinds, which a newer child may send.
func (w *Watcher) handle(s string) {
	kind, rest, _ := strings.Cut(s, " ")
	var args []string
	for rest != "" {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return
		}
		p, err := strconv.Unquote(q)
		if err != nil {
			return
		}
		args = append(args, p)
		rest = strings.TrimPrefix(rest[len(q):], " ")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case kind == kindRead && len(args) == 1:
		w.reading = args[0]
	case (kind == kindTemp || kind == kindTempDir || kind == kindCreated) && len(args) == 1:
		w.live[args[0]] = len(w.items)
		w.items = append(w.items, item{kind: kind, path: args[0], key: args[0]})
	case kind == kindMoved && len(args) == 2:
		w.live[args[1]] = len(w.items)
		w.items = append(w.items, item{kind: kind, path: args[0], key: args[1]})
	case kind == kindDone && len(args) == 1:
		delete(w.live, args[0])
	case kind == kindHung && len(args) == 0:
		w.hung = true
	}
}

// Wait blocks until the reports end: the child exited and the pipe closed.
func (w *Watcher) Wait() { <-w.done }

// Hung reports whether the child said it was stuck in a library call.
func (w *Watcher) Hung() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hung
}

// Reading returns the last input the child reported reading, or "".
func (w *Watcher) Reading() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reading
}

// Cleanup undoes every registration still live, newest first: it removes
// temporary files, removes temporary folders with their contents, removes
// created folders that are empty, and moves moved files back. Call it after
// Wait. What is already gone, and created folders that are not empty, are
// not errors; other failures are returned joined, after trying everything.
// Undone registrations are retired, so a second call does nothing.
func (w *Watcher) Cleanup() error {
	w.mu.Lock()
	var todo []item
	for i := len(w.items) - 1; i >= 0; i-- {
		if j, ok := w.live[w.items[i].key]; ok && j == i {
			todo = append(todo, w.items[i])
		}
	}
	w.items, w.live = nil, map[string]int{}
	w.mu.Unlock()

	var errs []error
	for _, it := range todo {
		var err error
		switch it.kind {
		case kindTemp:
			err = os.Remove(it.path)
		case kindTempDir:
			err = os.RemoveAll(it.path)
		case kindCreated:
			err = os.Remove(it.path)
			if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
				err = nil // the folder holds something else: keep it
			}
		case kindMoved:
			err = os.Rename(it.key, it.path)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
