package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/kernels"
)

// TestAgainstStockGorgonia runs the lab's conv_2 shape (conv + bias + ReLU
// + 2x2 max pool) through gorgonia's own NCHW Conv2d, Rectify and
// MaxPool2D, and through the fused NHWC op, fused and unfused.
func TestAgainstStockGorgonia(t *testing.T) {
	const n, h, w, c, kh, kw, oc = 3, 26, 22, 20, 3, 3, 40
	r := rand.New(rand.NewPCG(4, 2))
	x := make([]float32, n*h*w*c) // NHWC
	for i := range x {
		x[i] = float32(r.Float64() * 4)
	}
	k := make([]float32, kh*kw*c*oc) // HWIO
	for i := range k {
		k[i] = float32(r.NormFloat64() * 0.1)
	}
	b := make([]float32, oc)
	for i := range b {
		b[i] = float32(r.NormFloat64() * 0.1)
	}

	// Stock: NCHW input, OIHW kernel.
	g := G.NewGraph()
	xc := make([]float32, len(x))
	for i := 0; i < n; i++ {
		for p := 0; p < h*w; p++ {
			for ch := 0; ch < c; ch++ {
				xc[((i*c+ch)*h*w)+p] = x[(i*h*w+p)*c+ch]
			}
		}
	}
	ko := make([]float32, len(k))
	for ky := 0; ky < kh; ky++ {
		for kx := 0; kx < kw; kx++ {
			for ci := 0; ci < c; ci++ {
				for o := 0; o < oc; o++ {
					ko[((o*c+ci)*kh+ky)*kw+kx] = k[((ky*kw+kx)*c+ci)*oc+o]
				}
			}
		}
	}
	bb := make([]float32, n*oc*(h-2)*(w-2))
	for i := range bb {
		bb[i] = b[(i/((h-2)*(w-2)))%oc]
	}
	X := G.NewTensor(g, tensor.Float32, 4, G.WithShape(n, c, h, w), G.WithValue(tensor.New(tensor.WithShape(n, c, h, w), tensor.WithBacking(xc))))
	K := G.NewTensor(g, tensor.Float32, 4, G.WithShape(oc, c, kh, kw), G.WithValue(tensor.New(tensor.WithShape(oc, c, kh, kw), tensor.WithBacking(ko))))
	B := G.NewTensor(g, tensor.Float32, 4, G.WithShape(n, oc, h-2, w-2), G.WithValue(tensor.New(tensor.WithShape(n, oc, h-2, w-2), tensor.WithBacking(bb))))
	conv := G.Must(G.Conv2d(X, K, tensor.Shape{kh, kw}, []int{0, 0}, []int{1, 1}, []int{1, 1}))
	act := G.Must(G.Rectify(G.Must(G.Add(conv, B))))
	pool := G.Must(G.MaxPool2D(act, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}))
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	stock := pool.Value().Data().([]float32) // n × oc × 12 × 10

	cv := kernels.NewConv(k, b, kh, kw, c, oc, 1, 1)
	fused := make([]float32, n*12*10*oc)
	cv.ForwardPool(x, n, h, w, true, fused)
	unfused := make([]float32, n*24*20*oc)
	cv.Forward(x, n, h, w, true, unfused)
	pooled := make([]float32, len(fused))
	kernels.Pool{PH: 2, PW: 2, SH: 2, SW: 2}.MaxPool(unfused, n, 24, 20, oc, 12, 10, pooled)
	for i := 0; i < n; i++ {
		for p := 0; p < 120; p++ {
			for o := 0; o < oc; o++ {
				want := float64(stock[(i*oc+o)*120+p])
				for _, got := range []float32{fused[(i*120+p)*oc+o], pooled[(i*120+p)*oc+o]} {
					if math.Abs(float64(got)-want) > 1e-4*(1+math.Abs(want)) {
						t.Fatalf("image %d pixel %d channel %d: %g, stock gorgonia %g", i, p, o, got, want)
					}
				}
			}
		}
	}
}

// kernelGrad builds conv(ReLU) -> Add(., skip) -> relu -> 2x2 max pool ->
// sum and returns the loss's gradient with respect to the kernel. With
// fused, the second relu is a ReLU op (its gradient goes into the pool's),
// else an activation op, whose gradient is its own.
func kernelGrad(t *testing.T, fused bool) []float32 {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	g := G.NewGraph()
	tensorOf := func(name string, shape ...int) *G.Node { return randTensor(g, r, name, shape...) }
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

// randTensor is a float32 node of g of the given shape holding standard
// normal values drawn from r.
func randTensor(g *G.ExprGraph, r *rand.Rand, name string, shape ...int) *G.Node {
	v := make([]float32, tensor.Shape(shape).TotalSize())
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))))
}
