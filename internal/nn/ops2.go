package nn

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/kernels"
)

// poolOp is Keras MaxPooling2D on NHWC input.
type poolOp struct {
	base
	kernels.Pool
	OH, OW int
}

func (op poolOp) String() string        { return fmt.Sprintf("MaxPool%+v", op.Pool) }
func (op poolOp) Arity() int            { return 1 }
func (op poolOp) Type() hm.Type         { return fnType(4, 4) }
func (op poolOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op poolOp) Hashcode() uint32      { return hashOf(op) }
func (op poolOp) DiffWRT(int) []bool    { return []bool{true} }
func (op poolOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok || len(s) != 4 {
		return nil, fmt.Errorf("maxpool: want a 4-D input")
	}
	return tensor.Shape{s[0], op.OH, op.OW, s[3]}, nil
}
func (op poolOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op poolOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "pool input")
	if err != nil {
		return nil, err
	}
	t, o := out(prealloc, tensor.Shape{s[0], op.OH, op.OW, s[3]})
	op.MaxPool(x, s[0], s[1], s[2], s[3], op.OH, op.OW, o)
	return t, nil
}
func (op poolOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(poolGradOp{op}, in[0], grad)
	return G.Nodes{dx}, err
}

// poolGradOp: (x, dy) -> dx.
type poolGradOp struct{ p poolOp }

func (op poolGradOp) String() string        { return "Grad" + op.p.String() }
func (op poolGradOp) Arity() int            { return 2 }
func (op poolGradOp) Type() hm.Type         { return fnType(4, 4, 4) }
func (op poolGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op poolGradOp) Hashcode() uint32      { return hashOf(op) }
func (op poolGradOp) ReturnsPtr() bool      { return false }
func (op poolGradOp) CallsExtern() bool     { return false }
func (op poolGradOp) OverwritesInput() int  { return -1 }
func (op poolGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("maxpool grad: expected a shape")
	}
	return s.Clone(), nil
}
func (op poolGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op poolGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "pool input")
	if err != nil {
		return nil, err
	}
	dy, _, err := f32(v[1], "output gradient")
	if err != nil {
		return nil, err
	}
	t, dx := out(prealloc, s)
	zero(dx)
	op.p.MaxPoolGrad(x, dy, s[0], s[1], s[2], s[3], op.p.OH, op.p.OW, dx)
	return t, nil
}

// denseOp computes x·W + b for x (N,K), W (K,U), b (U), rectified when ReLU.
type denseOp struct {
	base
	ReLU bool
}

func (op denseOp) String() string        { return fmt.Sprintf("Dense{relu:%v}", op.ReLU) }
func (op denseOp) Arity() int            { return 3 }
func (op denseOp) Type() hm.Type         { return fnType(2, 2, 1, 2) }
func (op denseOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op denseOp) Hashcode() uint32      { return hashOf(op) }
func (op denseOp) DiffWRT(int) []bool    { return []bool{true, true, true} }
func (op denseOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, ok1 := ds[0].(tensor.Shape)
	w, ok2 := ds[1].(tensor.Shape)
	if !ok1 || !ok2 || len(x) != 2 || len(w) != 2 || x[1] != w[0] {
		return nil, fmt.Errorf("dense: input %v and kernel %v do not fit", ds[0], ds[1])
	}
	return tensor.Shape{x[0], w[1]}, nil
}
func (op denseOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op denseOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, xs, err := f32(v[0], "dense input")
	if err != nil {
		return nil, err
	}
	w, ws, err := f32(v[1], "dense kernel")
	if err != nil {
		return nil, err
	}
	b, _, err := f32(v[2], "dense bias")
	if err != nil {
		return nil, err
	}
	t, o := out(prealloc, tensor.Shape{xs[0], ws[1]})
	kernels.NewDense(w, b, ws[0], ws[1]).Forward(x, xs[0], 1, 1, op.ReLU, o)
	return t, nil
}
func (op denseOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.ReLU {
		return nil, fmt.Errorf("nn: no gradient for a fused dense layer; build the graph for training")
	}
	dx, err := G.ApplyOp(denseGradOp{input: true, shape: in[0].Shape()}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	dw, err := G.ApplyOp(denseGradOp{shape: in[1].Shape()}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	db, err := G.ApplyOp(biasGradOp{rank: 2}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dw, db}, nil
}

// denseGradOp: (x, W, dy) -> dx when input, else dW.
type denseGradOp struct {
	base
	input bool
	shape tensor.Shape
}

func (op denseGradOp) String() string {
	return fmt.Sprintf("DenseGrad{input:%v}%v", op.input, op.shape)
}
func (op denseGradOp) Arity() int            { return 3 }
func (op denseGradOp) Type() hm.Type         { return fnType(2, 2, 2, 2) }
func (op denseGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op denseGradOp) Hashcode() uint32      { return hashOf(op) }
func (op denseGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.shape.Clone(), nil
}
func (op denseGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op denseGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, xs, err := f32(v[0], "dense input")
	if err != nil {
		return nil, err
	}
	w, ws, err := f32(v[1], "dense kernel")
	if err != nil {
		return nil, err
	}
	dy, _, err := f32(v[2], "output gradient")
	if err != nil {
		return nil, err
	}
	t, o := out(prealloc, op.shape)
	zero(o)
	cv := kernels.NewDense(w, make([]float32, ws[1]), ws[0], ws[1])
	if op.input {
		cv.GradInput(dy, w, xs[0], 1, 1, o)
	} else {
		cv.GradKernel(x, dy, xs[0], 1, 1, o, make([]float32, ws[1]))
	}
	return t, nil
}

// reluOp is max(x, 0), elementwise.
type reluOp struct {
	base
	rank int
}

func (op reluOp) String() string        { return fmt.Sprintf("ReLU%d", op.rank) }
func (op reluOp) Arity() int            { return 1 }
func (op reluOp) Type() hm.Type         { return fnType(op.rank, op.rank) }
func (op reluOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op reluOp) Hashcode() uint32      { return hashOf(op) }
func (op reluOp) DiffWRT(int) []bool    { return []bool{true} }
func (op reluOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("relu: expected a shape")
	}
	return s.Clone(), nil
}
func (op reluOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op reluOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "relu input")
	if err != nil {
		return nil, err
	}
	t, o := out(prealloc, s)
	for i, a := range x {
		o[i] = max(a, 0)
	}
	return t, nil
}
func (op reluOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(reluGradOp{op}, output, grad)
	return G.Nodes{dx}, err
}

// reluGradOp: (y, dy) -> dy where y > 0, else 0.
type reluGradOp struct{ r reluOp }

func (op reluGradOp) String() string        { return "Grad" + op.r.String() }
func (op reluGradOp) Arity() int            { return 2 }
func (op reluGradOp) Type() hm.Type         { return fnType(op.r.rank, op.r.rank, op.r.rank) }
func (op reluGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op reluGradOp) Hashcode() uint32      { return hashOf(op) }
func (op reluGradOp) ReturnsPtr() bool      { return false }
func (op reluGradOp) CallsExtern() bool     { return false }
func (op reluGradOp) OverwritesInput() int  { return -1 }
func (op reluGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return op.r.InferShape(ds...)
}
func (op reluGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op reluGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	y, s, err := f32(v[0], "relu output")
	if err != nil {
		return nil, err
	}
	dy, _, err := f32(v[1], "output gradient")
	if err != nil {
		return nil, err
	}
	t, o := out(prealloc, s)
	for i, a := range y {
		if a > 0 {
			o[i] = dy[i]
		} else {
			o[i] = 0
		}
	}
	return t, nil
}

// xentOp is the mean softmax cross-entropy of logits (N,K) against one-hot
// (or soft) targets (N,K), computed stably from the logits.
type xentOp struct{ base }

func (op xentOp) String() string { return "SoftmaxXent" }
func (op xentOp) Arity() int     { return 2 }
func (op xentOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 2, Of: a}, a)
}
func (op xentOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op xentOp) Hashcode() uint32      { return hashOf(op) }
func (op xentOp) DiffWRT(int) []bool    { return []bool{true, false} }
func (op xentOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

// softmaxRows writes the softmax of each row of z (n rows of k) into p and
// returns the summed cross-entropy against y.
func softmaxRows(z, y []float32, k int, p []float64) float64 {
	loss := 0.0
	for r := 0; r*k < len(z); r++ {
		row := z[r*k : (r+1)*k]
		m := float64(row[0])
		for _, v := range row {
			m = math.Max(m, float64(v))
		}
		sum := 0.0
		for j, v := range row {
			e := math.Exp(float64(v) - m)
			p[r*k+j] = e
			sum += e
		}
		lse := m + math.Log(sum)
		for j, v := range row {
			p[r*k+j] /= sum
			if t := float64(y[r*k+j]); t != 0 {
				loss += t * (lse - float64(v))
			}
		}
	}
	return loss
}

func (op xentOp) Do(v ...G.Value) (G.Value, error) {
	z, s, err := f32(v[0], "logits")
	if err != nil {
		return nil, err
	}
	y, ys, err := f32(v[1], "targets")
	if err != nil {
		return nil, err
	}
	if !s.Eq(ys) || len(s) != 2 || s[0] == 0 {
		return nil, fmt.Errorf("xent: logits %v and targets %v differ", s, ys)
	}
	loss := softmaxRows(z, y, s[1], make([]float64, len(z))) / float64(s[0])
	return tensor.New(tensor.FromScalar(float32(loss))), nil
}
func (op xentOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dz, err := G.ApplyOp(xentGradOp{}, in[0], in[1], grad)
	return G.Nodes{dz, nil}, err
}

// xentGradOp: (logits, targets, dloss) -> (softmax - targets) * dloss / N.
type xentGradOp struct{ base }

func (op xentGradOp) String() string { return "GradSoftmaxXent" }
func (op xentGradOp) Arity() int     { return 3 }
func (op xentGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(t, t, a, t)
}
func (op xentGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op xentGradOp) Hashcode() uint32      { return hashOf(op) }
func (op xentGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("xent grad: expected a shape")
	}
	return s.Clone(), nil
}
func (op xentGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op xentGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	z, s, err := f32(v[0], "logits")
	if err != nil {
		return nil, err
	}
	y, _, err := f32(v[1], "targets")
	if err != nil {
		return nil, err
	}
	var g float32
	switch d := v[2].(type) {
	case *G.F32:
		g = float32(*d)
	case tensor.Tensor:
		gs, ok := d.Data().(float32)
		if !ok {
			return nil, fmt.Errorf("xent grad: loss gradient is %T", d.Data())
		}
		g = gs
	default:
		return nil, fmt.Errorf("xent grad: loss gradient is %T", v[2])
	}
	p := make([]float64, len(z))
	softmaxRows(z, y, s[1], p)
	t, o := out(prealloc, s)
	scale := float64(g) / float64(s[0])
	for i := range o {
		o[i] = float32((p[i] - float64(y[i])) * scale)
	}
	return t, nil
}
