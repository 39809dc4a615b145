package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

func randSlice(r *rand.Rand, n int, lo, hi float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(lo + (hi-lo)*r.Float64())
	}
	return s
}

// convOracle is the plain-loop definition: Keras Conv2D, valid padding, NHWC, HWIO.
func convOracle(in, k, b []float32, n, h, w, c, kh, kw, oc, sh, sw int) []float64 {
	oh, ow := OutSize(h, kh, sh), OutSize(w, kw, sw)
	out := make([]float64, n*oh*ow*oc)
	for i := 0; i < n; i++ {
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				for o := 0; o < oc; o++ {
					s := float64(b[o])
					for ky := 0; ky < kh; ky++ {
						for kx := 0; kx < kw; kx++ {
							for ci := 0; ci < c; ci++ {
								s += float64(in[((i*h+y*sh+ky)*w+x*sw+kx)*c+ci]) * float64(k[((ky*kw+kx)*c+ci)*oc+o])
							}
						}
					}
					out[((i*oh+y)*ow+x)*oc+o] = s
				}
			}
		}
	}
	return out
}

func close32(t *testing.T, what string, got []float32, want []float64, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, want %d", what, len(got), len(want))
	}
	scale := 0.0
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	for i := range got {
		if d := math.Abs(float64(got[i]) - want[i]); !(d <= rel*scale) {
			t.Fatalf("%s[%d] = %g, want %g (|diff| %g > %g)", what, i, got[i], want[i], d, rel*scale)
		}
	}
}

// convCase is a convolution to test: batch, input size, window, output
// channels, strides.
type convCase struct{ n, h, w, c, kh, kw, oc, sh, sw int }

// convCases are the lab's DeepID layers, strides with an odd channel count,
// channel counts around the vector widths, and dense layers.
var convCases = []convCase{
	{3, 55, 47, 3, 4, 4, 20, 1, 1},
	{2, 26, 22, 20, 3, 3, 40, 1, 1},
	{5, 12, 10, 40, 3, 3, 60, 1, 1},
	{7, 5, 4, 60, 2, 2, 80, 1, 1},
	{4, 9, 8, 5, 3, 2, 7, 2, 3},
	{3, 7, 7, 4, 3, 3, 16, 1, 1},
	{3, 7, 7, 4, 3, 3, 33, 1, 1},
	{13, 1, 1, 1200, 1, 1, 160, 1, 1},
	{9, 1, 1, 160, 1, 1, 1283, 1, 1},
	{1, 3, 3, 1, 3, 3, 1, 1, 1},
}

// make draws an input and weights, and returns the packed convolution,
// the output size and the float64 oracle's output.
func (tc convCase) make(r *rand.Rand) (in []float32, cv *Conv, oh, ow int, want []float64) {
	in = randSlice(r, tc.n*tc.h*tc.w*tc.c, 0, 1)
	k := randSlice(r, tc.kh*tc.kw*tc.c*tc.oc, -1, 1)
	b := randSlice(r, tc.oc, -1, 1)
	cv = NewConv(k, b, tc.kh, tc.kw, tc.c, tc.oc, tc.sh, tc.sw)
	oh, ow = OutSize(tc.h, tc.kh, tc.sh), OutSize(tc.w, tc.kw, tc.sw)
	return in, cv, oh, ow, convOracle(in, k, b, tc.n, tc.h, tc.w, tc.c, tc.kh, tc.kw, tc.oc, tc.sh, tc.sw)
}

func TestConvForward(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range convCases {
		in, cv, oh, ow, want := tc.make(r)
		got := make([]float32, tc.n*oh*ow*tc.oc)
		cv.Forward(in, tc.n, tc.h, tc.w, false, got)
		close32(t, "conv", got, want, 1e-5)

		relu := make([]float64, len(want))
		for i, v := range want {
			relu[i] = math.Max(v, 0)
		}
		cv.Forward(in, tc.n, tc.h, tc.w, true, got)
		close32(t, "conv+relu", got, relu, 1e-5)

		if oh < 2 || ow < 2 {
			continue
		}
		// Fused pooling equals pooling the rectified output.
		pooled := make([]float32, tc.n*(oh/2)*(ow/2)*tc.oc)
		cv.ForwardPool(in, tc.n, tc.h, tc.w, true, pooled)
		ref := make([]float32, len(pooled))
		Pool{2, 2, 2, 2, 0, 0}.MaxPool(got, tc.n, oh, ow, tc.oc, oh/2, ow/2, ref)
		for i := range ref {
			if ref[i] != pooled[i] {
				t.Fatalf("conv+pool[%d] = %g, want %g", i, pooled[i], ref[i])
			}
		}
	}
}

// TestConvISA: every kernel set the CPU runs gives the oracle's values, and
// the vector sets give identical bits (same FMAs in the same order per
// output), so switching sets changes no result.
func TestConvISA(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range convCases {
		in, cv, oh, ow, want := tc.make(r)
		var vec []float32
		for set := 0; set <= isa(); set++ {
			got := make([]float32, tc.n*oh*ow*tc.oc)
			cv.forwardISA(in, tc.n, tc.h, tc.w, false, got, set)
			close32(t, fmt.Sprintf("conv %v set %d", tc, set), got, want, 1e-5)
			if set == 0 {
				continue
			}
			if vec == nil {
				vec = got
				continue
			}
			for i := range got {
				if got[i] != vec[i] {
					t.Fatalf("conv %v: set %d [%d] = %g, set 1 %g", tc, set, i, got[i], vec[i])
				}
			}
		}
	}
}

// TestGradISA: the kernel gradient has the same bits on the AVX2 and
// AVX-512 sets (same FMAs, same order), the input gradient on all three
// (products then sums, no FMA on any).
func TestGradISA(t *testing.T) {
	if isa() < 2 {
		t.Skip("no AVX-512")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct{ n, h, w, c, kh, kw, oc, sh, sw int }{
		{3, 55, 47, 3, 4, 4, 20, 1, 1},
		{2, 26, 22, 20, 3, 3, 40, 1, 1},
		{5, 12, 10, 40, 3, 3, 60, 1, 1},
		{7, 5, 4, 60, 2, 2, 80, 1, 1},
		{4, 9, 8, 5, 3, 2, 7, 2, 3},
		{2, 7, 7, 4, 3, 3, 33, 1, 1},  // 2 vectors and 1 packed channel
		{2, 9, 10, 8, 2, 3, 22, 1, 1}, // 1 vector and 6 packed channels
		{9, 1, 1, 160, 1, 1, 1283, 1, 1},
	} {
		oh, ow := OutSize(tc.h, tc.kh, tc.sh), OutSize(tc.w, tc.kw, tc.sw)
		in := randSlice(r, tc.n*tc.h*tc.w*tc.c, 0, 1)
		k := randSlice(r, tc.kh*tc.kw*tc.c*tc.oc, -1, 1)
		dout := randSlice(r, tc.n*oh*ow*tc.oc, -1, 1)
		for i := range dout {
			if i%3 == 0 {
				dout[i] = 0 // as after a ReLU: skipped
			}
		}
		cv := NewConv(k, make([]float32, tc.oc), tc.kh, tc.kw, tc.c, tc.oc, tc.sh, tc.sw)
		var dks, dins [3][]float32
		for set := 0; set <= 2; set++ {
			dks[set] = make([]float32, len(k))
			dins[set] = make([]float32, len(in))
			cv.gradISA(in, dout, k, tc.n, tc.h, tc.w, dks[set], make([]float32, tc.oc), dins[set], set)
		}
		for i := range k {
			if dks[2][i] != dks[1][i] {
				t.Fatalf("%v: dk[%d] AVX-512 %g, AVX2 %g", tc, i, dks[2][i], dks[1][i])
			}
		}
		// The plain loops sum in another order: the vector sets agree with
		// them to rounding (a check of the vector sets' tiling and blocks).
		plain := make([]float64, len(k))
		for i, v := range dks[0] {
			plain[i] = float64(v)
		}
		close32(t, fmt.Sprintf("dk %v", tc), dks[2], plain, 1e-5)
		for i := range in {
			if dins[2][i] != dins[0][i] || dins[1][i] != dins[0][i] {
				t.Fatalf("%v: din[%d] AVX-512 %g, AVX2 %g, plain %g", tc, i, dins[2][i], dins[1][i], dins[0][i])
			}
		}
	}
}

// TestReLU: the kernels agree with Go's max(a, 0) bit for bit, NaN and -0 included.
func TestReLU(t *testing.T) {
	nan := float32(math.NaN())
	x := []float32{1, -1, 0, float32(math.Copysign(0, -1)), nan, float32(math.Inf(1)), float32(math.Inf(-1)), 1e-40, -1e-40}
	r := rand.New(rand.NewPCG(9, 10))
	x = append(x, randSlice(r, 200003, -1, 1)...)
	dy := randSlice(r, len(x), -1, 1)
	o, g := make([]float32, len(x)), make([]float32, len(x))
	ReLU(x, o)
	ReLUGrad(x, dy, g)
	for i, a := range x {
		want, wg := max(a, 0), float32(0)
		if a > 0 {
			wg = dy[i]
		}
		if math.Float32bits(o[i]) != math.Float32bits(want) && !(a != a && o[i] != o[i]) {
			t.Fatalf("relu(%g) = %g, want %g", a, o[i], want)
		}
		if math.Float32bits(g[i]) != math.Float32bits(wg) {
			t.Fatalf("relu grad at %g = %g, want %g", a, g[i], wg)
		}
	}
}

func TestMaxPool(t *testing.T) {
	cases := []struct{ n, h, w, c, ph, pw, sh, sw, padT, padL, oh, ow int }{
		{3, 52, 44, 20, 2, 2, 2, 2, 0, 0, 26, 22},
		{2, 10, 8, 60, 2, 2, 2, 2, 0, 0, 5, 4},
		{2, 11, 9, 3, 2, 2, 2, 2, 0, 0, 5, 4}, // floor
		{2, 5, 5, 2, 3, 3, 2, 2, 1, 1, 3, 3},  // "same"-style padding
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range cases {
		in := randSlice(r, tc.n*tc.h*tc.w*tc.c, -1, 1)
		p := Pool{tc.ph, tc.pw, tc.sh, tc.sw, tc.padT, tc.padL}
		got := make([]float32, tc.n*tc.oh*tc.ow*tc.c)
		p.MaxPool(in, tc.n, tc.h, tc.w, tc.c, tc.oh, tc.ow, got)
		want := make([]float64, len(got))
		for i := 0; i < tc.n; i++ {
			for y := 0; y < tc.oh; y++ {
				for x := 0; x < tc.ow; x++ {
					for c := 0; c < tc.c; c++ {
						m := math.Inf(-1)
						for py := 0; py < tc.ph; py++ {
							for px := 0; px < tc.pw; px++ {
								yy, xx := y*tc.sh-tc.padT+py, x*tc.sw-tc.padL+px
								if yy < 0 || yy >= tc.h || xx < 0 || xx >= tc.w {
									continue
								}
								m = math.Max(m, float64(in[((i*tc.h+yy)*tc.w+xx)*tc.c+c]))
							}
						}
						want[((i*tc.oh+y)*tc.ow+x)*tc.c+c] = m
					}
				}
			}
		}
		close32(t, "maxpool", got, want, 0)
	}
}

// TestGradients checks the gradient kernels against central finite
// differences of the scalar loss sum(dout * forward(in)).
func TestGradients(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	n, h, w, c, kh, kw, oc, sh, sw := 2, 7, 6, 3, 3, 2, 5, 2, 1
	in := randSlice(r, n*h*w*c, -1, 1)
	k := randSlice(r, kh*kw*c*oc, -1, 1)
	b := randSlice(r, oc, -1, 1)
	oh, ow := OutSize(h, kh, sh), OutSize(w, kw, sw)
	dout := randSlice(r, n*oh*ow*oc, -1, 1)
	loss := func(in, k, b []float32) float64 {
		o := convOracle(in, k, b, n, h, w, c, kh, kw, oc, sh, sw)
		s := 0.0
		for i := range o {
			s += o[i] * float64(dout[i])
		}
		return s
	}
	cv := NewConv(k, b, kh, kw, c, oc, sh, sw)
	dk, db, din := make([]float32, len(k)), make([]float32, oc), make([]float32, len(in))
	for _, s := range [][]float32{dk, db, din} { // the gradients are set, not added
		for i := range s {
			s[i] = float32(math.NaN())
		}
	}
	cv.GradKernel(in, dout, n, h, w, dk, db)
	cv.GradInput(dout, k, n, h, w, din)
	const eps = 1e-2
	fd := func(s []float32, i int, f func() float64) float64 {
		old := s[i]
		s[i] = old + eps
		up := f()
		s[i] = old - eps
		down := f()
		s[i] = old
		return (up - down) / (2 * eps)
	}
	f := func() float64 { return loss(in, k, b) }
	for i := range k {
		if g := fd(k, i, f); !(math.Abs(g-float64(dk[i])) <= 1e-3*(1+math.Abs(g))) { // NaN fails
			t.Fatalf("dk[%d] = %g, finite difference %g", i, dk[i], g)
		}
	}
	for i := range b {
		if g := fd(b, i, f); !(math.Abs(g-float64(db[i])) <= 1e-3*(1+math.Abs(g))) { // NaN fails
			t.Fatalf("db[%d] = %g, finite difference %g", i, db[i], g)
		}
	}
	for i := range in {
		if g := fd(in, i, f); !(math.Abs(g-float64(din[i])) <= 1e-3*(1+math.Abs(g))) { // NaN fails
			t.Fatalf("din[%d] = %g, finite difference %g", i, din[i], g)
		}
	}

	// Max pooling: the gradient goes to the window's first maximum.
	p := Pool{2, 2, 2, 2, 0, 0}
	ph, pw := 3, 3
	// Distinct values 0.1 apart keep the finite differences away from ties.
	pin := make([]float32, n*h*w*c)
	for i, j := range r.Perm(len(pin)) {
		pin[i] = 0.1 * float32(j)
	}
	pout := make([]float32, n*ph*pw*c)
	p.MaxPool(pin, n, h, w, c, ph, pw, pout)
	pd := randSlice(r, len(pout), -1, 1)
	pdin := make([]float32, len(pin))
	p.MaxPoolGrad(pin, pd, n, h, w, c, ph, pw, pdin)
	ploss := func() float64 {
		o := make([]float32, len(pout))
		p.MaxPool(pin, n, h, w, c, ph, pw, o)
		s := 0.0
		for i := range o {
			s += float64(o[i]) * float64(pd[i])
		}
		return s
	}
	for i := range pin {
		if g := fd(pin, i, ploss); math.Abs(g-float64(pdin[i])) > 1e-3*(1+math.Abs(g)) {
			t.Fatalf("maxpool din[%d] = %g, finite difference %g", i, pdin[i], g)
		}
	}
}

// BenchmarkTrunk runs the lab's conv_1..pool_3 on random weights.
func BenchmarkTrunk(b *testing.B) {
	for _, n := range []int{64, 256} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchTrunk(b, n) })
	}
}

func benchTrunk(b *testing.B, n int) {
	r := rand.New(rand.NewPCG(7, 8))
	c1 := NewConv(randSlice(r, 4*4*3*20, -0.1, 0.1), randSlice(r, 20, 0, 0.1), 4, 4, 3, 20, 1, 1)
	c2 := NewConv(randSlice(r, 3*3*20*40, -0.1, 0.1), randSlice(r, 40, 0, 0.1), 3, 3, 20, 40, 1, 1)
	c3 := NewConv(randSlice(r, 3*3*40*60, -0.1, 0.1), randSlice(r, 60, 0, 0.1), 3, 3, 40, 60, 1, 1)
	in := randSlice(r, n*55*47*3, 0, 255)
	p1 := make([]float32, n*26*22*20)
	p2 := make([]float32, n*12*10*40)
	p3 := make([]float32, n*5*4*60)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c1.ForwardPool(in, n, 55, 47, true, p1)
		c2.ForwardPool(p1, n, 26, 22, true, p2)
		c3.ForwardPool(p2, n, 12, 10, true, p3)
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "images/s")
}

func BenchmarkLayers(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	const n = 256
	for _, tc := range []struct {
		name                string
		h, w, c, kh, kw, oc int
	}{{"conv1", 55, 47, 3, 4, 4, 20}, {"conv2", 26, 22, 20, 3, 3, 40}, {"conv3", 12, 10, 40, 3, 3, 60}, {"fc1", 1, 1, 1200, 1, 1, 160}, {"out", 1, 1, 160, 1, 1, 1283}} {
		b.Run(tc.name, func(b *testing.B) {
			cv := NewConv(randSlice(r, tc.kh*tc.kw*tc.c*tc.oc, -0.1, 0.1), randSlice(r, tc.oc, 0, 0.1), tc.kh, tc.kw, tc.c, tc.oc, 1, 1)
			in := randSlice(r, n*tc.h*tc.w*tc.c, 0, 1)
			oh, ow := OutSize(tc.h, tc.kh, 1), OutSize(tc.w, tc.kw, 1)
			out := make([]float32, n*oh*ow*tc.oc)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cv.Forward(in, n, tc.h, tc.w, true, out)
			}
			fl := float64(n*oh*ow*tc.oc*tc.kh*tc.kw*tc.c*2) * float64(b.N)
			b.ReportMetric(fl/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkGrad times the fine-tuning gradients of the lab's conv layers on
// one thread: GradKernel on 64 images (the 8 fixed parts of 8 images the Go
// side cuts a batch into) and GradInput on 32 (one worker's share of 64).
// A third of the output gradients are zero, as after a ReLU.
func BenchmarkGrad(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		name                string
		h, w, c, kh, kw, oc int
	}{{"conv1", 55, 47, 3, 4, 4, 20}, {"conv2", 26, 22, 20, 3, 3, 40}, {"conv3", 12, 10, 40, 3, 3, 60}, {"conv4", 5, 4, 60, 2, 2, 80}} {
		oh, ow := OutSize(tc.h, tc.kh, 1), OutSize(tc.w, tc.kw, 1)
		k := randSlice(r, tc.kh*tc.kw*tc.c*tc.oc, -0.1, 0.1)
		cv := NewConv(k, make([]float32, tc.oc), tc.kh, tc.kw, tc.c, tc.oc, 1, 1)
		macs := func(n int) float64 { return float64(n * oh * ow * tc.oc * tc.kh * tc.kw * tc.c) }
		for _, kind := range []string{"kernel", "input"} {
			n := 64
			if kind == "input" {
				if tc.name == "conv1" {
					continue // the first layer's input gradient is never needed
				}
				n = 32
			}
			in := randSlice(r, n*tc.h*tc.w*tc.c, 0, 1)
			dout := randSlice(r, n*oh*ow*tc.oc, -1, 1)
			for i := range dout {
				if i%3 == 0 {
					dout[i] = 0
				}
			}
			dk, db, din := make([]float32, len(k)), make([]float32, tc.oc), make([]float32, len(in))
			b.Run(kind+"/"+tc.name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if kind == "kernel" {
						cv.GradKernel(in, dout, n, tc.h, tc.w, dk, db)
					} else {
						cv.GradInput(dout, k, n, tc.h, tc.w, din)
					}
				}
				b.ReportMetric(macs(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
			})
		}
	}
}

// TestGradInputParts: a batch cut into parts over the cores, all reading
// the kernel GradInput packed once, gives each image the input gradient
// one call on the whole batch gives, bit for bit; a second call with other
// weights packs them anew.
func TestGradInputParts(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	const n, h, w, c, kh, kw, oc = 40, 12, 10, 40, 3, 3, 60
	oh, ow := OutSize(h, kh, 1), OutSize(w, kw, 1)
	cv := NewShape(kh, kw, c, oc, 1, 1)
	in := randSlice(r, n*h*w*c, 0, 1)
	for call := range 2 {
		k := randSlice(r, kh*kw*c*oc, -0.1, 0.1)
		dout := randSlice(r, n*oh*ow*oc, -1, 1)
		got := make([]float32, len(in))
		for i := range got { // set, not added
			got[i] = float32(math.NaN())
		}
		cv.GradInput(dout, k, n, h, w, got)
		want := make([]float32, len(in))
		cv.gradISA(in, dout, k, n, h, w, make([]float32, len(k)), make([]float32, oc), want, isa())
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("call %d: din[%d] (image %d) = %v in parts, %v in one call", call, i, i/(h*w*c), got[i], want[i])
			}
		}
	}
}

// TestWithBias: a Conv with other biases computes what a Conv packed with
// them does, bit for bit, and leaves the original's biases as they were.
func TestWithBias(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	const n, in, out = 9, 70, 37
	k := randSlice(r, in*out, -1, 1)
	b, b2 := randSlice(r, out, -1, 1), randSlice(r, out, -1, 1)
	x := randSlice(r, n*in, -1, 1)
	run := func(cv *Conv) []float32 {
		y := make([]float32, n*out)
		cv.Forward(x, n, 1, 1, false, y)
		return y
	}
	orig := NewDense(k, b, in, out)
	for _, tc := range []struct {
		name string
		with *Conv
		want []float32
	}{
		{"other biases", orig.WithBias(b2), run(NewDense(k, b2, in, out))},
		{"no biases", orig.WithBias(nil), run(NewDense(k, make([]float32, out), in, out))},
		{"the original after", orig, run(NewDense(k, b, in, out))},
	} {
		got := run(tc.with)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(tc.want[i]) {
				t.Fatalf("%s: out[%d] = %v, want %v", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}

// TestSerial: a Serial Conv's calls give the split calls' bits, every
// image of the batch written.
func TestSerial(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	const n, h, w, c, kh, kw, oc = 40, 9, 8, 5, 3, 3, 12
	k, b := randSlice(r, kh*kw*c*oc, -1, 1), randSlice(r, oc, -1, 1)
	x := randSlice(r, n*h*w*c, -1, 1)
	split, serial := NewConv(k, b, kh, kw, c, oc, 1, 1), NewConv(k, b, kh, kw, c, oc, 1, 1)
	serial.Serial = true
	for _, pool := range []bool{false, true} {
		size := n * OutSize(h, kh, 1) * OutSize(w, kw, 1) * oc
		if pool {
			size = n * (OutSize(h, kh, 1) / 2) * (OutSize(w, kw, 1) / 2) * oc
		}
		want, got := make([]float32, size), make([]float32, size)
		for i := range got {
			got[i] = float32(math.NaN())
		}
		if pool {
			split.ForwardPool(x, n, h, w, true, want)
			serial.ForwardPool(x, n, h, w, true, got)
		} else {
			split.Forward(x, n, h, w, true, want)
			serial.Forward(x, n, h, w, true, got)
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("pool %v: out[%d] = %v serial, %v split", pool, i, got[i], want[i])
			}
		}
	}
}
