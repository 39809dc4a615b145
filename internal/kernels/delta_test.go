package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// sparseRows makes rows changes of size values with about frac of them
// non-zero, listed per row in ascending order (ptr, idx).
func sparseRows(r *rand.Rand, rows, size int, frac float64) (d []float32, ptr, idx []int32) {
	d = make([]float32, rows*size)
	ptr = make([]int32, rows+1)
	for i := 0; i < rows; i++ {
		for j := 0; j < size; j++ {
			if r.Float64() < frac {
				d[i*size+j] = r.Float32()*2 - 1
				idx = append(idx, int32(j))
			}
		}
		ptr[i+1] = int32(len(idx))
	}
	return d, ptr, idx
}

// TestSparseConv: the sparse update against plain loops, the same bits on
// the AVX2 and AVX-512 sets, and the same bits from a row's list as from
// scanning the row (a list out of order is scanned), for lists of a
// single channel, as the pruning engine makes them, and of many.
func TestSparseConv(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, g := range []ConvGeom{
		{H: 5, W: 4, C: 60, KH: 2, KW: 2, OC: 80, SH: 1, SW: 1, OH: 4, OW: 3},
		{H: 7, W: 6, C: 5, KH: 3, KW: 3, OC: 19, SH: 2, SW: 1, PadT: 1, PadL: 1, OH: 4, OW: 6},
	} {
		const rows = 9
		isz := g.H * g.W * g.C
		d, ptr, idx := sparseRows(r, rows, isz, 0.1)
		// Row 0: a single channel, as Zero lists it.
		clear(d[:isz])
		var one []int32
		for q := 3 % g.C; q < isz; q += g.C {
			d[q] = r.Float32() + 0.5
			one = append(one, int32(q))
		}
		idx = slices.Concat(one, idx[ptr[1]:])
		shift := int32(len(one)) - ptr[1]
		for i := 1; i <= rows; i++ {
			ptr[i] += shift
		}
		// The same rows with every list reversed: scanned.
		rev := slices.Clone(idx)
		for i := 0; i < rows; i++ {
			slices.Reverse(rev[ptr[i]:ptr[i+1]])
		}
		k := randSlice(r, g.KH*g.KW*g.C*g.OC, -1, 1)
		base := randSlice(r, rows*g.OH*g.OW*g.OC, -1, 1)
		want := make([]float64, len(base))
		for i := 0; i < rows; i++ {
			for y := 0; y < g.OH; y++ {
				for x := 0; x < g.OW; x++ {
					for o := 0; o < g.OC; o++ {
						s := float64(base[((i*g.OH+y)*g.OW+x)*g.OC+o])
						for ky := 0; ky < g.KH; ky++ {
							for kx := 0; kx < g.KW; kx++ {
								py, px := y*g.SH+ky-g.PadT, x*g.SW+kx-g.PadL
								if py < 0 || py >= g.H || px < 0 || px >= g.W {
									continue
								}
								for c := 0; c < g.C; c++ {
									s += float64(d[((i*g.H+py)*g.W+px)*g.C+c]) * float64(k[((ky*g.KW+kx)*g.C+c)*g.OC+o])
								}
							}
						}
						want[((i*g.OH+y)*g.OW+x)*g.OC+o] = s
					}
				}
			}
		}
		var vec []float32
		for set := 0; set <= isa(); set++ {
			got := slices.Clone(base)
			sparseConv(rows, ptr, idx, d, g, k, got, set)
			close32(t, fmt.Sprintf("%+v set %d", g, set), got, want, 1e-5)
			scanned := slices.Clone(base)
			sparseConv(rows, ptr, rev, d, g, k, scanned, set)
			if !slices.Equal(got, scanned) {
				t.Fatalf("%+v set %d: listed and scanned rows differ", g, set)
			}
			if set == 1 {
				vec = got
			} else if set == 2 && !slices.Equal(got, vec) {
				t.Fatalf("%+v: set 2 differs from set 1", g)
			}
		}
	}
}

// TestDeltaISA: the sparse dense-layer update, the ReLU change and the
// index lists give the same bits and lists on every vector set, and the
// plain set agrees within float32 rounding.
func TestDeltaISA(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct{ rows, k, u int }{{7, 960, 160}, {3, 37, 41}, {5, 20, 1283}} {
		d, ptr, idx := sparseRows(r, tc.rows, tc.k, 0.3)
		w := randSlice(r, tc.k*tc.u, -1, 1)
		base := randSlice(r, tc.rows*tc.u, -1, 1)
		var vec []float32
		for set := 0; set <= isa(); set++ {
			got := slices.Clone(base)
			csrDense(tc.rows, ptr, idx, d, tc.k, w, tc.u, got, set)
			if set == 0 {
				want := slices.Clone(base)
				for i := 0; i < tc.rows; i++ {
					for _, j := range idx[ptr[i]:ptr[i+1]] {
						for u := 0; u < tc.u; u++ {
							want[i*tc.u+u] += d[i*tc.k+int(j)] * w[int(j)*tc.u+u]
						}
					}
				}
				close32(t, fmt.Sprintf("csr %v", tc), got, to64(want), 1e-5)
				continue
			}
			if vec == nil {
				vec = got
			} else if !slices.Equal(got, vec) {
				t.Fatalf("csr %v: set %d differs from set 1", tc, set)
			}
		}
	}

	// ReLUApply and AddIndex over state rows 1, 4, 6 of 8, with a size
	// that is not a multiple of the vector width and exact zeros.
	rows := []int{1, 4, 6}
	const size = 37
	dd := randSlice(r, len(rows)*size, -1, 1)
	for i := range dd {
		if i%3 == 0 {
			dd[i] = 0
		}
	}
	pre := randSlice(r, 8*size, -1, 1)
	out := make([]float32, len(pre))
	for i, v := range pre {
		out[i] = max(v, 0)
	}
	type result struct {
		d, pre, out []float32
		idx, ptr    []int32
		n           int
	}
	run := func(set int, relu bool) result {
		res := result{d: slices.Clone(dd), pre: slices.Clone(pre), out: slices.Clone(out),
			idx: make([]int32, len(dd)), ptr: make([]int32, len(rows)+1)}
		if relu {
			res.n = reluApply(rows, size, res.d, res.pre, res.out, res.idx, res.ptr, set)
		} else {
			res.n = addIndex(rows, size, res.d, res.out, res.idx, res.ptr, set)
		}
		res.idx = res.idx[:res.n]
		return res
	}
	for _, relu := range []bool{true, false} {
		want := run(0, relu)
		// The plain set against the definition.
		for r, row := range rows {
			for j := 0; j < size; j++ {
				v := dd[r*size+j]
				o, p := out[row*size+j], pre[row*size+j]
				if relu && v != 0 {
					o = max(p+v, 0) - o
				} else if !relu {
					o = v
				} else {
					o = 0
				}
				listed := slices.Contains(want.idx[want.ptr[r]:want.ptr[r+1]], int32(j))
				if listed != (o != 0) {
					t.Fatalf("relu %v: row %d entry %d listed %v, change %g", relu, row, j, listed, o)
				}
			}
		}
		for set := 1; set <= isa(); set++ {
			got := run(set, relu)
			if got.n != want.n || !slices.Equal(got.idx, want.idx) || !slices.Equal(got.ptr, want.ptr) ||
				!slices.Equal(got.d, want.d) || !slices.Equal(got.out, want.out) {
				t.Fatalf("relu %v: set %d differs from the plain set (n %d vs %d)", relu, set, got.n, want.n)
			}
		}
	}
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// TestTopNScan: TopN gives what the plain scan gives (a Go copy of it),
// also with NaN and infinite logits, which the vector paths must not
// filter differently.
func TestTopNScan(t *testing.T) {
	scan := func(z []float32, k int) ([]int32, []float32, int) {
		idx, val := make([]int32, k), make([]float32, k)
		m := 0
		for j, v := range z {
			if m == k && v <= val[k-1] {
				continue
			}
			p := min(m, k-1)
			for p > 0 && val[p-1] < v {
				if p < k {
					val[p], idx[p] = val[p-1], idx[p-1]
				}
				p--
			}
			val[p], idx[p] = v, int32(j)
			if m < k {
				m++
			}
		}
		return idx[:m], val[:m], m
	}
	r := rand.New(rand.NewPCG(9, 10))
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for _, n := range []int{64, 65, 100, 1283} {
		for _, k := range []int{1, 5, 16} {
			for trial := 0; trial < 60; trial++ {
				z := randSlice(r, n, -3, 3)
				switch trial % 5 {
				case 1:
					z[r.IntN(n)] = nan
				case 2:
					z[r.IntN(n)], z[r.IntN(n)] = inf, -inf
				case 3:
					for i := range z {
						z[i] = float32(math.Inf(-1))
					}
					z[n-1] = 0
				case 4:
					for i := range z {
						z[i] = float32(r.IntN(3))
					}
				}
				if trial%6 == 5 { // signed zeros tie; the largest values in one lane or in order
					for i := range z {
						z[i] = float32(math.Copysign(0, float64(r.IntN(2)-1)))
					}
					for i := trial % 16; i < n; i += 16 * (1 + trial%3) {
						z[i] = float32(i)
					}
				}
				wi, wv, wm := scan(z, k)
				idx, val := make([]int32, k), make([]float32, k)
				m := TopN(z, idx, val)
				if m != wm || !slices.Equal(idx[:m], wi) || !slices.EqualFunc(val[:m], wv, func(a, b float32) bool {
					return math.Float32bits(a) == math.Float32bits(b)
				}) {
					t.Fatalf("n %d k %d trial %d: got %v %v, scan %v %v", n, k, trial, idx[:m], val[:m], wi, wv)
				}
			}
		}
	}
}

// TestTopMoves: the tracked classes' moves and |a-b|² against float64
// sums, for input sizes with and without a tail past the vector width.
func TestTopMoves(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, hdim := range []int{160, 37, 8} {
		const k = 50
		a, b := randSlice(r, hdim, -2, 2), randSlice(r, hdim, -2, 2)
		for i := 0; i < hdim; i += 3 {
			b[i] = a[i] // unchanged inputs
		}
		wt := randSlice(r, k*hdim, -1, 1)
		top := []int32{7, 0, 49, 23, 7}
		dv, tmp := make([]float32, len(top)), make([]float32, hdim)
		d2 := TopMoves(a, b, wt, top, dv, tmp)
		want2, scale := 0.0, 0.0
		for i := range a {
			d := float64(a[i] - b[i])
			want2 += d * d
			scale += math.Abs(d)
		}
		if math.Abs(d2-want2) > 1e-12*want2 {
			t.Fatalf("hdim %d: |a-b|² %v, want %v", hdim, d2, want2)
		}
		for q, j := range top {
			want := 0.0
			for i := range a {
				want += float64(wt[int(j)*hdim+i]) * float64(a[i]-b[i])
			}
			if math.Abs(float64(dv[q])-want) > 1e-5*scale {
				t.Fatalf("hdim %d class %d: move %v, want %v", hdim, j, dv[q], want)
			}
		}
	}
}
