package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// denseCase are the products' shapes: remainders of the row tiles (4),
// the 16-lane vectors and the 80-column panels, and the lab's dense layers.
var denseCases = []struct{ n, k, u int }{
	{1, 1, 1}, {3, 0, 5}, {3, 5, 7}, {5, 17, 33}, {9, 31, 81}, {6, 70, 161}, {64, 1200, 160}, {64, 160, 1283}, {13, 9, 200},
}

// denseProducts runs the three products on kernel set set, outputs filled
// with NaN first (every entry must be set).
func denseProducts(x, w, b, dy []float32, n, k, u, set int) (y, dw, dx []float32) {
	nan := func(m int) []float32 {
		s := make([]float32, m)
		for i := range s {
			s[i] = float32(math.NaN())
		}
		return s
	}
	y, dw, dx = nan(n*u), nan(k*u), nan(n*k)
	denseForwardISA(x, w, b, n, k, u, y, set)
	denseGradKernelISA(x, dy, n, k, u, dw, set)
	denseGradInputISA(dy, w, n, k, u, dx, set)
	return y, dw, dx
}

// near fails unless every got[i] is within tol·(1+|want[i]|) of want[i]
// (NaN never is).
func near(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); !(d <= tol*(1+math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %g, want %g", what, i, got[i], want[i])
		}
	}
}

// TestDense: the products against float64 loops, and every kernel set and
// one core against all give the same bits.
func TestDense(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, tc := range denseCases {
		n, k, u := tc.n, tc.k, tc.u
		x, w, b, dy := randSlice(r, n*k, 0, 1), randSlice(r, k*u, -0.1, 0.1), randSlice(r, u, -0.5, 0.5), randSlice(r, n*u, -1, 1)
		for i := range x { // zeros, as after a ReLU
			if i%3 == 1 {
				x[i] = 0
			}
		}
		wy, wdw, wdx := make([]float64, n*u), make([]float64, k*u), make([]float64, n*k)
		for i := range n {
			for j := range u {
				s := float64(b[j])
				for l := range k {
					s += float64(x[i*k+l]) * float64(w[l*u+j])
				}
				wy[i*u+j] = s
			}
		}
		for l := range k {
			for j := range u {
				s := 0.0
				for i := range n {
					s += float64(x[i*k+l]) * float64(dy[i*u+j])
				}
				wdw[l*u+j] = s
			}
		}
		for i := range n {
			for l := range k {
				s := 0.0
				for j := range u {
					s += float64(dy[i*u+j]) * float64(w[l*u+j])
				}
				wdx[i*k+l] = s
			}
		}
		name := fmt.Sprintf("n%d k%d u%d", n, k, u)
		y, dw, dx := denseProducts(x, w, b, dy, n, k, u, isa())
		near(t, name+" forward", y, wy, 1e-5)
		near(t, name+" kernel gradient", dw, wdw, 1e-5)
		near(t, name+" input gradient", dx, wdx, 1e-5)
		same := func(what string, a, b []float32) {
			t.Helper()
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("%s %s[%d]: %g, against %g on all cores with the widest set", name, what, i, a[i], b[i])
				}
			}
		}
		for set := 0; set < isa(); set++ {
			y1, dw1, dx1 := denseProducts(x, w, b, dy, n, k, u, set)
			same(fmt.Sprintf("set %d forward", set), y1, y)
			same(fmt.Sprintf("set %d kernel gradient", set), dw1, dw)
			same(fmt.Sprintf("set %d input gradient", set), dx1, dx)
		}
		prev := runtime.GOMAXPROCS(1)
		y1, dw1, dx1 := denseProducts(x, w, b, dy, n, k, u, isa())
		runtime.GOMAXPROCS(prev)
		same("one core forward", y1, y)
		same("one core kernel gradient", dw1, dw)
		same("one core input gradient", dx1, dx)
	}
}

// BenchmarkDense times the lab's dense layers' training products on a batch
// of 64.
func BenchmarkDense(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 64
	for _, s := range [][2]int{{1200, 160}, {960, 160}, {160, 1283}} {
		k, u := s[0], s[1]
		w, bias := randSlice(r, k*u, -0.1, 0.1), randSlice(r, u, -0.1, 0.1)
		x, dy := randSlice(r, n*k, 0, 1), randSlice(r, n*u, -1, 1)
		y, dx, dw := make([]float32, n*u), make([]float32, n*k), make([]float32, k*u)
		for _, p := range []string{"forward", "kernel", "input"} {
			b.Run(fmt.Sprintf("%s/%dx%d", p, k, u), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					switch p {
					case "forward":
						DenseForward(x, w, bias, n, k, u, y)
					case "kernel":
						DenseGradKernel(x, dy, n, k, u, dw)
					default:
						DenseGradInput(dy, w, n, k, u, dx)
					}
				}
				b.ReportMetric(float64(n*k*u)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
			})
		}
	}
}

// TestSoftmaxXent: the softmax and cross-entropy of rows against math.Exp's
// in float64, the same bits on every kernel set and on one core, and NaN
// logits giving a NaN loss: rows of every remainder of 8, one whose terms
// underflow to subnormals and zero, one all equal, soft targets.
func TestSoftmaxXent(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, k := range []int{1, 7, 8, 13, 1283} {
		const rows = 6
		z, y := make([]float32, rows*k), make([]float32, rows*k)
		for i := range z {
			z[i] = float32(r.NormFloat64() * 5)
		}
		for row := range rows {
			y[row*k+r.IntN(k)] = 1
		}
		for j := range k {
			z[1*k+j] = float32(-800 * float64(j) / float64(k)) // spread: underflow
			z[2*k+j] = 3                                       // all equal
			y[3*k+j] = 1 / float32(k)                          // soft targets
		}
		p, loss := make([]float64, rows*k), make([]float64, rows)
		SoftmaxXent(z, y, k, p, loss)
		for row := range rows {
			zr := z[row*k : (row+1)*k]
			m := math.Inf(-1)
			for _, v := range zr {
				m = math.Max(m, float64(v))
			}
			sum := 0.0
			for _, v := range zr {
				sum += math.Exp(float64(v) - m)
			}
			lse, want := m+math.Log(sum), 0.0
			for j, v := range zr {
				want += float64(y[row*k+j]) * (lse - float64(v))
				pw := math.Exp(float64(v)-m) / sum
				if d := math.Abs(p[row*k+j] - pw); !(d <= 1e-14*pw+1e-300) {
					t.Fatalf("k %d row %d: p[%d] = %g, want %g", k, row, j, p[row*k+j], pw)
				}
			}
			if d := math.Abs(loss[row] - want); !(d <= 1e-13*(1+want)) {
				t.Fatalf("k %d row %d: loss %g, want %g", k, row, loss[row], want)
			}
		}
		for set := 0; set < isa(); set++ {
			p1, l1 := make([]float64, rows*k), make([]float64, rows)
			softmaxXentISA(z, y, k, p1, l1, set)
			for i := range p {
				if math.Float64bits(p1[i]) != math.Float64bits(p[i]) {
					t.Fatalf("k %d: set %d p[%d] = %g, widest set %g", k, set, i, p1[i], p[i])
				}
			}
			for i := range loss {
				if math.Float64bits(l1[i]) != math.Float64bits(loss[i]) {
					t.Fatalf("k %d: set %d loss[%d] = %g, widest set %g", k, set, i, l1[i], loss[i])
				}
			}
		}
		z[4*k+k/2] = float32(math.NaN())
		for set := 0; set <= isa(); set++ {
			softmaxXentISA(z, y, k, p, loss, set)
			if !math.IsNaN(loss[4]) || !math.IsNaN(p[4*k]) {
				t.Errorf("k %d set %d: a NaN logit gives loss %g, p %g", k, set, loss[4], p[4*k])
			}
		}
	}
}
