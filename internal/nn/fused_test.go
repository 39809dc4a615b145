package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/kernels"
)

// kernelGrad builds conv(ReLU) -> Add(., skip) -> relu -> 2x2 max pool ->
// sum and returns the loss's gradient with respect to the kernel. With
// fused, the second relu is a ReLU op (its gradient goes into the pool's),
// else an activation op, whose gradient is its own.
func kernelGrad(t *testing.T, fused bool) []float32 {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	g := G.NewGraph()
	tensorOf := func(name string, shape ...int) *G.Node {
		v := make([]float32, tensor.Shape(shape).TotalSize())
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))))
	}
	x, k, b, skip := tensorOf("x", 1, 4, 4, 2), tensorOf("k", 1, 1, 2, 2), tensorOf("b", 2), tensorOf("skip", 1, 4, 4, 2)
	y := G.Must(Conv(x, k, b, ConvSpec{SH: 1, SW: 1, ReLU: true}))
	s := G.Must(G.Add(y, skip))
	var rs *G.Node
	if fused {
		rs = G.Must(ReLU(s))
	} else {
		rs = G.Must(Apply(s, Act{Name: "relu"}))
	}
	loss := G.Must(G.Sum(G.Must(MaxPool(rs, kernels.Pool{PH: 2, PW: 2, SH: 2, SW: 2}, 2, 2))))
	if _, err := G.Grad(loss, k); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(k))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	gv, err := k.Grad()
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), gv.Data().([]float32)...)
}

// TestFusedReLUGradientThroughAdd: a pool's gradient that applied a later
// ReLU reaches a convolution's ReLU through an Add unchanged; the
// convolution must still apply its own ReLU's gradient (a shortcut that
// skipped it gave a different kernel gradient here).
func TestFusedReLUGradientThroughAdd(t *testing.T) {
	fused, plain := kernelGrad(t, true), kernelGrad(t, false)
	for i := range fused {
		if math.Abs(float64(fused[i]-plain[i])) > 1e-5*(1+math.Abs(float64(plain[i]))) {
			t.Errorf("dk[%d]: %g with the ReLU's gradient in the pool's, %g without", i, fused[i], plain[i])
		}
	}
}
