// Package nn gives gorgonia fast CPU operations for Keras-style networks in
// NHWC layout: convolution (optionally fused with its ReLU and a 2x2 max
// pool), max pooling, dense layers, ReLU and softmax cross-entropy, with the
// gradients training needs. The arithmetic lives in package kernels;
// gorgonia's stock Conv2d and MaxPool2D are NCHW and spend their time in
// im2col and transposes.
package nn

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/kernels"
)

// fnType is the type a -> a -> ... -> a of tensors of the given ranks.
func fnType(ranks ...int) hm.Type {
	a := hm.TypeVariable('a')
	ts := make([]hm.Type, len(ranks))
	for i, r := range ranks {
		ts[i] = G.TensorType{Dims: r, Of: a}
	}
	return hm.NewFnType(ts...)
}

func hashOf(s fmt.Stringer) uint32 {
	h := fnv.New32a()
	fmt.Fprint(h, s.String())
	return h.Sum32()
}

func f32(v G.Value, what string) ([]float32, tensor.Shape, error) {
	t, ok := v.(tensor.Tensor)
	if !ok {
		return nil, nil, fmt.Errorf("nn: %s is not a tensor", what)
	}
	d, ok := t.Data().([]float32)
	if !ok {
		return nil, nil, fmt.Errorf("nn: %s is %v, want float32", what, t.Dtype())
	}
	return d, t.Shape(), nil
}

// out returns prealloc when it is a float32 tensor of shape s, else a new one.
func out(prealloc G.Value, s tensor.Shape) (*tensor.Dense, []float32) {
	if t, ok := prealloc.(*tensor.Dense); ok && t.Shape().Eq(s) && t.Dtype() == tensor.Float32 {
		return t, t.Data().([]float32)
	}
	t := tensor.New(tensor.WithShape(s...), tensor.Of(tensor.Float32))
	return t, t.Data().([]float32)
}

func zero(s []float32) {
	for i := range s {
		s[i] = 0
	}
}

// base holds the Op methods every op here shares.
type base struct{}

func (base) ReturnsPtr() bool     { return false }
func (base) CallsExtern() bool    { return false }
func (base) OverwritesInput() int { return -1 }

// ConvSpec is a Keras Conv2D's geometry and what is fused into it.
type ConvSpec struct {
	SH, SW                 int
	PadT, PadB, PadL, PadR int  // zero padding ("same")
	ReLU                   bool // fused activation
	Pool                   bool // fused 2x2/2 max pool after the activation
}

// convOp computes conv(x, k) + b: x (N,H,W,C), k (KH,KW,C,OC), b (OC).
type convOp struct {
	base
	ConvSpec
}

func (op convOp) String() string {
	return fmt.Sprintf("Conv%+v", op.ConvSpec)
}
func (op convOp) Arity() int                       { return 3 }
func (op convOp) Type() hm.Type                    { return fnType(4, 4, 1, 4) }
func (op convOp) WriteHash(h hash.Hash)            { fmt.Fprint(h, op.String()) }
func (op convOp) Hashcode() uint32                 { return hashOf(op) }
func (op convOp) DiffWRT(int) []bool               { return []bool{true, true, true} }
func (op convOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }

func (op convOp) outShape(x, k tensor.Shape) (tensor.Shape, error) {
	if len(x) != 4 || len(k) != 4 || x[3] != k[2] {
		return nil, fmt.Errorf("conv: input %v and kernel %v do not fit", x, k)
	}
	h, w := x[1]+op.PadT+op.PadB, x[2]+op.PadL+op.PadR
	if h < k[0] || w < k[1] {
		return nil, fmt.Errorf("conv: input %v smaller than kernel %v", x, k)
	}
	oh, ow := kernels.OutSize(h, k[0], op.SH), kernels.OutSize(w, k[1], op.SW)
	if op.Pool {
		oh, ow = oh/2, ow/2
		if oh == 0 || ow == 0 {
			return nil, fmt.Errorf("conv: output of %v too small to pool", x)
		}
	}
	return tensor.Shape{x[0], oh, ow, k[3]}, nil
}

func (op convOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, ok1 := ds[0].(tensor.Shape)
	k, ok2 := ds[1].(tensor.Shape)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("conv: expected shapes")
	}
	return op.outShape(x, k)
}

// pad returns x with the op's zero padding (x itself when there is none).
func (op convOp) pad(x []float32, s tensor.Shape) ([]float32, int, int) {
	n, h, w, c := s[0], s[1], s[2], s[3]
	if op.PadT+op.PadB+op.PadL+op.PadR == 0 {
		return x, h, w
	}
	ph, pw := h+op.PadT+op.PadB, w+op.PadL+op.PadR
	p := make([]float32, n*ph*pw*c)
	for i := 0; i < n; i++ {
		for y := 0; y < h; y++ {
			src := x[((i*h+y)*w)*c : ((i*h+y)*w+w)*c]
			copy(p[((i*ph+y+op.PadT)*pw+op.PadL)*c:], src)
		}
	}
	return p, ph, pw
}

func (op convOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, xs, err := f32(v[0], "conv input")
	if err != nil {
		return nil, err
	}
	k, ks, err := f32(v[1], "conv kernel")
	if err != nil {
		return nil, err
	}
	b, _, err := f32(v[2], "conv bias")
	if err != nil {
		return nil, err
	}
	os, err := op.outShape(xs, ks)
	if err != nil {
		return nil, err
	}
	t, o := out(prealloc, os)
	cv := kernels.NewConv(k, b, ks[0], ks[1], ks[2], ks[3], op.SH, op.SW)
	px, h, w := op.pad(x, xs)
	if op.Pool {
		cv.ForwardPool(px, xs[0], h, w, op.ReLU, o)
	} else {
		cv.Forward(px, xs[0], h, w, op.ReLU, o)
	}
	return t, nil
}

func (op convOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.ReLU || op.Pool {
		return nil, fmt.Errorf("nn: no gradient for a fused convolution; build the graph for training")
	}
	dx, err := G.ApplyOp(convGradInputOp{spec: op.ConvSpec, xShape: in[0].Shape()}, grad, in[1])
	if err != nil {
		return nil, err
	}
	dk, err := G.ApplyOp(convGradKernelOp{spec: op.ConvSpec, kShape: in[1].Shape()}, in[0], grad)
	if err != nil {
		return nil, err
	}
	db, err := G.ApplyOp(biasGradOp{rank: 4}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dk, db}, nil
}

// convGradInputOp: (dy, k) -> dx.
type convGradInputOp struct {
	base
	spec   ConvSpec
	xShape tensor.Shape
}

func (op convGradInputOp) String() string {
	return fmt.Sprintf("ConvGradInput%+v%v", op.spec, op.xShape)
}
func (op convGradInputOp) Arity() int            { return 2 }
func (op convGradInputOp) Type() hm.Type         { return fnType(4, 4, 4) }
func (op convGradInputOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op convGradInputOp) Hashcode() uint32      { return hashOf(op) }
func (op convGradInputOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.xShape.Clone(), nil
}
func (op convGradInputOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op convGradInputOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	dy, _, err := f32(v[0], "output gradient")
	if err != nil {
		return nil, err
	}
	k, ks, err := f32(v[1], "conv kernel")
	if err != nil {
		return nil, err
	}
	s := op.spec
	n, h, w, c := op.xShape[0], op.xShape[1], op.xShape[2], op.xShape[3]
	ph, pw := h+s.PadT+s.PadB, w+s.PadL+s.PadR
	t, dx := out(prealloc, op.xShape)
	cv := kernels.NewConv(k, make([]float32, ks[3]), ks[0], ks[1], ks[2], ks[3], s.SH, s.SW)
	if ph == h && pw == w {
		zero(dx)
		cv.GradInput(dy, k, n, h, w, dx)
		return t, nil
	}
	pdx := make([]float32, n*ph*pw*c)
	cv.GradInput(dy, k, n, ph, pw, pdx)
	for i := 0; i < n; i++ {
		for y := 0; y < h; y++ {
			copy(dx[((i*h+y)*w)*c:((i*h+y)*w+w)*c], pdx[((i*ph+y+s.PadT)*pw+s.PadL)*c:])
		}
	}
	return t, nil
}

// convGradKernelOp: (x, dy) -> dk.
type convGradKernelOp struct {
	base
	spec   ConvSpec
	kShape tensor.Shape
}

func (op convGradKernelOp) String() string {
	return fmt.Sprintf("ConvGradKernel%+v%v", op.spec, op.kShape)
}
func (op convGradKernelOp) Arity() int            { return 2 }
func (op convGradKernelOp) Type() hm.Type         { return fnType(4, 4, 4) }
func (op convGradKernelOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op convGradKernelOp) Hashcode() uint32      { return hashOf(op) }
func (op convGradKernelOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.kShape.Clone(), nil
}
func (op convGradKernelOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op convGradKernelOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, xs, err := f32(v[0], "conv input")
	if err != nil {
		return nil, err
	}
	dy, _, err := f32(v[1], "output gradient")
	if err != nil {
		return nil, err
	}
	ks := op.kShape
	t, dk := out(prealloc, ks)
	zero(dk)
	db := make([]float32, ks[3])
	cv := kernels.NewConv(make([]float32, ks.TotalSize()), db, ks[0], ks[1], ks[2], ks[3], op.spec.SH, op.spec.SW)
	px, h, w := convOp{ConvSpec: op.spec}.pad(x, xs)
	cv.GradKernel(px, dy, xs[0], h, w, dk, db)
	return t, nil
}

// biasGradOp sums the gradient over every axis but the last.
type biasGradOp struct {
	base
	rank int
}

func (op biasGradOp) String() string        { return fmt.Sprintf("BiasGrad%d", op.rank) }
func (op biasGradOp) Arity() int            { return 1 }
func (op biasGradOp) Type() hm.Type         { return fnType(op.rank, 1) }
func (op biasGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op biasGradOp) Hashcode() uint32      { return hashOf(op) }
func (op biasGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok || len(s) == 0 {
		return nil, fmt.Errorf("bias grad: expected a shape")
	}
	return tensor.Shape{s[len(s)-1]}, nil
}
func (op biasGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op biasGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	dy, s, err := f32(v[0], "output gradient")
	if err != nil {
		return nil, err
	}
	c := s[len(s)-1]
	t, db := out(prealloc, tensor.Shape{c})
	acc := make([]float64, c)
	for i := 0; i < len(dy); i += c {
		for j, g := range dy[i : i+c] {
			acc[j] += float64(g)
		}
	}
	for j := range db {
		db[j] = float32(acc[j])
	}
	return t, nil
}
