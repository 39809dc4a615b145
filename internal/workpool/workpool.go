// Package workpool spreads work over the machine's cores: a pool that runs
// queued jobs on one goroutine per core until a context ends, Split, which
// cuts a range into contiguous parts that the cores take in turn, and
// SpareP, which keeps Go's scheduler from taking the cores' Ps while their
// goroutines are in long cgo calls.
package workpool

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// Workers is the number of goroutines work is spread over: one per core Go
// may use, whether or not a SpareP is in force.
func Workers() int { return min(runtime.GOMAXPROCS(0), runtime.NumCPU()) }

// SpareP lets Go run one goroutine more than there are cores until the
// returned function is called, if it may use every core (GOMAXPROCS is the
// number of CPUs; a lower setting is left alone); Workers does not change.
// It is for work that spends its time in long cgo calls on every core:
// with every P in such a call, Go's monitor thread takes Ps away from them
// and wakes threads to run them (each a handoff between threads, dear in a
// virtual machine); with a P idle it leaves them be. A call while another
// is in force does nothing.
func SpareP() (restore func()) {
	n := runtime.NumCPU()
	if runtime.GOMAXPROCS(0) != n {
		return func() {}
	}
	runtime.GOMAXPROCS(n + 1)
	return func() { runtime.GOMAXPROCS(n) }
}

// Split cuts [0, n) into contiguous parts, each at least minPart long,
// runs f on each concurrently and waits for all. There are up to
// partsPerWorker parts per worker, taken in turn by whichever worker is
// free: a worker that shares its core with another goroutine (a reader)
// then holds the others up by one small part, not by half the work. The
// parts depend on n, minPart and the number of workers only.
func Split(n, minPart int, f func(lo, hi int)) {
	w := Workers()
	if minPart < 1 {
		minPart = 1
	}
	parts := max(min(n/minPart, partsPerWorker*w), 1)
	w = min(w, parts)
	if w <= 1 {
		if n > 0 {
			f(0, n)
		}
		return
	}
	var next atomic.Int64
	run := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= parts {
				return
			}
			f(n*i/parts, n*(i+1)/parts)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < w-1; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run()
		}()
	}
	run() // the caller works too: one goroutine fewer to start and wake
	wg.Wait()
}

// partsPerWorker: more parts balance better, fewer cost fewer calls.
const partsPerWorker = 4

// Pool runs jobs on at most Workers goroutines at a time.
type Pool struct {
	ctx context.Context
	sem chan struct{}
	wg  sync.WaitGroup
}

// New returns a pool whose jobs stop being started once ctx ends.
func New(ctx context.Context) *Pool {
	return &Pool{ctx: ctx, sem: make(chan struct{}, Workers())}
}

// Go runs f when a goroutine is free, unless the context is done.
func (p *Pool) Go(f func()) {
	if !p.acquire() {
		return
	}
	p.wg.Add(1)
	go func() {
		defer func() { <-p.sem; p.wg.Done() }()
		if p.ctx.Err() == nil {
			f()
		}
	}()
}

// acquire takes a worker's place, or reports that the context ended first.
// A place taken may still find the context ended (select takes either case
// when both are ready): the callers check again before running f.
func (p *Pool) acquire() bool {
	select {
	case p.sem <- struct{}{}:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// Err is the context's error, if any.
func (p *Pool) Err() error { return p.ctx.Err() }

// Wait waits for the jobs and reports whether the context ended first.
func (p *Pool) Wait() error {
	p.wg.Wait()
	return p.ctx.Err()
}
