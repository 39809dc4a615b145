package finetune

import (
	"badprune/internal/dataset"
	"context"
	"math"
	"slices"
	"testing"

	"badprune/internal/model"
	"badprune/internal/train"
)

func TestSplit(t *testing.T) {
	tr, ho := Split(100, 0.2, 7)
	if len(tr) != 80 || len(ho) != 20 {
		t.Fatalf("split %d/%d", len(tr), len(ho))
	}
	all := append(slices.Clone(tr), ho...)
	slices.Sort(all)
	for i, v := range all {
		if v != i {
			t.Fatalf("not a partition of 0..99: %v", all)
		}
	}
	tr2, ho2 := Split(100, 0.2, 7)
	_, ho3 := Split(100, 0.2, 8)
	if !slices.Equal(tr, tr2) || !slices.Equal(ho, ho2) || slices.Equal(ho, ho3) {
		t.Errorf("split is not a function of the seed")
	}
	if _, ho := Split(3, 0.01, 1); len(ho) != 1 {
		t.Errorf("a holdout keeps at least one sample")
	}
}

func tinyData(t *testing.T) (*model.Model, train.Data) {
	t.Helper()
	m, err := model.Load("../../testdata/tiny/model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	d, err := dataset.Options{DataKey: "data", LabelKey: "label", Scale: 1}.Load(context.Background(), "../../testdata/tiny/clean_u8_nchw.h5", m)
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

// TestKeepsBestEpoch: a learning rate that wrecks the network makes every
// epoch worse on the holdout; patience stops the run and the input's
// weights come back.
func TestKeepsBestEpoch(t *testing.T) {
	m, d := tinyData(t)
	if err := m.PruneChannels("conv_3", []int{0, 6}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(m)
	var seen []int
	res, err := Run(context.Background(), m, d, train.Data{}, Options{Epochs: 10, LR: 0.9, Batch: 8, Holdout: 0.25, Seed: 3, Patience: 2,
		OnEpoch: func(e Epoch) { seen = append(seen, e.Epoch) }})
	if err != nil {
		t.Fatal(err)
	}
	worse := true
	for _, e := range res.Epochs[1:] {
		worse = worse && e.HoldoutAcc < res.Epochs[0].HoldoutAcc
	}
	if !worse {
		t.Skipf("the wrecking rate did not wreck: %+v", res.Epochs)
	}
	if res.Best != 0 || !slices.Equal(seen, []int{1, 2}) {
		t.Errorf("best %d after epochs %v; want 0 after 2 (patience)", res.Best, seen)
	}
	for i, l := range m.Layers {
		if !slices.Equal(l.Kernel, before[i][0]) || !slices.Equal(l.Bias, before[i][1]) {
			t.Fatalf("layer %s: the input's weights were not restored", l.Name)
		}
	}
	if !math.IsNaN(res.Epochs[0].HoldoutASR) {
		t.Errorf("attack success without a poisoned set")
	}
}

// TestHoldsPrunedChannels: pruned channels stay zero and the held-out
// accuracy of the kept epoch is the best seen.
func TestHoldsPrunedChannels(t *testing.T) {
	m, d := tinyData(t)
	if err := m.PruneChannels("conv_3", []int{2, 4}); err != nil {
		t.Fatal(err)
	}
	if got := Masks(m); !slices.Equal(got["conv_3"], []int{2, 4}) || len(got) != 1 {
		t.Fatalf("masks %v", got)
	}
	res, err := Run(context.Background(), m, d, d, Options{Epochs: 4, LR: 1e-3, Batch: 6, Holdout: 0.25, Seed: 1, Cosine: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Layer("conv_3").ZeroChannels(); !slices.Equal(got, []int{2, 4}) {
		t.Errorf("after fine-tuning, zero channels %v", got)
	}
	best := res.Epochs[0]
	for _, e := range res.Epochs {
		if e.HoldoutAcc >= best.HoldoutAcc {
			best = e
		}
		if math.IsNaN(e.HoldoutASR) {
			t.Errorf("epoch %d: no attack success with a poisoned set", e.Epoch)
		}
	}
	if res.Best != best.Epoch {
		t.Errorf("kept epoch %d, best (latest of the highest) %d", res.Best, best.Epoch)
	}
}
