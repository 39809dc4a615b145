package goodnet

import (
	"context"
	"slices"
	"testing"

	"badprune/internal/h5data"
	"badprune/internal/infer"
	"badprune/internal/model"
	"badprune/internal/progress"
)

// TestPredictSharesTrunk: repaired networks that are B with pruned
// channels (nested, disjoint, or of another layer) and one that is not
// get exactly the predictions their own graphs give.
func TestPredictSharesTrunk(t *testing.T) {
	b, err := model.Load("../../testdata/tiny/model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	variant := func(layer string, ch ...int) *model.Model {
		r := b.Clone()
		if err := r.PruneChannels(layer, ch); err != nil {
			t.Fatal(err)
		}
		return r
	}
	other := b.Clone()
	other.Layer("fc_1").Kernel[3] += 0.5 // not a pruned variant: runs whole
	repaired := []*model.Model{
		variant("conv_3", 0, 3, 6, 7), variant("conv_3", 0), variant("conv_3", 0, 3), variant("conv_3", 2, 4),
		variant("conv_4", 1, 5, 9), other,
	}
	groups, whole := plan(b, repaired)
	if len(groups) != 2 || !slices.Equal(whole, []int{6}) {
		t.Fatalf("plan: %d groups, whole %v", len(groups), whole)
	}
	set, err := h5data.Open("../../testdata/tiny/clean_u8_nchw.h5", h5data.Options{H: 55, W: 47, C: 3, Classes: b.Classes})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	got, err := Predict(context.Background(), set, b, repaired, 5, progress.New(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	want, err := infer.Predict(context.Background(), set, append([]*model.Model{b}, repaired...), 7, progress.New(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("model %d: shared-trunk predictions %v, own graph %v", i, got[i], want[i])
		}
	}
}
