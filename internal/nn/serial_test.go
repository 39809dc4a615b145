package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/kernels"
)

// TestSetSerial: a graph of a fused convolution, a dense layer on its
// flattened output and an average pool gives the same bits serial as spread
// over the cores, its convolution and dense kernels run serial exactly
// while SetSerial is on (with KeepOutputs and without), and the average
// pool computes in one part.
func TestSetSerial(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, keep := range []bool{true, false} {
		g := G.NewGraph()
		tensorOf := func(name string, shape ...int) *G.Node { return randTensor(g, r, name, shape...) }
		const n = 37
		x := tensorOf("x", n, 10, 9, 3)
		conv := G.Must(Conv(x, tensorOf("k", 3, 3, 3, 8), tensorOf("b", 8), ConvSpec{SH: 1, SW: 1, ReLU: true, Pool: true}))
		flat := G.Must(G.Reshape(conv, tensor.Shape{n, 4 * 3 * 8}))
		dense := G.Must(Dense(flat, tensorOf("w", 4*3*8, 5), tensorOf("wb", 5), true))
		avg := G.Must(AvgPool(x, Window{kernels.Pool{PH: 2, PW: 2, SH: 2, SW: 2}, 5, 4}))
		var dv, av G.Value
		G.Read(dense, &dv)
		G.Read(avg, &av)
		if keep {
			KeepOutputs(g)
		}
		vm := G.NewTapeMachine(g)
		run := func() ([]float32, []float32) {
			t.Helper()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			d := slices.Clone(dv.Data().([]float32))
			a := slices.Clone(av.Data().([]float32))
			vm.Reset()
			return d, a
		}
		serialKernels := func() (on, all int) {
			for _, nd := range g.AllNodes() {
				if k, ok := nd.Op().(interface{ kept() *kept }); ok && k.kept().cv != nil {
					all++
					if k.kept().cv.Serial {
						on++
					}
				}
			}
			return on, all
		}
		d0, a0 := run()
		SetSerial(g, true)
		d1, a1 := run()
		if keep {
			if on, all := serialKernels(); all != 2 || on != 2 {
				t.Errorf("serial: %d of %d kept kernels serial, want 2 of 2", on, all)
			}
		}
		SetSerial(g, false)
		d2, a2 := run()
		if keep {
			if on, _ := serialKernels(); on != 0 {
				t.Errorf("serial off: %d kept kernels serial", on)
			}
		}
		for _, got := range [][2][]float32{{d1, a1}, {d2, a2}} {
			if !slices.EqualFunc(got[0], d0, bitsEqual) || !slices.EqualFunc(got[1], a0, bitsEqual) {
				t.Fatalf("keep %v: outputs differ between serial and spread runs", keep)
			}
		}
		vm.Close()
	}
	var parts int
	op := newBase("split", nil)
	op.keep.serial = true
	op.split(100, 1, func(lo, hi int) {
		if lo != 0 || hi != 100 {
			t.Errorf("serial split part [%d, %d)", lo, hi)
		}
		parts++
	})
	if parts != 1 {
		t.Errorf("serial split in %d parts", parts)
	}
}

func bitsEqual(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }
