package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestTopLogits: Settle gives, for every row it settles, the top m of the
// logits Forward computes (classes and bits, equal values in class order,
// as TopN) and the label's logit, on classifiers whose classes come in
// groups of near-copies (logits closer than the bfloat16 bound, so the
// exact sums decide), rows with exact ties (zero inputs, integer data),
// sizes off the kernel's blocks, and rows it must leave (non-finite
// inputs); and it settles most finite rows.
func TestTopLogits(t *testing.T) {
	if NewTopLogits([]float32{1}, nil, 1, 1) == nil {
		t.Skip("this CPU has no AVX-512 BF16: callers compute every logit")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		hdim, k, m int
		integer    bool
	}{
		{160, 1283, 5, false}, {160, 1283, 5, true}, {7, 70, 1, false}, {33, 64, 3, false},
		{1, 17, 2, false}, {160, 200, 16, false}, {2, 5, 5, true},
	} {
		hdim, k, m, n := tc.hdim, tc.k, tc.m, 203
		w, bias := make([]float32, hdim*k), make([]float32, k)
		base := make([]float64, hdim)
		for j := 0; j < k; j++ {
			if j%8 == 0 { // a new group
				for i := range base {
					base[i] = rng.NormFloat64() * 0.1
				}
			}
			for i := range base {
				w[i*k+j] = float32(base[i] * (1 + 1e-3*rng.NormFloat64()))
				if tc.integer {
					w[i*k+j] = float32(rng.IntN(5) - 2)
				}
			}
			bias[j] = float32(j%5) * 0.25 // equal biases: ties where the inputs are zero
		}
		x := make([]float32, n*hdim)
		labels := make([]int, n)
		for r := 0; r < n; r++ {
			labels[r] = rng.IntN(k)
			scale := math.Exp(rng.NormFloat64() * 2)
			for i := 0; i < hdim; i++ {
				switch {
				case r%10 == 1: // zero: every logit its bias
				case tc.integer:
					x[r*hdim+i] = float32(rng.IntN(4))
				case rng.IntN(2) == 0:
					x[r*hdim+i] = float32(math.Abs(rng.NormFloat64()) * scale)
				}
			}
		}
		x[5*hdim] = float32(math.NaN())
		x[7*hdim+hdim-1] = float32(math.Inf(1))
		z := make([]float32, n*k)
		NewDense(w, bias, hdim, k).Forward(x, n, 1, 1, false, z)

		tl := NewTopLogits(w, bias, hdim, k)
		idx, val, zy := make([]int32, n*m), make([]float32, n*m), make([]float32, n)
		ok := make([]uint8, n)
		got := tl.Settle(x, n, labels, idx, val, zy, ok, make([]float32, tl.ScratchSize()))
		wi, wv := make([]int32, m), make([]float32, m)
		settled := 0
		for r := 0; r < n; r++ {
			if ok[r] == 0 {
				continue
			}
			settled++
			if r == 5 || r == 7 {
				t.Fatalf("%+v: row %d, with a non-finite input, settled", tc, r)
			}
			TopN(z[r*k:(r+1)*k], wi, wv)
			for i := 0; i < m; i++ {
				if idx[r*m+i] != wi[i] || math.Float32bits(val[r*m+i]) != math.Float32bits(wv[i]) {
					t.Fatalf("%+v: row %d: top %v %v, Forward's %v %v", tc, r, idx[r*m:(r+1)*m], val[r*m:(r+1)*m], wi, wv)
				}
			}
			if want := z[r*k+labels[r]]; math.Float32bits(zy[r]) != math.Float32bits(want) {
				t.Fatalf("%+v: row %d: label %d's logit %v, Forward's %v", tc, r, labels[r], zy[r], want)
			}
		}
		if settled != got || settled < (n-2)*3/4 {
			t.Fatalf("%+v: settled %d rows (returned %d) of %d", tc, settled, got, n)
		}
		// Without labels: the same tops.
		idx2, val2 := make([]int32, n*m), make([]float32, n*m)
		ok2 := make([]uint8, n)
		tl.Settle(x, n, nil, idx2, val2, nil, ok2, make([]float32, tl.ScratchSize()))
		for r := 0; r < n; r++ {
			if ok2[r] != 0 && ok[r] != 0 {
				for i := 0; i < m; i++ {
					if idx2[r*m+i] != idx[r*m+i] || math.Float32bits(val2[r*m+i]) != math.Float32bits(val[r*m+i]) {
						t.Fatalf("%+v: row %d: without labels, top %v, with them %v", tc, r, idx2[r*m:(r+1)*m], idx[r*m:(r+1)*m])
					}
				}
			}
		}
	}
}

// TestTopLogitsRounding: the bounds hold where the bfloat16 roundings go
// against the truth. h is half of bfloat16's spacing at 1. Inputs 0..79
// are 1+0.99h (rounded down), 80..159 are 1+1.01h (rounded up); class 0
// weighs the first half by 1+0.99h (down), class 1 the second by 1+1.01h
// (up) and its last input a little less, so that its exact logit trails
// class 0's by the least it can. Class 1's approximation then leads by
// about 316h, more than its own bound: class 0 is found only when both
// classes' bounds are counted. (Half the bound used misses it; three
// fourths of it do not.)
func TestTopLogitsRounding(t *testing.T) {
	const hdim, k, h = 160, 40, 0x1p-8
	x := make([]float32, hdim)
	w := make([]float32, hdim*k)
	for i := 0; i < hdim; i++ {
		x[i] = float32(1 + 0.99*h)
		if i >= hdim/2 {
			x[i] = float32(1 + 1.01*h)
			w[i*k+1] = float32(1 + 1.01*h)
		} else {
			w[i*k] = float32(1 + 0.99*h)
		}
		for j := 2; j < k; j++ {
			w[i*k+j] = float32(j) / k / 100
		}
	}
	logits := func() []float32 {
		z := make([]float32, k)
		NewDense(w, nil, hdim, k).Forward(x, 1, 1, 1, false, z)
		return z
	}
	// Class 1's last weight: the largest that leaves its logit below class
	// 0's (a binary search over the bits of positive floats, in their order).
	last := &w[(hdim-1)*k+1]
	lo, hi := uint32(0), math.Float32bits(*last) // class 1 trails at lo, not at hi
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		*last = math.Float32frombits(mid)
		if z := logits(); z[1] < z[0] {
			lo = mid
		} else {
			hi = mid
		}
	}
	*last = math.Float32frombits(lo)
	tl := NewTopLogits(w, nil, hdim, k)
	if tl == nil {
		t.Skip("this CPU has no AVX-512 BF16")
	}
	idx, val, ok := make([]int32, 1), make([]float32, 1), make([]uint8, 1)
	tl.Settle(x, 1, nil, idx, val, nil, ok, make([]float32, tl.ScratchSize()))
	if z := logits(); ok[0] == 0 || idx[0] != 0 || val[0] != z[0] {
		t.Fatalf("top class %d, logit %v (settled: %v); Forward's: 0, %v (class 1 %v)", idx[0], val[0], ok[0] != 0, z[0], z[1])
	}
}

// settleAgainstForward settles n rows and fails on any settled row whose
// top m or logits differ from Forward then TopN's; it returns how many
// rows were settled.
func settleAgainstForward(t *testing.T, name string, w, bias, x []float32, hdim, k, n, m int) int {
	t.Helper()
	z := make([]float32, n*k)
	NewDense(w, bias, hdim, k).Forward(x, n, 1, 1, false, z)
	tl := NewTopLogits(w, bias, hdim, k)
	if tl == nil {
		t.Fatalf("%s: not prepared", name)
	}
	idx, val, ok := make([]int32, n*m), make([]float32, n*m), make([]uint8, n)
	settled := tl.Settle(x, n, nil, idx, val, nil, ok, make([]float32, tl.ScratchSize()))
	wi, wv := make([]int32, m), make([]float32, m)
	for r := 0; r < n; r++ {
		if ok[r] == 0 {
			continue
		}
		TopN(z[r*k:(r+1)*k], wi, wv)
		for i := 0; i < m; i++ {
			if idx[r*m+i] != wi[i] || math.Float32bits(val[r*m+i]) != math.Float32bits(wv[i]) {
				t.Fatalf("%s: row %d: top %v %v, Forward's %v %v", name, r, idx[r*m:(r+1)*m], val[r*m:(r+1)*m], wi, wv)
			}
		}
	}
	return settled
}

// TestTopLogitsLimits: the bound holds, or the row is left, where a
// fixed bound would fail (cases found by review): long inputs, whose
// float32 roundings add up (every weight and input rounded one way in the
// exact sum, the other in bfloat16, against a bias just below the
// truth); inputs so small that their squares underflow in float32; and
// sums that overflow in one order and not the other.
func TestTopLogitsLimits(t *testing.T) {
	if NewTopLogits([]float32{1}, nil, 1, 1) == nil {
		t.Skip("this CPU has no AVX-512 BF16")
	}
	for _, hdim := range []int{160, 3000, 8192} {
		const k = 2
		w, x := make([]float32, hdim*k), make([]float32, hdim)
		for i := range x {
			x[i] = float32(1 - 0x1p-9 - 0x1p-20)
			w[i*k] = float32(0x1p-24 * (1 + 0x1p-8))
		}
		z := make([]float32, k)
		bias := []float32{1, 0}
		NewDense(w, bias, hdim, k).Forward(x, 1, 1, 1, false, z)
		bias[1] = 1 + (z[0]-1)*0.75
		if settleAgainstForward(t, fmt.Sprint("long ", hdim), w, bias, x, hdim, k, 1, 1) != 1 {
			t.Errorf("long %d: the row was not settled", hdim)
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	const hdim, k, n, m = 160, 64, 200, 5
	w := make([]float32, hdim*k)
	base := make([]float64, hdim)
	for j := 0; j < k; j++ {
		if j%8 == 0 {
			for i := range base {
				base[i] = rng.NormFloat64() * 0.1
			}
		}
		for i := range base {
			w[i*k+j] = float32(base[i] * (1 + 1e-2*rng.NormFloat64()))
		}
	}
	for _, scale := range []float64{1, 1e-19, 1e-23, 1e-30, 1e-37} {
		x := make([]float32, n*hdim)
		for i := range x {
			x[i] = float32(math.Abs(rng.NormFloat64()) * scale)
		}
		if s := settleAgainstForward(t, fmt.Sprint("scale ", scale), w, nil, x, hdim, k, n, m); s < n/2 {
			t.Errorf("scale %g: %d of %d rows settled", scale, s, n)
		}
	}

	// Class 0: -3e38 + 3e38 - 1e38 exactly, -inf if the second product
	// comes first; the others -2e38.
	const kk = 20
	w3, bias3 := make([]float32, 3*kk), make([]float32, kk)
	for j := range bias3 {
		bias3[j] = -2e38
	}
	bias3[0], w3[0], w3[kk] = -3e38, 3e28, -1e28
	settleAgainstForward(t, "overflow", w3, bias3, []float32{1e10, 1e10, 0}, 3, kk, 1, 1)
}

// TestTopLogitsRefuses: no preparation without the CPU's support or with
// non-finite weights.
func TestTopLogitsRefuses(t *testing.T) {
	if newTopLogits([]float32{1, 2}, nil, 1, 2, false) != nil {
		t.Error("prepared without AVX-512 BF16")
	}
	for _, w := range [][]float32{{1, float32(math.NaN())}, {float32(math.Inf(-1)), 1}} {
		if newTopLogits(w, nil, 1, 2, true) != nil {
			t.Errorf("prepared weights %v", w)
		}
	}
	if newTopLogits([]float32{1, 2}, []float32{0, float32(math.Inf(1))}, 1, 2, true) != nil {
		t.Error("prepared an infinite bias")
	}
}

// BenchmarkTopLogits times settling a recount's top five logits of a
// classifier of the lab's size (160 inputs, 1,283 classes; random weights,
// inputs half zeros as after a ReLU) against computing every logit and
// scanning them, on the calling goroutine.
func BenchmarkTopLogits(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	const hdim, k, n, m = 160, 1283, 96, 5
	w := make([]float32, hdim*k)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.1)
	}
	bias := randSlice(r, k, -0.1, 0.1)
	x := make([]float32, n*hdim)
	for i := range x {
		if r.IntN(2) == 0 {
			x[i] = float32(r.ExpFloat64())
		}
	}
	labels := make([]int, n)
	for i := range labels {
		labels[i] = r.IntN(k)
	}
	idx, val := make([]int32, n*m), make([]float32, n*m)
	perRow := func(b *testing.B) {
		b.ReportMetric(b.Elapsed().Seconds()/float64(n*b.N)*1e9, "ns/row")
	}
	b.Run("settle", func(b *testing.B) {
		tl := NewTopLogits(w, bias, hdim, k)
		if tl == nil {
			b.Skip("this CPU has no AVX-512 BF16")
		}
		zy, ok, sc := make([]float32, n), make([]uint8, n), make([]float32, tl.ScratchSize())
		for i := 0; i < b.N; i++ {
			tl.Settle(x, n, labels, idx, val, zy, ok, sc)
		}
		perRow(b)
	})
	b.Run("full", func(b *testing.B) {
		d := NewDense(w, bias, hdim, k)
		d.Serial = true
		z := make([]float32, n*k)
		for i := 0; i < b.N; i++ {
			d.Forward(x, n, 1, 1, false, z)
			for r := 0; r < n; r++ {
				TopN(z[r*k:(r+1)*k], idx[:m], val[:m])
			}
		}
		perRow(b)
	})
}
