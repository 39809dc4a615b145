package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// gorgoniaSolver is the solver train.go built before it had its own: the
// reference ours must match bit for bit.
func gorgoniaSolver(opt Options, lr float64) G.Solver {
	so := []G.SolverOpt{G.WithLearnRate(lr)}
	if opt.L2 > 0 {
		so = append(so, G.WithL2Reg(opt.L2))
	}
	if opt.Optimizer == "momentum" {
		return G.NewMomentum(append(so, G.WithMomentum(0.9))...)
	}
	return G.NewAdamSolver(so...)
}

// valueGrad is a weight tensor and its gradient, as gorgonia's solvers take
// them.
type valueGrad struct{ w, g *tensor.Dense }

func (v valueGrad) Value() G.Value         { return v.w }
func (v valueGrad) Grad() (G.Value, error) { return v.g, nil }

// solverShapes include a scalar-like and an odd-length parameter, and one
// large enough that the update is split over workers, with part
// boundaries inside parameters for odd worker counts.
var solverShapes = [][]int{{1}, {7}, {3, 3, 2, 5}, {101, 331}}

// compareSolvers runs gorgonia's solver and ours, after mutate (if not nil)
// changes ours, for steps steps on the same random weights and gradients
// with procs workers, and returns the number of weights whose bits differ
// at the end. It fails t if ours leaves a gradient nonzero or changes no
// weight.
func compareSolvers(t *testing.T, opt Options, lr float64, procs, steps int, mutate func(solver)) int {
	t.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	r := rand.New(rand.NewPCG(11, uint64(procs)))
	ref := make([]G.ValueGrad, len(solverShapes))
	ps := make([]param, len(solverShapes))
	var w0 [][]float32
	for k, sh := range solverShapes {
		n := tensor.Shape(sh).TotalSize()
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(r.NormFloat64() * 0.1)
		}
		w0 = append(w0, w)
		ref[k] = valueGrad{
			w: tensor.New(tensor.WithShape(sh...), tensor.WithBacking(slices.Clone(w))),
			g: tensor.New(tensor.WithShape(sh...), tensor.Of(tensor.Float32)),
		}
		ps[k] = param{w: slices.Clone(w), g: make([]float32, n)}
	}
	gs, err := newSolver(opt, lr)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(gs)
	}
	gg := gorgoniaSolver(opt, lr)
	for s := 0; s < steps; s++ {
		for k := range ps {
			g := ref[k].(valueGrad).g.Data().([]float32)
			for i := range g {
				// Gradients from 1 down to 1e-5, and some zero (held
				// channels): ε = 1e-8 only shows next to √v̂ of small ones.
				if r.IntN(13) == 0 {
					g[i] = 0
				} else {
					g[i] = float32(r.NormFloat64() * math.Pow(10, -5*r.Float64()))
				}
			}
			copy(ps[k].g, g)
		}
		if err := gg.Step(ref); err != nil {
			t.Fatal(err)
		}
		gs.step(ps)
		for k, p := range ps {
			if i := slices.IndexFunc(p.g, func(v float32) bool { return v != 0 }); i >= 0 {
				t.Fatalf("step %d: gradient %d[%d] = %v after the step, want 0", s, k, i, p.g[i])
			}
		}
	}
	diff, moved := 0, false
	for k, p := range ps {
		want := ref[k].Value().Data().([]float32)
		for i := range p.w {
			if math.Float32bits(p.w[i]) != math.Float32bits(want[i]) {
				diff++
			}
			moved = moved || p.w[i] != w0[k][i]
		}
	}
	if !moved {
		t.Errorf("the solver changed no weight")
	}
	return diff
}

var solverOptions = []struct {
	opt Options
	lr  float64
}{
	{Options{Optimizer: "adam"}, 1e-3},
	{Options{Optimizer: "adam", L2: 1e-3}, 1e-3},
	{Options{Optimizer: "adam", L2: 5e-4}, 0.7e-3}, // a cosine-lowered rate
	{Options{Optimizer: "momentum"}, 1e-2},
	{Options{Optimizer: "momentum", L2: 1e-3}, 1e-2},
	{Options{Optimizer: "momentum", L2: 5e-4}, 0.037},
}

// TestSolverMatchesGorgonia checks that our optimizers give gorgonia's
// weights bit for bit, on one worker and on three.
func TestSolverMatchesGorgonia(t *testing.T) {
	for _, tc := range solverOptions {
		for _, procs := range []int{1, 3} {
			name := fmt.Sprintf("%s l2=%g lr=%g procs=%d", tc.opt.Optimizer, tc.opt.L2, tc.lr, procs)
			if d := compareSolvers(t, tc.opt, tc.lr, procs, 5, nil); d != 0 {
				t.Errorf("%s: %d weights differ from gorgonia's", name, d)
			}
		}
	}
}

// TestSolverComparisonIsSensitive checks that compareSolvers notices a
// change in any coefficient, so that the match above is not vacuous.
func TestSolverComparisonIsSensitive(t *testing.T) {
	adamOpt, momOpt := Options{Optimizer: "adam", L2: 1e-3}, Options{Optimizer: "momentum", L2: 1e-3}
	for _, tc := range []struct {
		name   string
		opt    Options
		lr     float64
		mutate func(solver)
	}{
		{"adam eps", adamOpt, 1e-3, func(s solver) { s.(*adam).eps = 1.1e-8 }},
		{"adam beta1", adamOpt, 1e-3, func(s solver) { s.(*adam).beta1 = 0.91 }},
		{"adam beta2", adamOpt, 1e-3, func(s solver) { s.(*adam).beta2 = 0.9991 }},
		{"adam l2", adamOpt, 1e-3, func(s solver) { s.(*adam).l2 = 1.1e-3 }},
		{"adam eta", adamOpt, 1e-3, func(s solver) { s.(*adam).eta = 1.0001e-3 }},
		{"momentum mu", momOpt, 1e-2, func(s solver) { s.(*momentum).mu = 0.9001 }},
		{"momentum l2", momOpt, 1e-2, func(s solver) { s.(*momentum).l2 = 1.1e-3 }},
		{"momentum eta", momOpt, 1e-2, func(s solver) { s.(*momentum).eta = 1.0001e-2 }},
	} {
		if d := compareSolvers(t, tc.opt, tc.lr, 1, 5, tc.mutate); d == 0 {
			t.Errorf("%s changed: all weights still match gorgonia's", tc.name)
		}
	}
}

// gorgoniaStep adapts a gorgonia solver to a Trainer.
type gorgoniaStep struct {
	s     G.Solver
	nodes G.Nodes
}

func (g gorgoniaStep) step([]param) {
	if err := g.s.Step(G.NodesToValueGrads(g.nodes)); err != nil {
		panic(err)
	}
}

// TestFitMatchesGorgonia trains one model with our solver and another with
// gorgonia's, held channels included, and checks that the weights match
// bit for bit.
func TestFitMatchesGorgonia(t *testing.T) {
	d := quadrants(rand.New(rand.NewPCG(6, 6)), 64)
	for _, tc := range solverOptions {
		var got [2][][]float32
		for j := range got {
			m := toy(t, 4, 9)
			opt := tc.opt
			opt.Epochs, opt.Batch, opt.LR, opt.Seed = 2, 16, tc.lr, 5
			opt.Masks = map[string][]int{"c1": {2}, "d": {0, 5}}
			tr, err := New(m, opt)
			if err != nil {
				t.Fatal(err)
			}
			if j == 1 {
				tr.solver = gorgoniaStep{gorgoniaSolver(opt, opt.LR), tr.params}
			}
			_, err = tr.Fit(context.Background(), d)
			tr.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range m.Layers {
				got[j] = append(got[j], l.Kernel, l.Bias)
			}
		}
		for i := range got[0] {
			if !slices.EqualFunc(got[0][i], got[1][i], func(a, b float32) bool {
				return math.Float32bits(a) == math.Float32bits(b)
			}) {
				t.Errorf("%s l2=%g: weights %d differ from training with gorgonia's solver", tc.opt.Optimizer, tc.opt.L2, i)
			}
		}
	}
}

func TestNewSolverUnknown(t *testing.T) {
	if _, err := newSolver(Options{Optimizer: "rmsprop"}, 1e-3); err == nil {
		t.Errorf("newSolver accepted an unknown optimizer")
	}
}

// deepID are the weight shapes of DeepID, about 600k parameters.
var deepID = [][]int{
	{4, 4, 3, 20}, {20}, {3, 3, 20, 40}, {40}, {3, 3, 40, 60}, {60}, {2, 2, 60, 80}, {80},
	{1200, 160}, {160}, {960, 160}, {160}, {160, 1283}, {1283},
}

// benchParams returns DeepID-shaped weights and gradients, and the
// gradients again to restore them each step (the solvers zero them).
func benchParams() (ws, gs, g0 [][]float32) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range deepID {
		n := tensor.Shape(sh).TotalSize()
		w, g := make([]float32, n), make([]float32, n)
		for i := range w {
			w[i] = float32(r.NormFloat64() * 0.05)
			g[i] = float32(r.NormFloat64() * 1e-3)
		}
		ws, gs, g0 = append(ws, w), append(gs, g), append(g0, slices.Clone(g))
	}
	return ws, gs, g0
}

func benchmarkGorgonia(b *testing.B, opt Options) {
	ws, gs, g0 := benchParams()
	vgs := make([]G.ValueGrad, len(ws))
	for k, sh := range deepID {
		vgs[k] = valueGrad{
			w: tensor.New(tensor.WithShape(sh...), tensor.WithBacking(ws[k])),
			g: tensor.New(tensor.WithShape(sh...), tensor.WithBacking(gs[k])),
		}
	}
	s := gorgoniaSolver(opt, 1e-3)
	b.ReportAllocs()
	for b.Loop() {
		for k := range gs {
			copy(gs[k], g0[k])
		}
		if err := s.Step(vgs); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkOurs(b *testing.B, opt Options) {
	ws, gs, g0 := benchParams()
	ps := make([]param, len(ws))
	for k := range ws {
		ps[k] = param{ws[k], gs[k]}
	}
	s, err := newSolver(opt, 1e-3)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for k := range gs {
			copy(gs[k], g0[k])
		}
		s.step(ps)
	}
}

// The benchmarks step DeepID's weights; each step includes restoring the
// gradients (about 600k float32 copied).
func BenchmarkStepAdamGorgonia(b *testing.B) { benchmarkGorgonia(b, Options{L2: 1e-4}) }
func BenchmarkStepAdamOurs(b *testing.B)     { benchmarkOurs(b, Options{L2: 1e-4}) }
func BenchmarkStepMomentumGorgonia(b *testing.B) {
	benchmarkGorgonia(b, Options{Optimizer: "momentum", L2: 1e-4})
}
func BenchmarkStepMomentumOurs(b *testing.B) {
	benchmarkOurs(b, Options{Optimizer: "momentum", L2: 1e-4})
}
