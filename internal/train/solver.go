package train

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"badprune/internal/kernels"
	"badprune/internal/workpool"
)

// The optimizers here reproduce, bit for bit on float32 weights, gorgonia's
// AdamSolver and Momentum as built by
//
//	G.NewAdamSolver(G.WithLearnRate(lr)[, G.WithL2Reg(l2)])
//	G.NewMomentum(G.WithLearnRate(lr)[, G.WithL2Reg(l2)], G.WithMomentum(0.9))
//
// (gorgonia v0.9.18: batch 1, no clipping, no L1), but in one pass over
// each weight instead of a dozen tensor operations, without allocating
// after the first step, and spread over the cores. Every float32
// operation of gorgonia's is kept, in its order and with its rounding:
// Adam's pass is kernels.Adam (C, vectorized, no fused multiply-adds);
// momentum's products are converted explicitly so that the Go compiler
// cannot fuse them.

// param is one trained tensor: its weights and the loss's gradient with
// respect to them, of the same length.
type param struct {
	w, g []float32
}

// params returns the weights and gradients of nodes, bound as dual values,
// appended to dst[:0].
func params(dst []param, nodes G.Nodes) ([]param, error) {
	dst = dst[:0]
	for _, n := range nodes {
		w, ok := n.Value().Data().([]float32)
		if !ok {
			return nil, fmt.Errorf("train: weights of %v are not float32", n.Name())
		}
		gv, err := n.Grad()
		if err != nil {
			return nil, fmt.Errorf("train: no gradient of %v: %w", n.Name(), err)
		}
		g, ok := gv.Data().([]float32)
		if !ok || len(g) != len(w) {
			return nil, fmt.Errorf("train: gradient of %v is not float32 of its weights' length", n.Name())
		}
		dst = append(dst, param{w, g})
	}
	return dst, nil
}

// solver updates weights from their gradients.
type solver interface {
	// step updates the weights of ps in place and zeroes their gradients,
	// as gorgonia's solvers do. ps must be the same tensors, in the same
	// order, at every step.
	step(ps []param)
}

// minPart is the fewest weights worth a goroutine of their own: a weight
// costs a few nanoseconds, starting a goroutine about a microsecond.
const minPart = 1 << 14

// spread runs an elementwise update over the concatenation of all
// parameters, cut into one contiguous range per core.
type spread struct {
	off  []int               // off[k] is where parameter k starts; off[len] the total
	part func(k, lo, hi int) // updates elements [lo, hi) of parameter k
	run  func(lo, hi int)    // s.cut, bound once so that a step allocates nothing
}

func newSpread(part func(k, lo, hi int)) *spread {
	s := &spread{part: part}
	s.run = s.cut
	return s
}

// over runs part over every element of ps.
func (s *spread) over(ps []param) {
	s.off = append(s.off[:0], 0)
	n := 0
	for _, p := range ps {
		n += len(p.w)
		s.off = append(s.off, n)
	}
	workpool.Split(n, minPart, s.run)
}

// cut runs part over the elements [lo, hi) of the concatenation.
func (s *spread) cut(lo, hi int) {
	for k := 0; k+1 < len(s.off); k++ {
		a, b := max(lo, s.off[k]), min(hi, s.off[k+1])
		if a < b {
			s.part(k, a-s.off[k], b-s.off[k])
		}
	}
}

// moments returns a zeroed slice per parameter of ps, or ms if it has them.
func moments(ms [][]float32, ps []param) [][]float32 {
	if ms != nil {
		if len(ms) != len(ps) {
			panic("train: the parameters changed between steps")
		}
		return ms
	}
	ms = make([][]float32, len(ps))
	for k, p := range ps {
		ms[k] = make([]float32, len(p.w))
	}
	return ms
}

// adam is gorgonia's AdamSolver: with g the gradient plus l2·w,
//
//	m ← β1·m + (1-β1)·g
//	v ← β2·v + (1-β2)·g²
//	w ← w + (-η·m/(1-β1ᵗ)) / (√(v/(1-β2ᵗ)) + ε)
type adam struct {
	eta, l2, beta1, beta2, eps float64
	iter                       int
	m, v                       [][]float32
	sp                         *spread

	// this step's parameters and float32 coefficients, for part
	ps   []param
	coef kernels.AdamCoef
}

// newAdam returns Adam with gorgonia's defaults, learning rate eta and,
// if l2 > 0, L2 regularization l2.
func newAdam(eta, l2 float64) *adam {
	a := &adam{eta: eta, l2: l2, beta1: 0.9, beta2: 0.999, eps: 1e-8}
	a.sp = newSpread(a.part)
	return a
}

func (a *adam) step(ps []param) {
	a.m, a.v = moments(a.m, ps), moments(a.v, ps)
	a.iter++
	// As gorgonia: corrections in float64, their reciprocals in float32.
	corr1 := 1 - math.Pow(a.beta1, float64(a.iter))
	corr2 := 1 - math.Pow(a.beta2, float64(a.iter))
	a.ps = ps
	b1, b2 := float32(a.beta1), float32(a.beta2)
	a.coef = kernels.AdamCoef{L2: float32(a.l2), UseL2: a.l2 > 0, B1: b1, B2: b2, OmB1: 1 - b1, OmB2: 1 - b2,
		C1: 1 / float32(corr1), C2: 1 / float32(corr2), NegEta: -float32(a.eta), Eps: float32(a.eps)}
	a.sp.over(ps)
	a.ps = nil
}

// part updates elements [lo, hi) of parameter k, in gorgonia's order of
// operations (kernels.Adam).
func (a *adam) part(k, lo, hi int) {
	kernels.Adam(a.ps[k].w[lo:hi], a.ps[k].g[lo:hi], a.m[k][lo:hi], a.v[k][lo:hi], a.coef)
}

// momentum is gorgonia's Momentum: with g the gradient plus l2·c,
//
//	c ← μ·c - η·g
//	w ← w + c
//
// gorgonia's L2 term scales the velocity c, not the weights; it is kept so
// for identical results.
type momentum struct {
	eta, l2, mu float64
	c           [][]float32
	sp          *spread

	// this step's parameters and float32 coefficients, for part
	ps               []param
	l2f, muf, negEta float32
}

// newMomentum returns momentum mu with learning rate eta and, if l2 > 0,
// gorgonia's L2 regularization l2.
func newMomentum(eta, l2, mu float64) *momentum {
	s := &momentum{eta: eta, l2: l2, mu: mu}
	s.sp = newSpread(s.part)
	return s
}

func (s *momentum) step(ps []param) {
	s.c = moments(s.c, ps)
	s.ps = ps
	s.l2f, s.muf, s.negEta = float32(s.l2), float32(s.mu), float32(-s.eta)
	s.sp.over(ps)
	s.ps = nil
}

// part updates elements [lo, hi) of parameter k, in gorgonia's order of
// operations.
func (s *momentum) part(k, lo, hi int) {
	w, g, c := s.ps[k].w[lo:hi], s.ps[k].g[lo:hi], s.c[k][lo:hi]
	g, c = g[:len(w)], c[:len(w)]
	for i := range w {
		gi := g[i]
		if s.l2 > 0 {
			gi += float32(c[i] * s.l2f)
		}
		c[i] = float32(c[i]*s.muf) + float32(gi*s.negEta)
		w[i] += c[i]
		g[i] = 0
	}
}
