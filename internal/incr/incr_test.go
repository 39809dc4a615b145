package incr_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"badprune/internal/incr"
	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
	"badprune/internal/testsupport/oracle"
)

const tiny = "../../testdata/tiny/"

// state is the head's state for n images, its inputs computed via the graph.
func state(t *testing.T, h *incr.Head, x []float32, n int) *incr.State {
	t.Helper()
	return h.NewState(n, inputs(t, h, x, n)...)
}

// inputs computes the head's inputs of n images via the graph.
func inputs(t *testing.T, h *incr.Head, x []float32, n int) [][]float32 {
	t.Helper()
	gr, err := h.Model.Build(model.GraphOptions{Batch: n, Outputs: h.Inputs()})
	if err != nil {
		t.Fatal(err)
	}
	r, err := gr.NewRunner(h.Inputs()...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	copy(r.Input(), x)
	res, err := r.Run()
	if err != nil {
		t.Fatal(err)
	}
	for i := range res {
		res[i] = slices.Clone(res[i]) // the runner reuses its outputs
	}
	return res
}

// TestRenewEqualsNew: a state renewed in the memory of one that has taken
// steps (its scratch holding their changes) predicts as a new one, step
// by step, for fewer and for more samples than the old one had.
func TestRenewEqualsNew(t *testing.T) {
	h := tinyHead(t)
	r := rand.New(rand.NewPCG(9, 10))
	old := state(t, h, fixture.RandomImages(r, 30, 55, 47, 3), 30)
	for _, c := range []int{6, 2, 0} {
		old.Zero([]int{c})
	}
	for _, n := range []int{20, 40} {
		in := inputs(t, h, fixture.RandomImages(r, n, 55, 47, 3), n)
		fresh, renewed := h.NewState(n, in...), h.Renew(old, n, in...)
		changed := 0
		for step, c := range []int{4, 6, 3, 2, 7} {
			fresh.Zero([]int{c})
			renewed.Zero([]int{c})
			if !slices.Equal(fresh.Pred, renewed.Pred) {
				t.Fatalf("n %d, step %d: renewed %v, new %v", n, step, renewed.Pred, fresh.Pred)
			}
			changed += fresh.Stats.Updated
		}
		if changed == 0 || fresh.Stats != renewed.Stats {
			t.Fatalf("n %d: stats new %+v, renewed %+v", n, fresh.Stats, renewed.Stats)
		}
		old = renewed
	}
}

// tinyHead is the head of the tiny DeepID below conv_3.
// TestRenewLabeled: with labels, every step's hits are those of the full
// predictions, sample by sample, for labels that are mostly the
// predictions, mostly not, and the runner-up classes; a sample shown
// with another class than its prediction is not a hit in either. Labels
// that are not predicted take fewer recomputations of the logits.
func TestRenewLabeled(t *testing.T) {
	h := tinyHead(t)
	r := rand.New(rand.NewPCG(11, 12))
	const n = 60
	in := inputs(t, h, fixture.RandomImages(r, n, 55, 47, 3), n)
	first := h.NewState(n, in...)
	k := h.Model.Classes
	for _, kind := range []string{"predicted", "random", "other"} {
		labels := make([]int, n)
		for i := range labels {
			switch kind {
			case "predicted":
				labels[i] = first.Pred[i]
			case "random":
				labels[i] = r.IntN(k)
			default:
				labels[i] = (first.Pred[i] + 1 + r.IntN(2)) % k
			}
		}
		full, labeled := h.NewState(n, in...), h.RenewLabeled(nil, labels, in...)
		order := r.Perm(h.C)
		for step, c := range order[:h.C-1] {
			full.Zero([]int{c})
			labeled.Zero([]int{c})
			for i, y := range labels {
				if (full.Pred[i] == y) != (labeled.Pred[i] == y) {
					t.Fatalf("%s labels, step %d, sample %d (label %d): predicted %d, labeled %d", kind, step, i, y, full.Pred[i], labeled.Pred[i])
				}
			}
		}
		if kind == "random" && labeled.Stats.Recounted >= full.Stats.Recounted {
			t.Errorf("random labels: %d recomputations, %d without labels", labeled.Stats.Recounted, full.Stats.Recounted)
		}
	}
	// A label no class matches: predictions in full.
	bad := slices.Repeat([]int{k}, n)
	s := h.RenewLabeled(nil, bad, in...)
	if !slices.Equal(s.Pred, first.Pred) {
		t.Fatal("a label out of range changed the predictions")
	}
}

func tinyHead(t *testing.T) *incr.Head {
	t.Helper()
	m, err := model.Load(tiny + "model_weights.h5")
	if err != nil {
		t.Fatal(err)
	}
	h, err := incr.NewHead(m, "conv_3")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// margin is the oracle's gap between its best and second-best logit.
func margin(z []float64) float64 {
	b := oracle.Argmax(z)
	second := math.Inf(-1)
	for j, v := range z {
		if j != b {
			second = math.Max(second, v)
		}
	}
	return z[b] - second
}

// TestZeroMatchesOracle zeroes channels one at a time, in random order, and
// checks every prediction against the plain-loop oracle of the pruned
// model (PruneChannels: the BatchNormalization after a convolution
// pruned too).
func TestZeroMatchesOracle(t *testing.T) {
	tinyM, err := model.Load(tiny + "model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := fixture.General(2)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(f func(uint64) (*model.Model, error)) *model.Model {
		m, err := f(2)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	layers, merge, acts := mk(fixture.Layers), mk(fixture.Merge), mk(fixture.Activations)
	cases := []struct {
		m                    *model.Model
		pruned               string
		mask                 string
		incremental, general bool
	}{
		{tinyM, "conv_3", "pool_3", true, false},
		{tinyM, "conv_4", "conv_4", true, false},
		{tinyM, "conv_2", "pool_2", false, false}, // pool_3 in the head: rerun path
		{gen, "c1", "p1", true, false},            // same padding, strides, Add of two branches
		{gen, "c2", "drop", true, false},
		// The general path: through BatchNormalization (gamma zeroed, or the
		// moving mean without gamma), and heads with merges and new layers.
		{layers, "conv", "avg", false, true},
		{layers, "sep", "drop", false, true},
		{merge, "mix", "mix_bn", false, true},
		{merge, "branch_3x3", "branch_3x3", false, true},
		{acts, "c_selu", "swish", false, true},
	}
	const n = 40
	for _, tc := range cases {
		h, err := incr.NewHead(tc.m, tc.pruned)
		if err != nil {
			t.Fatal(err)
		}
		if h.Mask.Name != tc.mask || h.Incremental != tc.incremental || h.General != tc.general {
			t.Fatalf("%s: mask %s incremental %v general %v, want %s %v %v", tc.pruned, h.Mask.Name, h.Incremental, h.General, tc.mask, tc.incremental, tc.general)
		}
		hh, ww, cc := tc.m.InputShape()
		r := rand.New(rand.NewPCG(5, 6))
		x := fixture.RandomImages(r, n, hh, ww, cc)
		s := state(t, h, x, n)
		order := r.Perm(h.C)
		checked, nearTies := 0, 0
		for k := 0; k <= len(order); k++ {
			if k > 0 {
				s.Zero(order[k-1 : k])
			}
			if s.Err() != nil {
				t.Fatal(s.Err())
			}
			// The reference is the pruned network itself.
			p := tc.m.Clone()
			if err := p.PruneChannels(tc.pruned, order[:k]); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				z := oracle.Logits(p, x[i*hh*ww*cc:(i+1)*hh*ww*cc], oracle.Options{})
				want := oracle.Argmax(z)
				if s.Pred[i] != want {
					if margin(z) < 1e-3*(1+math.Abs(z[want])) {
						nearTies++
						continue
					}
					t.Fatalf("%s: after zeroing %v, sample %d: class %d, oracle %d (margin %g)", tc.pruned, order[:k], i, s.Pred[i], want, margin(z))
				}
				checked++
			}
		}
		if nearTies > 1 {
			t.Errorf("%s: %d near-tie disagreements", tc.pruned, nearTies)
		}
		st := s.Stats
		if st.Updated == 0 || st.Skipped+st.Updated != n*h.C {
			t.Errorf("%s: stats %+v for %d sample-steps", tc.pruned, st, n*h.C)
		}
		t.Logf("%s: %d checks, stats %+v", tc.pruned, checked, st)
	}
}

// TestZeroSetEqualsSteps: zeroing a set at once equals zeroing it channel by
// channel, and Clone keeps states apart.
func TestZeroSetEqualsSteps(t *testing.T) {
	h := tinyHead(t)
	const n = 30
	x := fixture.RandomImages(rand.New(rand.NewPCG(7, 8)), n, 55, 47, 3)
	base := state(t, h, x, n)
	a, b := base.Clone(), base.Clone()
	set := []int{6, 2, 0, 4}
	a.Zero(set)
	for _, c := range set {
		b.Zero([]int{c})
	}
	for i := 0; i < n; i++ {
		if a.Pred[i] != b.Pred[i] {
			t.Errorf("sample %d: %d at once, %d step by step", i, a.Pred[i], b.Pred[i])
		}
	}
	fresh := state(t, h, x, n)
	for i := range base.Pred {
		if base.Pred[i] != fresh.Pred[i] {
			t.Fatalf("zeroing a clone changed the original")
		}
	}
	// The dormant channels 1 and 5 are zero everywhere: nothing to do.
	c := base.Clone()
	c.Zero([]int{1, 5})
	if c.Stats.Updated != 0 || c.Stats.Skipped != n {
		t.Errorf("dormant channels: stats %+v", c.Stats)
	}
}

// TestVariantThroughBatchNorm: a B' pruned through BatchNormalization is
// recognized as B with channels of the convolution pruned; one with any
// other change is not.
func TestVariantThroughBatchNorm(t *testing.T) {
	b, err := fixture.Layers(4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		layer string
		chans []int
	}{{"sep", []int{0, 5}}, {"conv", []int{3}}} {
		r := b.Clone()
		if err := r.PruneChannels(tc.layer, tc.chans); err != nil {
			t.Fatal(err)
		}
		if layer, ch, ok := incr.Variant(b, r); !ok || layer != tc.layer || !slices.Equal(ch, tc.chans) {
			t.Errorf("%s %v: Variant = %s %v %v", tc.layer, tc.chans, layer, ch, ok)
		}
		// The convolution pruned but not its BatchNormalization: B' would
		// output BN(0) for the channel, not a pruned B.
		r = b.Clone()
		l := r.Layer(tc.layer)
		oc := l.Channels()
		for i := tc.chans[0]; i < len(l.Kernel); i += oc {
			l.Kernel[i] = 0
		}
		if l.Bias != nil {
			l.Bias[tc.chans[0]] = 0
		}
		if _, _, ok := incr.Variant(b, r); ok {
			t.Errorf("%s: a B' without its BatchNormalization pruned is taken for a variant", tc.layer)
		}
	}
}

// TestSettleEqualsFull: settling the top logits from a bfloat16 first pass
// (kernels.TopLogits) leaves every decision as computing every logit does:
// the same predictions after every step, and the same work (a reference
// point of other bits would send other samples to be recounted), with
// labels and without, on the lab's demo classifier of 48 classes.
func TestSettleEqualsFull(t *testing.T) {
	m, err := model.Load("../../testdata/lab/models/bd_net.h5")
	if err != nil {
		t.Fatal(err)
	}
	heads := make([]*incr.Head, 2)
	for i := range heads {
		if heads[i], err = incr.NewHead(m, "conv_3"); err != nil {
			t.Fatal(err)
		}
	}
	if !incr.Settles(heads[0]) {
		t.Skip("this CPU has no AVX-512 BF16: every recount computes every logit")
	}
	incr.DisableSettle(heads[1])
	r := rand.New(rand.NewPCG(13, 14))
	const n = 150
	in := inputs(t, heads[0], fixture.RandomImages(r, n, 55, 47, 3), n)
	labels := make([]int, n)
	for i := range labels {
		labels[i] = r.IntN(m.Classes)
	}
	for _, lab := range [][]int{nil, labels} {
		var s [2]*incr.State
		for i, h := range heads {
			if s[i] = h.NewState(n, in...); lab != nil {
				s[i] = h.RenewLabeled(nil, lab, in...)
			}
		}
		for step, c := range r.Perm(heads[0].C) {
			for _, st := range s {
				st.Zero([]int{c})
			}
			if !slices.Equal(s[0].Pred, s[1].Pred) {
				t.Fatalf("labels %v, step %d: predictions %v settled, %v from every logit", lab != nil, step, s[0].Pred, s[1].Pred)
			}
		}
		a, b := s[0].Stats, s[1].Stats
		if a.Settled == 0 || b.Settled != 0 {
			t.Fatalf("labels %v: settled %d and %d rows", lab != nil, a.Settled, b.Settled)
		}
		if a.Settled = 0; a != b || a.Recounted == 0 {
			t.Fatalf("labels %v: work %+v settled, %+v from every logit", lab != nil, a, b)
		}
		t.Logf("labels %v: %+v, %d settled", lab != nil, b, s[0].Stats.Settled)
	}
}
