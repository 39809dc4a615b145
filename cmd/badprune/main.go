// Command badprune repairs a backdoored neural network by pruning and turns
// it into a backdoor detector (Liu, Dolan-Gavitt, Garg: Fine-Pruning, 2018).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync/atomic"
	"syscall"

	"badprune/internal/guard"
	_ "badprune/internal/onnxmodel" // ONNX models: --model bd.onnx
)

// envChild marks the process that does the work under a supervisor.
const envChild = "BADPRUNE_CHILD"

func main() {
	switch e := forked(); {
	case e.role == supervisor:
		os.Exit(superviseForked(e))
	case e.role == child:
		// What an exec'ing supervisor passes in the environment.
		os.Setenv(envChild, "1")
		os.Setenv(guard.EnvFD, "3")
		if e.tty {
			os.Setenv(envTTY, "1")
		}
	case os.Getenv(envChild) == "" && os.Getenv("BADPRUNE_NO_SUPERVISOR") == "":
		if code, ok := supervise(os.Args[1:]); ok {
			os.Exit(code)
		}
	}
	// BADPRUNE_CPUPROFILE=file writes a Go CPU profile of the working
	// process (cgo kernels show as their C symbols) for go tool pprof.
	if path := os.Getenv("BADPRUNE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f) // stopped before os.Exit below
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var sig atomic.Int32
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-ch
		sig.Store(int32(s.(syscall.Signal)))
		cancel()
		<-ch // a second signal: stop now
		if os.Getenv(envChild) != "" {
			// The supervisor removes what this run staged.
			fmt.Fprintln(os.Stderr, interrupted)
		}
		os.Exit(128 + int(sig.Load()))
	}()
	code := run(ctx, os.Args[1:], ioStreams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	if s := sig.Load(); s != 0 {
		code = 128 + int(s)
	}
	pprof.StopCPUProfile() // os.Exit skips deferred calls; a no-op without a profile
	os.Exit(code)
}
