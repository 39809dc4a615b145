package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// TestMaxPoolGradReLU: the fused gradient equals the pool's gradient
// followed by the ReLU's, bit for bit, and writes every entry (din starts
// as NaN), odd sizes and all-zero windows included.
func TestMaxPoolGradReLU(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	p := Pool{PH: 2, PW: 2, SH: 2, SW: 2}
	for _, tc := range []struct{ n, h, w, c int }{
		{3, 52, 44, 20},
		{2, 11, 9, 3}, // a row and a column no window covers
		{9, 4, 6, 17},
	} {
		oh, ow := tc.h/2, tc.w/2
		in := make([]float32, tc.n*tc.h*tc.w*tc.c)
		ReLU(randSlice(r, len(in), -1, 1), in) // many windows all zero
		dout := randSlice(r, tc.n*oh*ow*tc.c, -1, 1)
		want := make([]float32, len(in))
		p.MaxPoolGrad(in, dout, tc.n, tc.h, tc.w, tc.c, oh, ow, want)
		ReLUGrad(in, want, want)
		got := make([]float32, len(in))
		for i := range got {
			got[i] = float32(math.NaN())
		}
		if !p.MaxPoolGradReLU(in, dout, tc.n, tc.h, tc.w, tc.c, oh, ow, got) {
			t.Fatalf("%+v: refused a 2x2 pool", tc)
		}
		plain := make([]float32, len(in))
		p.gradReLUISA(in, dout, tc.n, tc.h, tc.w, tc.c, oh, ow, plain, 0)
		for i := range plain {
			if math.Float32bits(plain[i]) != math.Float32bits(got[i]) {
				t.Fatalf("%+v: din[%d]: plain C %g, chosen kernel (isa %d) %g", tc, i, plain[i], isa(), got[i])
			}
		}
		zeroed, routed := 0, 0
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: din[%d] = %g, want %g", tc, i, got[i], want[i])
			}
			if want[i] != 0 {
				routed++
			} else if in[i] > 0 {
				zeroed++
			}
		}
		if routed == 0 || zeroed == 0 {
			t.Fatalf("%+v: %d routed, %d positive non-maxima: the case checks little", tc, routed, zeroed)
		}
	}
	if (Pool{PH: 3, PW: 3, SH: 2, SW: 2}).MaxPoolGradReLU(nil, nil, 1, 5, 5, 1, 2, 2, nil) {
		t.Error("a 3x3 pool was not refused")
	}
}

// TestColSums: column sums against a float64 loop, rows not a multiple of
// the parts, and the bits do not depend on the number of cores.
func TestColSums(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, tc := range []struct{ rows, c int }{{1, 1}, {7, 3}, {3 * 52 * 44, 20}, {64, 1283}} {
		x := randSlice(r, tc.rows*tc.c, -1, 1)
		got := make([]float32, tc.c)
		ColSums(x, got, nil)
		want := make([]float64, tc.c)
		for i := 0; i < tc.rows; i++ {
			for j := 0; j < tc.c; j++ {
				want[j] += float64(x[i*tc.c+j])
			}
		}
		close32(t, "colsums", got, want, 1e-6)
		prev := runtime.GOMAXPROCS(1)
		one := make([]float32, tc.c)
		scratch := make([]float64, ColSumsScratch(tc.c))
		for i := range scratch {
			scratch[i] = 1e30 // left over from a previous call: cleared
		}
		ColSums(x, one, scratch)
		runtime.GOMAXPROCS(prev)
		for j := range got {
			if math.Float32bits(one[j]) != math.Float32bits(got[j]) {
				t.Fatalf("%+v: column %d: %g on one core, %g on %d", tc, j, one[j], got[j], prev)
			}
		}
	}
}

// TestColSumsISA: the vector column sums keep each column's double sum in
// the plain loop's order, to the bit: widths that leave partial vectors and
// more than the 64 columns held in registers at a time, values of many
// magnitudes (where another order of additions rounds differently) and a
// running sum that starts non-zero.
func TestColSumsISA(t *testing.T) {
	if isa() != 2 {
		t.Skip("no AVX-512 here: column sums run the plain path only")
	}
	r := rand.New(rand.NewPCG(17, 18))
	for _, tc := range []struct{ rows, c int }{{1, 1}, {5, 7}, {301, 20}, {33, 64}, {40, 65}, {17, 130}, {64, 1283}} {
		x := make([]float32, tc.rows*tc.c)
		for i := range x {
			x[i] = float32((r.Float64()*2 - 1) * math.Pow(2, float64(r.IntN(60)-30)))
		}
		start := make([]float64, tc.c)
		for j := range start {
			start[j] = r.Float64()
		}
		want := slices.Clone(start)
		// got is followed by sentinels that a wide store would overwrite.
		got := append(slices.Clone(start), 7, 7, 7, 7, 7, 7, 7, 7)
		colSumsISA(x, want, 0)
		colSumsISA(x, got[:tc.c], 2)
		for j, v := range got[tc.c:] {
			if v != 7 {
				t.Fatalf("%+v: AVX-512 sums wrote %v past the columns, at %d", tc, v, tc.c+j)
			}
		}
		for j := range want {
			if math.Float64bits(got[j]) != math.Float64bits(want[j]) {
				t.Fatalf("%+v: column %d: AVX-512 sum %v, plain %v", tc, j, got[j], want[j])
			}
		}
	}
}

// TestAdamISA: the vector Adam step gives the plain C step's bits, with and
// without L2, over lengths that leave a partial vector.
func TestAdamISA(t *testing.T) {
	if isa() != 2 {
		t.Skip("no AVX-512 here: Adam runs the plain path only")
	}
	r := rand.New(rand.NewPCG(15, 16))
	for _, l2 := range []bool{false, true} {
		const n = 1000 + 7
		w, g, m, v := randSlice(r, n, -1, 1), randSlice(r, n, -1e-3, 1e-3), randSlice(r, n, -1e-3, 1e-3), randSlice(r, n, 0, 1e-6)
		c := AdamCoef{L2: 1e-3, UseL2: l2, B1: 0.9, B2: 0.999, OmB1: 1 - float32(0.9), OmB2: 1 - float32(0.999),
			C1: 1 / float32(0.1), C2: 1 / float32(0.001), NegEta: -1e-3, Eps: 1e-8}
		var out [2][4][]float32
		for k, set := range []int{0, 2} {
			ws, gs, ms, vs := slices.Clone(w), slices.Clone(g), slices.Clone(m), slices.Clone(v)
			adamISA(ws, gs, ms, vs, c, set)
			out[k] = [4][]float32{ws, gs, ms, vs}
		}
		moved := 0
		for a, name := range []string{"w", "g", "m", "v"} {
			for i := range w {
				if math.Float32bits(out[0][a][i]) != math.Float32bits(out[1][a][i]) {
					t.Fatalf("l2 %v: %s[%d]: plain %g, AVX-512 %g", l2, name, i, out[0][a][i], out[1][a][i])
				}
			}
		}
		for i := range w {
			if out[0][0][i] != w[i] {
				moved++
			}
			if out[0][1][i] != 0 {
				t.Fatalf("gradient %d not zeroed", i)
			}
		}
		if moved < n/2 {
			t.Fatalf("l2 %v: only %d of %d weights moved", l2, moved, n)
		}
	}
}

// TestTopN: the k largest values, largest first and ties in index order,
// as a sort gives them, over lengths that leave partial vectors and values
// with many ties.
func TestTopN(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, n := range []int{1, 5, 16, 17, 100, 1283} {
		for _, k := range []int{1, 3, 16, 17} {
			for trial := 0; trial < 20; trial++ {
				z := make([]float32, n)
				for i := range z {
					z[i] = float32(r.IntN(40)) - 20 // ties
				}
				if trial%2 == 1 { // rising values: the smallest kept one moves often
					for i := range z {
						z[i] = float32(i/3) + float32(r.IntN(2))
					}
				}
				order := make([]int, n)
				for i := range order {
					order[i] = i
				}
				slices.SortStableFunc(order, func(a, b int) int {
					switch {
					case z[a] > z[b]:
						return -1
					case z[a] < z[b]:
						return 1
					}
					return 0
				})
				idx, val := make([]int32, k), make([]float32, k)
				got := TopN(z, idx, val)
				if want := min(n, k); got != want {
					t.Fatalf("n %d k %d: %d filled, want %d", n, k, got, want)
				}
				for i := 0; i < got; i++ {
					if int(idx[i]) != order[i] || val[i] != z[order[i]] {
						t.Fatalf("n %d k %d trial %d: place %d is %d (%g), want %d (%g)", n, k, trial, i, idx[i], val[i], order[i], z[order[i]])
					}
				}
			}
		}
	}
}

// TestConvertISA: the vector conversion of channels-first RGB images
// (float32 and float64) gives the plain loop's bits and flags the same
// first non-finite image (a NaN, and a float64 too large for float32),
// over image sizes that leave partial vectors.
func TestConvertISA(t *testing.T) {
	if isa() != 2 {
		t.Skip("no AVX-512 here: conversion runs the plain path only")
	}
	r := rand.New(rand.NewPCG(19, 20))
	for _, hw := range []int{1, 5, 16, 17, 55 * 47} {
		const n, c = 4, 3
		f64 := make([]float64, n*c*hw)
		for i := range f64 {
			f64[i] = math.Round(r.Float64()*255) + r.Float64()*1e-3
		}
		f32 := make([]float32, len(f64))
		for i, v := range f64 {
			f32[i] = float32(v)
		}
		for k, plant := range []func(){func() {}, func() {
			f64[2*c*hw+hw+hw/2] = 1e39 // image 2, channel 1
			f32[2*c*hw+hw+hw/2] = float32(math.NaN())
			f64[3*c*hw] = math.NaN()
		}} {
			plant()
			for _, src := range []any{f32, f64} {
				for _, scale := range []float32{1, 1.0 / 255} {
					want, got := make([]float32, len(f64)), make([]float32, len(f64))
					wb, gb := convertISA(src, n, c, hw, true, scale, want, 0), convertISA(src, n, c, hw, true, scale, got, 2)
					if wb != gb || wb != []int{-1, 2}[k] {
						t.Fatalf("hw %d %T scale %v: first non-finite image %d, plain %d", hw, src, scale, gb, wb)
					}
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
							t.Fatalf("hw %d %T scale %v: value %d: %v, plain %v", hw, src, scale, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestNarrow: float64 values stored channels-last or channels-first narrow
// to their bytes, NHWC; any value that is not an integer 0..255, wherever
// it is (a vector's first lane, the tail past the last whole vector, any
// plane), is refused.
func TestNarrow(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, cf := range []bool{false, true} {
		for _, hw := range []int{1, 5, 16, 47 * 55} {
			const n, c = 3, 3
			src := make([]float64, n*hw*c)
			for i := range src {
				src[i] = float64(r.IntN(256))
			}
			src[0] = math.Copysign(0, -1) // -0 is 0
			dst := make([]uint8, len(src))
			if !Narrow(src, n, c, hw, cf, dst) {
				t.Fatalf("cf %v hw %d: integers 0..255 refused", cf, hw)
			}
			for i := range n {
				for p := range hw {
					for ch := range c {
						v := src[(i*hw+p)*c+ch]
						if cf {
							v = src[(i*c+ch)*hw+p]
						}
						if got := dst[(i*hw+p)*c+ch]; got != uint8(v) {
							t.Fatalf("cf %v hw %d: image %d pixel %d channel %d = %d, want %v", cf, hw, i, p, ch, got, v)
						}
					}
				}
			}
			for _, at := range []int{0, min(9, len(src)-1), len(src)/2 + 1, len(src) - 1} {
				for _, bad := range []float64{0.5, 255.5, 256, -1, math.NaN(), math.Inf(1), 1e-300} {
					s := slices.Clone(src)
					s[at] = bad
					if Narrow(s, n, c, hw, cf, make([]uint8, len(s))) {
						t.Errorf("cf %v hw %d: %v at %d accepted", cf, hw, bad, at)
					}
				}
			}
		}
	}
}

// TestForwardPoolCodes: the pooled values of ForwardPoolCodes are those of
// Forward then MaxPool, and MaxPoolGradCodes, from its codes, gives the
// gradient MaxPoolGradReLU finds by searching the unpooled output again,
// bit for bit, on every kernel set, and the gradient's channel sums (the
// same bits on every set, on one core, with scratch left over): integer weights and
// inputs make ties in windows (the first maximum is the one), odd sizes
// leave rows and columns no window covers, a stride of 2.
func TestForwardPoolCodes(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	ints := func(n, lo, hi int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(lo + r.IntN(hi-lo+1))
		}
		return s
	}
	for _, tc := range []struct{ n, h, w, c, kh, kw, oc, s int }{
		{3, 55, 47, 3, 4, 4, 20, 1}, // the lab's conv_1
		{2, 26, 22, 20, 3, 3, 40, 1},
		{2, 12, 10, 40, 3, 3, 60, 1},
		{3, 10, 11, 5, 2, 2, 7, 1}, // a conv output of 9 x 10
		{2, 13, 12, 3, 3, 3, 17, 2},
	} {
		k := ints(tc.kh*tc.kw*tc.c*tc.oc, -1, 1)
		cv := NewConv(k, ints(tc.oc, -1, 1), tc.kh, tc.kw, tc.c, tc.oc, tc.s, tc.s)
		in := ints(tc.n*tc.h*tc.w*tc.c, 0, 2)
		ch, cw := OutSize(tc.h, tc.kh, tc.s), OutSize(tc.w, tc.kw, tc.s)
		oh, ow := ch/2, cw/2
		z := make([]float32, tc.n*ch*cw*tc.oc)
		cv.Forward(in, tc.n, tc.h, tc.w, true, z)
		want := make([]float32, tc.n*oh*ow*tc.oc)
		pool := Pool{PH: 2, PW: 2, SH: 2, SW: 2}
		pool.MaxPool(z, tc.n, ch, cw, tc.oc, oh, ow, want)
		got, codes := make([]float32, len(want)), make([]uint8, len(want))
		cv.ForwardPoolCodes(in, tc.n, tc.h, tc.w, got, codes)
		ties := 0
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: pooled %d = %g, Forward and MaxPool %g", tc, i, got[i], want[i])
			}
		}
		// Every kernel set keeps the same values and entries (its plain
		// pooling loop included; the sums here are exact on any set).
		for set := 0; set < isa(); set++ {
			g, cd := make([]float32, len(want)), make([]uint8, len(want))
			cv.forwardPoolCodesISA(in, tc.n, tc.h, tc.w, g, cd, set)
			for i := range want {
				if math.Float32bits(g[i]) != math.Float32bits(want[i]) || cd[i] != codes[i] {
					t.Fatalf("%+v set %d: pooled %d = %g entry %d, widest set %g entry %d", tc, set, i, g[i], cd[i], want[i], codes[i])
				}
			}
		}
		dout := randSlice(r, len(want), -1, 1)
		wantD := make([]float32, len(z))
		pool.MaxPoolGradReLU(z, dout, tc.n, ch, cw, tc.oc, oh, ow, wantD)
		// The bias gradient: wantD's channel sums, in float64.
		sums := make([]float64, tc.oc)
		for i, v := range wantD {
			sums[i%tc.oc] += float64(v)
		}
		var plainB []float32
		for set := 0; set <= isa(); set++ {
			d, db := make([]float32, len(z)), make([]float32, tc.oc)
			for i := range d {
				d[i] = float32(math.NaN())
			}
			maxPoolGradCodesISA(codes, dout, tc.n, ch, cw, tc.oc, oh, ow, d, db, nil, set)
			for i := range d {
				if math.Float32bits(d[i]) != math.Float32bits(wantD[i]) {
					t.Fatalf("%+v set %d: din[%d] = %g from codes, %g searching the windows", tc, set, i, d[i], wantD[i])
				}
			}
			near(t, fmt.Sprintf("%+v set %d bias gradient", tc, set), db, sums, 1e-6)
			if set == 0 {
				plainB = db
			}
			for j := range db {
				if math.Float32bits(db[j]) != math.Float32bits(plainB[j]) {
					t.Fatalf("%+v set %d: bias gradient %d = %g, plain C %g", tc, set, j, db[j], plainB[j])
				}
			}
		}
		// The same sums on one core, with scratch left over.
		prev := runtime.GOMAXPROCS(1)
		oneB, acc := make([]float32, tc.oc), make([]float64, ColSumsScratch(tc.oc))
		for i := range acc {
			acc[i] = 1e30
		}
		MaxPoolGradCodes(codes, dout, tc.n, ch, cw, tc.oc, oh, ow, make([]float32, len(z)), oneB, acc)
		runtime.GOMAXPROCS(prev)
		for j := range oneB {
			if math.Float32bits(oneB[j]) != math.Float32bits(plainB[j]) {
				t.Fatalf("%+v: bias gradient %d = %g on one core with scratch, %g", tc, j, oneB[j], plainB[j])
			}
		}
		// Windows whose maximum is positive and shared: the tie rule shows.
		for n := range tc.n {
			for y := range oh {
				for x := range ow {
					for c := range tc.oc {
						at := func(dy, dx int) float32 { return z[((n*ch+2*y+dy)*cw+2*x+dx)*tc.oc+c] }
						m := want[((n*oh+y)*ow+x)*tc.oc+c]
						cnt := 0
						for _, v := range []float32{at(0, 0), at(0, 1), at(1, 0), at(1, 1)} {
							if v == m {
								cnt++
							}
						}
						if m > 0 && cnt > 1 {
							ties++
						}
					}
				}
			}
		}
		if ties == 0 {
			t.Fatalf("%+v: no window with a shared positive maximum: the tie rule is not checked", tc)
		}
	}
}
