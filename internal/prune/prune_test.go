package prune

import (
	"slices"
	"strings"
	"testing"

	"badprune/internal/model"
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
		{"fc_1", "fc_1", "a Dense layer; pruning needs a Conv2D layer"},
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
