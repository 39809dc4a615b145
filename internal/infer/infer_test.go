package infer_test

import (
	"slices"
	"testing"

	"badprune/internal/infer"
	"badprune/internal/testsupport/fixture"
)

// TestTrunkBatches: a whole batch, read where it is (Runner.Bind), and
// partial batches, copied into the runner's buffer, give every image the
// outputs it gets alone, in any order of the two kinds of calls.
func TestTrunkBatches(t *testing.T) {
	m, err := fixture.TinyDeepID(3)
	if err != nil {
		t.Fatal(err)
	}
	h, w, c := m.InputShape()
	const batch = 4
	size := h * w * c
	x := fixture.SeededImages(5, 7, h, w, c)
	tr, err := infer.NewTrunk(m, batch, "pool_3")
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	out := m.Layer("pool_3").Size()
	// Each image alone, as the reference.
	alone := make([][]float32, 7)
	for i := range alone {
		res, err := tr.Run(x[i*size:(i+1)*size], 1)
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = slices.Clone(res[0][:out])
	}
	for _, call := range []struct{ lo, n int }{{0, 4}, {4, 3}, {3, 4}, {1, 2}, {2, 4}} {
		in := slices.Clone(x[call.lo*size : (call.lo+call.n)*size])
		res, err := tr.Run(in, call.n)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < call.n; i++ {
			if !slices.Equal(res[0][i*out:(i+1)*out], alone[call.lo+i]) {
				t.Fatalf("images %d..%d: image %d differs from its run alone", call.lo, call.lo+call.n-1, call.lo+i)
			}
		}
		if call.n == batch {
			clear(in) // the batch was read in place: the runner must not read it again
		}
	}
	if _, err := tr.Run(x, batch+1); err == nil {
		t.Fatal("a batch too large: no error")
	}
}
