package hugemem

import (
	"testing"
	"unsafe"
)

func TestMakeAndGrow(t *testing.T) {
	for _, n := range []int{0, 1, 1000, 3 << 20} { // the last spans huge pages
		x := Make[float32](n)
		if len(x) != n {
			t.Fatalf("Make(%d): length %d", n, len(x))
		}
		for i, v := range x {
			if v != 0 {
				t.Fatalf("Make(%d)[%d] = %v, want 0", n, i, v)
			}
		}
		for i := range x {
			x[i] = float32(i)
		}
		// Growing within the capacity keeps the memory and the values.
		if n > 0 {
			y := Grow(x[:0], n)
			if &y[0] != &x[0] || y[n-1] != float32(n-1) {
				t.Fatalf("Grow(%d) within capacity reallocated or lost values", n)
			}
		}
		z := Grow(x, n+1)
		if len(z) != n+1 || n > 0 && &z[0] == &x[0] {
			t.Fatalf("Grow(%d) past capacity: length %d, same memory %v", n+1, len(z), n > 0 && &z[0] == &x[0])
		}
	}
	if b := Make[float64](5 << 18); len(b) != 5<<18 {
		t.Fatalf("Make[float64]: length %d", len(b))
	}
}

// TestAligned: a buffer of a megabyte or more starts on a huge-page
// boundary (else its first and last huge pages would be small pages); a
// smaller one is a plain slice; the capacity is the length asked for.
func TestAligned(t *testing.T) {
	for _, tc := range []struct {
		n       int
		aligned bool
	}{{1 << 20 / 4, true}, {5<<20/4 + 3, true}, {1<<20/4 - 1, false}} {
		x := Make[float32](tc.n)
		if len(x) != tc.n || cap(x) != tc.n {
			t.Fatalf("Make(%d): length %d, capacity %d", tc.n, len(x), cap(x))
		}
		p := uintptr(unsafe.Pointer(&x[0]))
		if tc.aligned && p%Huge != 0 {
			t.Errorf("Make(%d) of %d bytes starts %d bytes past a huge-page boundary", tc.n, 4*tc.n, p%Huge)
		}
		x[tc.n-1] = 1 // its last value is its own
	}
	if b := Make[[3]byte](1 << 20); len(b) != 1<<20 {
		t.Fatalf("Make of a size that does not divide a huge page: length %d", len(b))
	}
}
