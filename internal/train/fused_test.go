package train

import (
	"strings"
	"testing"

	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
	"badprune/internal/testsupport/must"
)

// TestFusedGradients: the training graph of a Conv2D with a ReLU under a
// 2x2 max pool applies the ReLU's gradient inside the pool's (no separate
// 4-D ReLU or ReLU-gradient pass). TestGradients checks such gradients
// against finite differences: fixture.General has the pattern.
func TestFusedGradients(t *testing.T) {
	for _, tc := range []struct {
		name  string
		m     *model.Model
		fused int
	}{
		{"toy", toy(t, 5, 3), 1},
		{"general", must.Get(t, fixture.General, 5), 1},
	} {
		tr, err := New(tc.m, Options{Epochs: 1, Batch: 4, LR: 1e-3})
		if err != nil {
			t.Fatal(err)
		}
		fused := 0
		for _, n := range tr.gr.G.AllNodes() {
			if n.Op() == nil {
				continue
			}
			name := n.Op().String()
			if strings.HasPrefix(name, "GradMaxPool") && strings.HasSuffix(name, "{relu}") {
				fused++
			}
			if strings.HasPrefix(name, "ReLU4") || strings.HasPrefix(name, "GradReLU4") {
				t.Errorf("%s: training graph has %s", tc.name, name)
			}
		}
		tr.Close()
		if fused < tc.fused {
			t.Errorf("%s: %d fused pool gradients, want %d", tc.name, fused, tc.fused)
		}
	}
}
