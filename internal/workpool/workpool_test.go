package workpool

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func TestSplitCoversOnce(t *testing.T) {
	for _, n := range []int{0, 1, 7, 100} {
		for _, minPart := range []int{0, 1, 8, 1000} {
			seen := make([]int32, n)
			Split(n, minPart, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&seen[i], 1)
				}
			})
			for i, s := range seen {
				if s != 1 {
					t.Fatalf("n=%d minPart=%d: index %d covered %d times", n, minPart, i, s)
				}
			}
		}
	}
}

func TestPoolRunsAllThenStops(t *testing.T) {
	var n atomic.Int32
	p := New(context.Background())
	for range 50 {
		p.Go(func() { n.Add(1) })
	}
	if err := p.Wait(); err != nil || n.Load() != 50 {
		t.Fatalf("ran %d of 50 jobs, err %v", n.Load(), err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p = New(ctx)
	var once sync.Once
	var after atomic.Int32
	for range 50 {
		p.Go(func() {
			once.Do(cancel)
			after.Add(1)
		})
	}
	if err := p.Wait(); err == nil {
		t.Fatal("Wait after cancel: no error")
	}
	if after.Load() == 50 {
		t.Error("every job ran after the context ended")
	}
}

func TestSplitParts(t *testing.T) {
	w := Workers()
	for _, n := range []int{1, 5, 64, 257, 10000} {
		for _, minPart := range []int{1, 4, 100} {
			parts := func() map[[2]int]bool {
				var mu sync.Mutex
				got := map[[2]int]bool{}
				Split(n, minPart, func(lo, hi int) {
					mu.Lock()
					got[[2]int{lo, hi}] = true
					mu.Unlock()
				})
				return got
			}
			a, b := parts(), parts()
			if len(a) > partsPerWorker*w {
				t.Errorf("n=%d minPart=%d: %d parts for %d workers", n, minPart, len(a), w)
			}
			for p := range a {
				if p[1]-p[0] < min(minPart, n) {
					t.Errorf("n=%d minPart=%d: part %v shorter than minPart", n, minPart, p)
				}
				if !b[p] {
					t.Errorf("n=%d minPart=%d: part %v not cut again the same way", n, minPart, p)
				}
			}
			if w > 1 && n >= partsPerWorker*w*minPart && len(a) != partsPerWorker*w {
				t.Errorf("n=%d minPart=%d: %d parts, want %d", n, minPart, len(a), partsPerWorker*w)
			}
		}
	}
}

// TestSpareP checks that SpareP adds one P only when Go may use every CPU,
// that restore takes it back, and that Workers stays the number of cores.
func TestSpareP(t *testing.T) {
	n := runtime.NumCPU()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	for _, procs := range []int{n, max(n-1, 1)} {
		runtime.GOMAXPROCS(procs)
		want := procs
		if procs == n {
			want = n + 1
		}
		restore := SpareP()
		if got := runtime.GOMAXPROCS(0); got != want {
			t.Errorf("GOMAXPROCS %d of %d CPUs: %d during SpareP, want %d", procs, n, got, want)
		}
		if got := Workers(); got != procs {
			t.Errorf("GOMAXPROCS %d of %d CPUs: %d workers during SpareP, want %d", procs, n, got, procs)
		}
		restore()
		if got := runtime.GOMAXPROCS(0); got != procs {
			t.Errorf("GOMAXPROCS %d of %d CPUs: %d after restore", procs, n, got)
		}
	}
}
