package prune

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"badprune/internal/dataset"
	"badprune/internal/h5data"
	"badprune/internal/infer"
	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
)

func TestRank(t *testing.T) {
	cases := []struct {
		mean []float64
		want []int
	}{
		{[]float64{3, 1, 2}, []int{1, 2, 0}},
		{[]float64{0, 0, 5, 0}, []int{0, 1, 3, 2}}, // ties by channel index
		{[]float64{2, -1, 2, -1}, []int{1, 3, 0, 2}},
		{nil, []int{}},
	}
	for _, tc := range cases {
		if got := Rank(tc.mean); !slices.Equal(got, tc.want) {
			t.Errorf("Rank(%v) = %v, want %v", tc.mean, got, tc.want)
		}
	}
}

func TestThreshold(t *testing.T) {
	// 200 samples: one hit is half a point.
	hits := []int{190, 189, 188, 186, 185, 100}
	cases := []struct {
		base int
		x    float64
		step int
		ok   bool
	}{
		{190, 1, 2, true},     // 190-188 = 2 hits = 1 point: exactly X counts
		{190, 2, 3, true},     // 4 hits = 2 points at step 3
		{190, 2.5, 4, true},   // 5 hits = 2.5 points
		{190, 0.5, 1, true},   // 1 hit = half a point at step 1
		{190, 45, 5, true},    // 90 hits = 45 points
		{190, 45.5, 0, false}, // never
	}
	for _, tc := range cases {
		step, ok := Threshold(tc.base, hits[1:], 200, tc.x)
		if step != tc.step || ok != tc.ok {
			t.Errorf("Threshold(base %d, X %v) = %d, %v; want %d, %v", tc.base, tc.x, step, ok, tc.step, tc.ok)
		}
	}
}

func TestDefaultLayers(t *testing.T) {
	m, err := model.Load("../../testdata/tiny/model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	l, err := DefaultLayer(m)
	if err != nil || l != "conv_3" {
		t.Fatalf("DefaultLayer = %q, %v; want conv_3", l, err)
	}
	if r := DefaultRankLayer(m, "conv_3"); r != "pool_3" {
		t.Errorf("DefaultRankLayer(conv_3) = %q", r)
	}
	if r := DefaultRankLayer(m, "conv_4"); r != "conv_4" {
		t.Errorf("DefaultRankLayer(conv_4) = %q", r)
	}
	for _, tc := range []struct{ layer, rank, want string }{
		{"conv_3", "pool_3", ""},
		{"conv_3", "conv_3", ""},
		{"nope", "pool_3", "layer nope: no such layer"},
		{"fc_1", "fc_1", "a Dense layer; pruning needs a Conv2D or SeparableConv2D layer"},
		{"conv_3", "pool_2", "rank layer pool_2: not conv_3 or a pooling layer after it"},
		{"conv_3", "zz", "rank layer zz: no such layer"},
	} {
		err := CheckLayers(m, tc.layer, tc.rank)
		if (err == nil) != (tc.want == "") || err != nil && !contains(err.Error(), tc.want) {
			t.Errorf("CheckLayers(%s, %s) = %v, want %q", tc.layer, tc.rank, err, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestDefaultLayersNewModels(t *testing.T) {
	mk := func(f func(uint64) (*model.Model, error)) *model.Model {
		m, err := f(1)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// A network without Dense layers: the class scores come from a
	// convolution, averaged (SqueezeNet's head).
	b := fixture.NewBuilder(1, 8, 8, 3)
	b.Add(&model.Layer{Name: "fire", Kind: model.Conv2D, KH: 3, KW: 3, Filters: 6, Act: "relu"}, false)
	b.Add(&model.Layer{Name: "drop", Kind: model.Dropout}, false)
	b.Add(&model.Layer{Name: "classes", Kind: model.Conv2D, KH: 1, KW: 1, Filters: 4, Act: "relu"}, false)
	b.Add(&model.Layer{Name: "gap", Kind: model.GlobalAvgPool}, false)
	b.Add(&model.Layer{Name: "probs", Kind: model.Softmax, Act: "softmax"}, false)
	squeeze, err := b.Model("squeeze")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m           *model.Model
		layer, rank string
	}{
		{mk(fixture.Layers), "sep", "drop"},
		{mk(fixture.Activations), "c_gelu", "elu"},
		{squeeze, "fire", "drop"},
	} {
		l, err := DefaultLayer(tc.m)
		if err != nil || l != tc.layer {
			t.Errorf("%s: DefaultLayer = %q, %v; want %s", tc.m.Path, l, err, tc.layer)
		}
		if r := DefaultRankLayer(tc.m, tc.layer); r != tc.rank {
			t.Errorf("%s: DefaultRankLayer(%s) = %q, want %s", tc.m.Path, tc.layer, r, tc.rank)
		}
	}
	_, err = DefaultLayer(mk(fixture.Merge))
	var amb *AmbiguousLayerError
	if !errors.As(err, &amb) || !errors.Is(err, ErrNoDefaultLayer) || amb.Merge != "sum" || !slices.Equal(amb.Candidates, []string{"mix", "short"}) {
		t.Errorf("merge: DefaultLayer error %v, want the candidates mix, short of sum", err)
	} else if want := "no single last convolution: sum merges the outputs of mix, short"; err.Error() != want {
		t.Errorf("merge: %q, want %q", err, want)
	}
}

// TestPruningRefusals: pruning whose channels would not be removed (a
// layer after the convolution maps zero to non-zero) is refused, naming
// that layer.
func TestPruningRefusals(t *testing.T) {
	acts, err := fixture.Activations(1)
	if err != nil {
		t.Fatal(err)
	}
	build := func(after ...*model.Layer) *model.Model {
		b := fixture.NewBuilder(2, 8, 8, 3)
		b.Add(&model.Layer{Name: "conv", Kind: model.Conv2D, KH: 3, KW: 3, Filters: 4, Act: "linear"}, false)
		for _, l := range after {
			b.Add(l, false)
		}
		b.Add(&model.Layer{Name: "flat", Kind: model.Flatten}, false)
		b.Add(&model.Layer{Name: "out", Kind: model.Dense, Filters: 3, Act: "softmax"}, false)
		m, err := b.Model("refusal")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	sigmoidConv := build()
	sigmoidConv.Layer("conv").Act = "sigmoid"
	// A BatchNormalization on a branch beside the chain: pruning does not
	// reach its weights.
	b := fixture.NewBuilder(2, 8, 8, 3)
	b.Add(&model.Layer{Name: "conv", Kind: model.Conv2D, KH: 3, KW: 3, Filters: 4, Act: "relu"}, false)
	b.Add(&model.Layer{Name: "bn", Kind: model.BatchNorm, HasGamma: true, HasBeta: true}, false, "conv")
	b.Add(&model.Layer{Name: "pool", Kind: model.MaxPool, KH: 2, KW: 2, SH: 2, SW: 2}, false, "conv")
	b.Add(&model.Layer{Name: "gap_bn", Kind: model.GlobalAvgPool}, false, "bn")
	b.Add(&model.Layer{Name: "gap_pool", Kind: model.GlobalAvgPool}, false, "pool")
	b.Add(&model.Layer{Name: "join", Kind: model.Concat}, false, "gap_bn", "gap_pool")
	b.Add(&model.Layer{Name: "out", Kind: model.Dense, Filters: 3, Act: "softmax"}, false)
	branch, err := b.Model("branch")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m     *model.Model
		layer string
		want  string
	}{
		{sigmoidConv, "conv", "layer conv: its activation sigmoid maps a pruned channel to 0.5, not 0"},
		{build(&model.Layer{Name: "sig", Kind: model.Activation, Act: "sigmoid"}), "conv",
			`layer conv: layer "sig" (Activation sigmoid) after it maps a zero channel to 0.5: its pruned channels would not be removed`},
		{build(&model.Layer{Name: "shift", Kind: model.Rescaling, Scale: []float32{2}, Offset: []float32{0.5}}), "conv",
			`layer "shift" (Rescaling) after it maps a zero channel to non-zero values`},
		{build(&model.Layer{Name: "bn", Kind: model.BatchNorm, HasGamma: true, HasBeta: true},
			&model.Layer{Name: "soft", Kind: model.Activation, Act: "softplus"}), "conv", `layer "soft" (Activation softplus) after it maps a zero channel to 0.693`},
		{branch, "conv", `layer "bn" (BatchNormalization) after it maps a zero channel to non-zero values`},
		{acts, "c_gelu", `layer "shifted_relu" (ReLU) after it maps a zero channel to -0.02`},
	} {
		err := CheckLayers(tc.m, tc.layer, tc.layer)
		var le *LayerError
		if !errors.As(err, &le) || le.Name != tc.layer || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: CheckLayers error %v, want %q", tc.m.Path, tc.layer, err, tc.want)
		}
	}
	// Through a BatchNormalization on the chain, and a Rescaling without
	// offset, pruning is fine.
	ok := build(&model.Layer{Name: "bn", Kind: model.BatchNorm, HasBeta: true},
		&model.Layer{Name: "scale", Kind: model.Rescaling, Scale: []float32{2}, Offset: []float32{0}},
		&model.Layer{Name: "act", Kind: model.Activation, Act: "tanh"})
	if err := CheckLayers(ok, "conv", "act"); err != nil {
		t.Errorf("conv, bn, rescaling, tanh: %v", err)
	}
}

// TestRunBatchSizes: the curve, and the means to their last bit, are the
// same whatever the batch size (the lab's demo sets: 512 clean images, two
// blocks of the means' sum, and 256 poisoned), for a rank layer that is
// the head's input (pool_3: its rows read back from the kept activations)
// and one that is not (conv_3, before the pool); and the means are those
// of the rank layer's outputs computed in one batch and summed apart.
func TestRunBatchSizes(t *testing.T) {
	const lab = "../../testdata/lab/"
	m, err := model.Load(lab + "models/bd_net.h5")
	if err != nil {
		t.Fatal(err)
	}
	open := func(path string, batch int) *h5data.Set {
		d := dataset.Options{DataKey: "data", LabelKey: "label", Scale: 1, Batch: batch}
		s, err := d.Open(path, m)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	run := func(rank string, batch int) *Curve {
		valid, bd := open(lab+"data/cl/valid.h5", batch), open(lab+"data/bd/bd_valid.h5", batch)
		c, err := Run(context.Background(), Config{Model: m, Layer: "conv_3", RankLayer: rank, Valid: valid, BDValid: bd, Batch: batch})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, rank := range []string{"pool_3", "conv_3"} {
		want := run(rank, 256)
		for _, batch := range []int{100, 37} {
			got := run(rank, batch)
			for c := range want.Mean {
				if math.Float64bits(got.Mean[c]) != math.Float64bits(want.Mean[c]) {
					t.Fatalf("rank %s, batch %d: mean of channel %d = %v, %v with batches of 256", rank, batch, c, got.Mean[c], want.Mean[c])
				}
			}
			if !slices.Equal(got.Order, want.Order) || !slices.Equal(got.Hits, want.Hits) || !slices.Equal(got.BDHits, want.BDHits) {
				t.Fatalf("rank %s, batch %d: a curve other than with batches of 256", rank, batch)
			}
		}
		valid := open(lab+"data/cl/valid.h5", 256)
		x, err := valid.ReadAll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		tr, err := infer.NewTrunk(m, valid.N, rank)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tr.Run(x, valid.N)
		tr.Close()
		if err != nil {
			t.Fatal(err)
		}
		rc := len(want.Mean)
		sum := make([]float64, rc)
		for i, v := range res[0] {
			sum[i%rc] += float64(v)
		}
		per := float64(len(res[0]) / rc)
		for c := range sum {
			if m := sum[c] / per; math.Abs(m-want.Mean[c]) > 1e-9*(1+math.Abs(m)) {
				t.Fatalf("rank %s: mean of channel %d = %v, %v from one batch", rank, c, want.Mean[c], m)
			}
		}
	}
}

// TestPoisonedChunks: the poisoned set's path (its batches through
// whichever trunk is free, gathered into chunks in the order they finish)
// counts the same hits as the clean set's (kept activations cut in order)
// when both are the same clean set, whose labels vary from sample to
// sample, in batches that do and do not divide the chunks.
func TestPoisonedChunks(t *testing.T) {
	const lab = "../../testdata/lab/"
	m, err := model.Load(lab + "models/bd_net.h5")
	if err != nil {
		t.Fatal(err)
	}
	for _, batch := range []int{256, 100, 37} {
		d := dataset.Options{DataKey: "data", LabelKey: "label", Scale: 1, Batch: batch}
		var sets [2]*h5data.Set
		for i := range sets {
			if sets[i], err = d.Open(lab+"data/cl/valid.h5", m); err != nil {
				t.Fatal(err)
			}
			defer sets[i].Close()
		}
		if slices.Equal(sets[0].Labels, slices.Repeat(sets[0].Labels[:1], sets[0].N)) {
			t.Fatal("the clean set has one label: the test would not see samples and labels mixed up")
		}
		c, err := Run(context.Background(), Config{Model: m, Layer: "conv_3", RankLayer: "pool_3", Valid: sets[0], BDValid: sets[1], Batch: batch})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Hits, c.BDHits) || c.Hits[0] == c.Hits[len(c.Hits)-1] {
			t.Fatalf("batch %d: hits %v by the poisoned set's path, %v by the clean set's", batch, c.BDHits, c.Hits)
		}
	}
}

// TestChannelSums: the sums have the same bits in any batches, on values
// whose sum does depend on the order they are added in (the test checks
// that first).
func TestChannelSums(t *testing.T) {
	const rc, size, n = 3, 6, 700 // two positions per image
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, n*size)
	for i := range x {
		x[i] = float32(math.Ldexp(r.Float64(), r.IntN(60)-30))
	}
	sum := func(batch, flushEvery int) []float64 {
		s := newChannelSums(rc, size)
		for lo := 0; lo < n; lo += batch {
			k := min(batch, n-lo)
			s.add(x[lo*size:(lo+k)*size], k)
			if flushEvery > 0 {
				s.flush() // the order of a sum per batch
			}
		}
		return s.total()
	}
	want := sum(meanBlock, 0)
	differs := false
	for c, v := range sum(37, 1) {
		differs = differs || math.Float64bits(v) != math.Float64bits(want[c])
	}
	if !differs {
		t.Fatal("the values' sums do not depend on the order: the test shows nothing")
	}
	for _, batch := range []int{1, 37, 100, 256, 700} {
		for c, v := range sum(batch, 0) {
			if math.Float64bits(v) != math.Float64bits(want[c]) {
				t.Fatalf("batches of %d: channel %d sums to %v, %v in batches of %d", batch, c, v, want[c], meanBlock)
			}
		}
	}
}
