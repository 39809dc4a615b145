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

	"badprune/internal/hugemem"
	"badprune/internal/kernels"
	"badprune/internal/workpool"
)

// fnType is the type a -> a -> ... -> a of tensors of the given ranks, rank
// 0 being a scalar. It is built afresh at each call: hm's unification
// rewrites function types in place.
func fnType(ranks ...int) hm.Type {
	a := hm.TypeVariable('a')
	ts := make([]hm.Type, len(ranks))
	for i, r := range ranks {
		ts[i] = a
		if r > 0 {
			ts[i] = G.TensorType{Dims: r, Of: a}
		}
	}
	return hm.NewFnType(ts...)
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

// inputs is f32 of v[i] named what[i] for each name, in order; the first
// that is not a float32 tensor is the error.
func inputs(v []G.Value, what ...string) ([][]float32, []tensor.Shape, error) {
	ds, ss := make([][]float32, len(what)), make([]tensor.Shape, len(what))
	for i, w := range what {
		d, s, err := f32(v[i], w)
		if err != nil {
			return nil, nil, err
		}
		ds[i], ss[i] = d, s
	}
	return ds, ss, nil
}

// out returns prealloc when it is a float32 tensor of shape s, else a new one.
func out(prealloc G.Value, s tensor.Shape) (*tensor.Dense, []float32) {
	if t, ok := prealloc.(*tensor.Dense); ok && t.Shape().Eq(s) && t.Dtype() == tensor.Float32 {
		return t, t.Data().([]float32)
	}
	t := tensor.New(tensor.WithShape(s...), tensor.Of(tensor.Float32))
	return t, t.Data().([]float32)
}

// kept is what an op keeps between runs of its graph once KeepOutputs has
// been called: its output tensor, packed kernels and scratch.
type kept struct {
	on     bool
	serial bool
	t      *tensor.Dense
	cv     *kernels.Conv
	f64    []float64
	// sums are the channel sums of this run's output, which the op makes
	// on the way (a pooled training convolution's routed gradient: its
	// bias gradient).
	sums []float32
	// codes are a training convolution's pooled values' window entries
	// (kernels.Conv.ForwardPoolCodes) of this run.
	codes []uint8
}

// float64s is n float64 of scratch: kept under KeepOutputs (a fresh
// slice of this size each step costs page faults), else new. Callers
// overwrite it.
func (b base) float64s(n int) []float64 {
	if b.keep == nil || !b.keep.on {
		return make([]float64, n)
	}
	if cap(b.keep.f64) < n {
		b.keep.f64 = hugemem.Make[float64](n)
	}
	return b.keep.f64[:n]
}

// out is the op's output of shape s: its own kept tensor under
// KeepOutputs (the tape machine would allocate and clear a new one on
// every run), else prealloc when it fits, else a new tensor.
func (b base) out(prealloc G.Value, s tensor.Shape) (*tensor.Dense, []float32) {
	if b.keep == nil || !b.keep.on {
		return out(prealloc, s)
	}
	if t := b.keep.t; t == nil || !t.Shape().Eq(s) {
		b.keep.t = tensor.New(tensor.WithShape(s...), tensor.WithBacking(hugemem.Make[float32](s.TotalSize())))
	}
	return b.keep.t, b.keep.t.Data().([]float32)
}

// conv is a convolution of the given geometry for the op's kernels: kept
// with its buffers under KeepOutputs, else new.
func (b base) conv(kh, kw, c, oc, sh, sw int) *kernels.Conv {
	if b.keep == nil || !b.keep.on {
		cv := kernels.NewShape(kh, kw, c, oc, sh, sw)
		cv.Serial = b.keep != nil && b.keep.serial
		return cv
	}
	if cv := b.keep.cv; cv == nil || cv.KH != kh || cv.KW != kw || cv.C != c || cv.OC != oc || cv.SH != sh || cv.SW != sw {
		b.keep.cv = kernels.NewShape(kh, kw, c, oc, sh, sw)
	}
	b.keep.cv.Serial = b.keep.serial
	return b.keep.cv
}

// split runs f over [0, n) in parts spread over the cores, or on the
// calling goroutine when the op is serial (SetSerial).
func (b base) split(n, minPart int, f func(lo, hi int)) {
	if b.keep != nil && b.keep.serial {
		if n > 0 {
			f(0, n)
		}
		return
	}
	workpool.Split(n, minPart, f)
}

// SetSerial makes the convolution, dense, average pooling and depthwise
// ops of this package in g (the work of a network's trunk) compute each
// run on the calling goroutine (on), for callers that keep the cores busy
// themselves, or spread it over the cores (off, the default). It is for
// inference graphs: training's ops spread their work regardless.
func SetSerial(g *G.ExprGraph, on bool) {
	for _, n := range g.AllNodes() {
		if k, ok := n.Op().(interface{ kept() *kept }); ok && k.kept() != nil {
			k.kept().serial = on
		}
	}
}

// KeepOutputs makes every op of this package in g keep its output tensor
// and scratch memory from one run to the next, so that a graph run many
// times (training) does not allocate. Each run then overwrites the
// previous run's values: the caller must be done with them, as it must
// anyway once the machine is reset.
func KeepOutputs(g *G.ExprGraph) {
	for _, n := range g.AllNodes() {
		if k, ok := n.Op().(interface{ kept() *kept }); ok && k.kept() != nil {
			k.kept().on = true
		}
	}
}

func zero(s []float32) {
	for i := range s {
		s[i] = 0
	}
}

// pooledShape is the InferShape of a pooling op (what names it in the
// error): the batch and channels of its 4-D input, oh x ow pixels.
func pooledShape(what string, ds []G.DimSizer, oh, ow int) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok || len(s) != 4 {
		return nil, fmt.Errorf("%s: want a 4-D input", what)
	}
	return tensor.Shape{s[0], oh, ow, s[3]}, nil
}

// sameShape is the InferShape of an op whose output has the shape of its
// first input; what names the op in the error.
func sameShape(what string, ds []G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("%s: expected a shape", what)
	}
	return s.Clone(), nil
}

// opOn is an op with the nodes to apply it to.
type opOn struct {
	op G.Op
	in G.Nodes
}

// applyAll applies each op to its nodes in turn, for a SymDiff with one
// gradient op per input, and stops at the first error.
func applyAll(ops ...opOn) (G.Nodes, error) {
	ns := make(G.Nodes, len(ops))
	for i, o := range ops {
		n, err := G.ApplyOp(o.op, o.in...)
		if err != nil {
			return nil, err
		}
		ns[i] = n
	}
	return ns, nil
}

// base holds the Op methods every op here shares. name is the op's String
// and all that its hash covers, so it spells out every parameter the op
// computes with: ops that differ must not share a name. ranks are those of
// the inputs, then of the output (0 for a scalar). The ops' constructors
// set both.
type base struct {
	name  string
	ranks []int
	keep  *kept
}

func newBase(name string, ranks []int) base { return base{name, ranks, &kept{}} }

func (b base) kept() *kept { return b.keep }

func (b base) String() string        { return b.name }
func (b base) Arity() int            { return len(b.ranks) - 1 }
func (b base) Type() hm.Type         { return fnType(b.ranks...) }
func (b base) WriteHash(h hash.Hash) { fmt.Fprint(h, b.name) }
func (b base) ReturnsPtr() bool      { return false }
func (b base) CallsExtern() bool     { return false }
func (b base) OverwritesInput() int  { return -1 }

func (b base) Hashcode() uint32 {
	h := fnv.New32a()
	b.WriteHash(h)
	return h.Sum32()
}

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
	train bool // pooled with codes kept, differentiable (ConvPoolTrain)
}

func newConvOp(spec ConvSpec) convOp {
	return convOp{base: newBase(fmt.Sprintf("Conv%+v", spec), []int{4, 4, 1, 4}), ConvSpec: spec}
}

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

// pad returns x with the spec's zero padding (x itself when there is none).
func (sp ConvSpec) pad(x []float32, s tensor.Shape) ([]float32, int, int) {
	n, h, w, c := s[0], s[1], s[2], s[3]
	if sp.PadT+sp.PadB+sp.PadL+sp.PadR == 0 {
		return x, h, w
	}
	ph, pw := h+sp.PadT+sp.PadB, w+sp.PadL+sp.PadR
	p := make([]float32, n*ph*pw*c)
	for i := 0; i < n; i++ {
		for y := 0; y < h; y++ {
			src := x[((i*h+y)*w)*c : ((i*h+y)*w+w)*c]
			copy(p[((i*ph+y+sp.PadT)*pw+sp.PadL)*c:], src)
		}
	}
	return p, ph, pw
}

func (op convOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "conv input", "conv kernel", "conv bias")
	if err != nil {
		return nil, err
	}
	x, k, b, xs, ks := in[0], in[1], in[2], s[0], s[1]
	os, err := op.outShape(xs, ks)
	if err != nil {
		return nil, err
	}
	t, o := op.out(prealloc, os)
	cv := op.conv(ks[0], ks[1], ks[2], ks[3], op.SH, op.SW)
	cv.Pack(k, b)
	px, h, w := op.pad(x, xs)
	switch {
	case op.train:
		if cap(op.keep.codes) < len(o) {
			op.keep.codes = make([]uint8, len(o))
		}
		op.keep.codes = op.keep.codes[:len(o)]
		cv.ForwardPoolCodes(px, xs[0], h, w, o, op.keep.codes)
	case op.Pool:
		cv.ForwardPool(px, xs[0], h, w, op.ReLU, o)
	default:
		cv.Forward(px, xs[0], h, w, op.ReLU, o)
	}
	return t, nil
}

func (op convOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.Pool && !op.train {
		return nil, fmt.Errorf("nn: no gradient for a convolution fused with its pool; build the graph for training")
	}
	if op.train {
		// The gradient with respect to the unpooled output (the ReLU's
		// included) and its channel sums, from the kept window entries;
		// the pooled output is an input only so that the machine runs
		// this after the forward pass.
		unpooled := op.ConvSpec
		unpooled.Pool = false
		z, err := (convOp{ConvSpec: unpooled}).outShape(in[0].Shape(), in[1].Shape())
		if err != nil {
			return nil, err
		}
		cg := newCodesGradOp(op.keep, z)
		if grad, err = G.ApplyOp(cg, output, grad); err != nil {
			return nil, err
		}
		return applyAll(
			opOn{newConvGradOp(op.ConvSpec, true, in[0].Shape()), G.Nodes{grad, in[1]}},
			opOn{newConvGradOp(op.ConvSpec, false, in[1].Shape()), G.Nodes{in[0], grad}},
			opOn{newBiasGradOpFrom(cg.keep), G.Nodes{grad}},
		)
	}
	if op.ReLU && !reluApplied(grad, output) {
		// Unless a pool's gradient has applied it already, the ReLU's.
		var err error
		if grad, err = G.ApplyOp(newReLUGradOp(newReLUOp(4)), output, grad); err != nil {
			return nil, err
		}
	}
	return applyAll(
		opOn{newConvGradOp(op.ConvSpec, true, in[0].Shape()), G.Nodes{grad, in[1]}},
		opOn{newConvGradOp(op.ConvSpec, false, in[1].Shape()), G.Nodes{in[0], grad}},
		opOn{newBiasGradOp(4), G.Nodes{grad}},
	)
}

// convGradOp: (dy, k) -> dx when input, else (x, dy) -> dk; shape is that
// of dx or dk.
type convGradOp struct {
	base
	spec  ConvSpec
	input bool
	shape tensor.Shape
}

func newConvGradOp(spec ConvSpec, input bool, shape tensor.Shape) convGradOp {
	name := "ConvGradKernel"
	if input {
		name = "ConvGradInput"
	}
	return convGradOp{newBase(fmt.Sprintf("%s%+v%v", name, spec, shape), []int{4, 4, 4}), spec, input, shape}
}

func (op convGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.shape.Clone(), nil
}
func (op convGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op convGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	if op.input {
		return op.gradInput(prealloc, v)
	}
	return op.gradKernel(prealloc, v)
}

func (op convGradOp) gradInput(prealloc G.Value, v []G.Value) (G.Value, error) {
	in, s, err := inputs(v, "output gradient", "conv kernel")
	if err != nil {
		return nil, err
	}
	dy, k, ks, sp := in[0], in[1], s[1], op.spec
	n, h, w, c := op.shape[0], op.shape[1], op.shape[2], op.shape[3]
	ph, pw := h+sp.PadT+sp.PadB, w+sp.PadL+sp.PadR
	t, dx := op.out(prealloc, op.shape)
	cv := op.conv(ks[0], ks[1], ks[2], ks[3], sp.SH, sp.SW)
	if ph == h && pw == w {
		cv.GradInput(dy, k, n, h, w, dx)
		return t, nil
	}
	pdx := make([]float32, n*ph*pw*c)
	cv.GradInput(dy, k, n, ph, pw, pdx)
	for i := 0; i < n; i++ {
		for y := 0; y < h; y++ {
			copy(dx[((i*h+y)*w)*c:((i*h+y)*w+w)*c], pdx[((i*ph+y+sp.PadT)*pw+sp.PadL)*c:])
		}
	}
	return t, nil
}

func (op convGradOp) gradKernel(prealloc G.Value, v []G.Value) (G.Value, error) {
	in, s, err := inputs(v, "conv input", "output gradient")
	if err != nil {
		return nil, err
	}
	x, dy, xs, ks := in[0], in[1], s[0], op.shape
	t, dk := op.out(prealloc, ks)
	cv := op.conv(ks[0], ks[1], ks[2], ks[3], op.spec.SH, op.spec.SW)
	px, h, w := op.spec.pad(x, xs)
	cv.GradKernel(px, dy, xs[0], h, w, dk, nil)
	return t, nil
}

// biasGradOp sums the gradient over every axis but the last; with from,
// it takes the sums the op that made its input kept (kept.sums) when they
// are there.
type biasGradOp struct {
	base
	from *kept
}

func newBiasGradOp(rank int) biasGradOp {
	return biasGradOp{base: newBase(fmt.Sprintf("BiasGrad%d", rank), []int{rank, 1})}
}

func newBiasGradOpFrom(from *kept) biasGradOp {
	return biasGradOp{base: newBase("BiasGrad4{kept}", []int{4, 1}), from: from}
}

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
	t, db := op.out(prealloc, tensor.Shape{c})
	if op.from != nil && len(op.from.sums) == c {
		copy(db, op.from.sums) // its input's op ran first in this run
		return t, nil
	}
	kernels.ColSums(dy, db, op.float64s(kernels.ColSumsScratch(c)))
	return t, nil
}
