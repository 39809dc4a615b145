// Package guard lets a supervising process clean up after its child
// crashes. The HDF5 C library can fault on a damaged or hostile file, and a
// fault in C code cannot be recovered in Go; so badprune runs its work in a
// child process that reports, on a pipe, the input it is reading and the
// temporary files it creates. When the child dies, the parent removes the
// temporaries and names the input in one line.
//
// The pipe is opened once from the environment (BADPRUNE_GUARD_FD);
// without it every call here does nothing.
package guard

import (
	"fmt"
	"os"
	"strconv"
	"sync"
)

// EnvFD names the environment variable carrying the pipe's descriptor.
const EnvFD = "BADPRUNE_GUARD_FD"

// The pipe is process-wide by nature: it is set up before main runs and
// never changes afterwards.
var pipe = struct {
	sync.Mutex
	f    *os.File
	last string
}{f: open()}

func open() *os.File {
	fd, err := strconv.Atoi(os.Getenv(EnvFD))
	if err != nil || fd < 3 {
		return nil
	}
	return os.NewFile(uintptr(fd), "guard")
}

func send(kind, path string) {
	pipe.Lock()
	defer pipe.Unlock()
	if pipe.f == nil {
		return
	}
	if kind == "read" {
		if path == pipe.last {
			return
		}
		pipe.last = path
	}
	fmt.Fprintf(pipe.f, "%s %s\n", kind, strconv.Quote(path))
}

// Reading reports that the library is about to read path.
func Reading(path string) { send("read", path) }

// Temp reports a temporary file that is not in place yet.
func Temp(path string) { send("temp", path) }

// Done reports that a temporary file was renamed or removed.
func Done(path string) { send("done", path) }
