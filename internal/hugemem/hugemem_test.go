package hugemem

import "testing"

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
