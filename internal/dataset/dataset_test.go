package dataset_test

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"badprune/internal/dataset"
	"badprune/internal/h5data"
	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
)

// TestLoad: a set of integer pixels loads as bytes, one with fractional
// pixels as values; either way its values are those a stream reads,
// scaled and normalized, bit for bit.
func TestLoad(t *testing.T) {
	m, err := model.Load("../../testdata/tiny/model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	h, w, c := m.InputShape()
	opt := dataset.Options{DataKey: "data", LabelKey: "label", Scale: 1.0 / 255, Mean: []float64{0.5}, Std: []float64{0.25}, Batch: 7}
	for _, tc := range []struct {
		name  string
		frac  bool
		bytes bool
	}{{"integers", false, true}, {"fractions", true, false}} {
		r := rand.New(rand.NewPCG(1, 2))
		s := fixture.Set{X: make([]float32, 20*h*w*c), Labels: make([]int, 20)}
		for i := range s.X {
			s.X[i] = float32(r.IntN(256))
			if tc.frac {
				s.X[i] += 0.25
			}
		}
		path := filepath.Join(t.TempDir(), "set.h5")
		if err := fixture.WriteSet(path, s, h, w, c, h5data.Storage{ChannelsFirst: true, Data: "float64", Label: "float64"}); err != nil {
			t.Fatal(err)
		}
		d, err := opt.Load(context.Background(), path, m)
		if err != nil {
			t.Fatal(err)
		}
		if (d.X8 != nil) != tc.bytes || (d.X != nil) == tc.bytes {
			t.Fatalf("%s: bytes %v, values %v", tc.name, d.X8 != nil, d.X != nil)
		}
		set, err := opt.Open(path, m)
		if err != nil {
			t.Fatal(err)
		}
		var want []float32
		if err := set.Stream(context.Background(), 7, func(b h5data.Batch) error {
			want = append(want, b.X...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		set.Close()
		if got := d.Values(); !slices.Equal(got, want) || !slices.Equal(d.Labels, s.Labels) {
			t.Errorf("%s: loaded values differ from the streamed ones", tc.name)
		}
	}
}
