package nn

import (
	"fmt"

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

func newPoolOp(p kernels.Pool, oh, ow int) poolOp {
	return poolOp{newBase(fmt.Sprintf("MaxPool%+v", p), []int{4, 4}), p, oh, ow}
}

func (op poolOp) DiffWRT(int) []bool { return []bool{true} }
func (op poolOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return pooledShape("maxpool", ds, op.OH, op.OW)
}
func (op poolOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op poolOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "pool input")
	if err != nil {
		return nil, err
	}
	t, o := op.out(prealloc, tensor.Shape{s[0], op.OH, op.OW, s[3]})
	op.MaxPool(x, s[0], s[1], s[2], s[3], op.OH, op.OW, o)
	return t, nil
}
func (op poolOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	var of *G.Node
	if rectified(in[0]) {
		of = in[0]
	}
	dx, err := G.ApplyOp(newPoolGradOp(op, of), in[0], grad)
	return G.Nodes{dx}, err
}

// rectified reports whether n is the output of a plain ReLU (alone or
// fused into a convolution).
func rectified(n *G.Node) bool {
	switch op := n.Op().(type) {
	case reluOp:
		return true
	case convOp:
		return op.ReLU && !op.Pool
	}
	return false
}

// poolGradOp: (x, dy) -> dx. With relu set, x is relu(z), the output of
// the node of, and dx is the gradient with respect to z: the ReLU's
// gradient is applied as well, and of's SymDiff skips its own (appliedBy).
type poolGradOp struct {
	base
	p    poolOp
	relu bool
	of   *G.Node
}

func newPoolGradOp(p poolOp, of *G.Node) poolGradOp {
	name := "Grad" + p.name
	if of != nil {
		name += "{relu}"
	}
	return poolGradOp{newBase(name, []int{4, 4, 4}), p, of != nil, of}
}

// reluApplied reports whether grad, the gradient of the node output, is a
// pool's gradient that applied output's ReLU. Only a pool of output itself
// did: a gradient passed on unchanged (through an Add, say) from the pool
// of a later ReLU was masked by that ReLU, not by output's.
func reluApplied(grad, output *G.Node) bool {
	g, ok := grad.Op().(poolGradOp)
	return ok && g.relu && g.of == output
}

func (op poolGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("maxpool grad", ds)
}
func (op poolGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op poolGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "pool input", "output gradient")
	if err != nil {
		return nil, err
	}
	xs := s[0]
	t, dx := op.out(prealloc, xs)
	if op.relu && op.p.MaxPoolGradReLU(in[0], in[1], xs[0], xs[1], xs[2], xs[3], op.p.OH, op.p.OW, dx) {
		return t, nil
	}
	zero(dx)
	op.p.MaxPoolGrad(in[0], in[1], xs[0], xs[1], xs[2], xs[3], op.p.OH, op.p.OW, dx)
	if op.relu {
		kernels.ReLUGrad(in[0], dx, dx)
	}
	return t, nil
}

// codesGradOp: (pooled, dpooled) -> dz, the gradient of a ConvPoolTrain's
// loss with respect to its unpooled output before the ReLU, routed through
// the window entries the forward pass kept (from.codes); the channel sums
// of dz, the bias gradient, go to its own kept.sums. The pooled output is
// an input only so that the machine runs the forward pass first.
type codesGradOp struct {
	base
	from  *kept
	shape tensor.Shape // of dz
}

func newCodesGradOp(from *kept, shape tensor.Shape) codesGradOp {
	return codesGradOp{newBase(fmt.Sprintf("GradPoolCodes%v", shape), []int{4, 4, 4}), from, shape}
}

func (op codesGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape.Clone(), nil }
func (op codesGradOp) Do(v ...G.Value) (G.Value, error)               { return op.UsePreallocDo(nil, v...) }
func (op codesGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "pooled output", "output gradient")
	if err != nil {
		return nil, err
	}
	dy, ps, zs := in[1], s[1], op.shape
	if len(op.from.codes) != len(dy) || len(ps) != 4 || ps[3] != zs[3] {
		return nil, fmt.Errorf("pool codes grad: gradient %v without the forward pass's window entries", ps)
	}
	t, dz := op.out(prealloc, zs)
	k, c := op.keep, zs[3]
	if cap(k.sums) < c {
		k.sums = make([]float32, c)
	}
	k.sums = k.sums[:c]
	kernels.MaxPoolGradCodes(op.from.codes, dy, zs[0], zs[1], zs[2], c, ps[1], ps[2], dz, k.sums,
		op.float64s(kernels.ColSumsScratch(c)))
	return t, nil
}

// denseOp computes x·W + b for x (N,K), W (K,U), b (U), rectified when ReLU.
type denseOp struct {
	base
	ReLU  bool
	train bool // kernels.DenseForward (DenseTrain)
}

func newDenseOp(relu bool) denseOp {
	return denseOp{base: newBase(fmt.Sprintf("Dense{relu:%v}", relu), []int{2, 2, 1, 2}), ReLU: relu}
}

func (op denseOp) DiffWRT(int) []bool { return []bool{true, true, true} }
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
	in, s, err := inputs(v, "dense input", "dense kernel", "dense bias")
	if err != nil {
		return nil, err
	}
	xs, ws := s[0], s[1]
	t, o := op.out(prealloc, tensor.Shape{xs[0], ws[1]})
	if op.train {
		kernels.DenseForward(in[0], in[1], in[2], xs[0], ws[0], ws[1], o)
		return t, nil
	}
	cv := op.conv(1, 1, ws[0], ws[1], 1, 1)
	cv.Pack(in[1], in[2])
	cv.Forward(in[0], xs[0], 1, 1, op.ReLU, o)
	return t, nil
}
func (op denseOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.ReLU {
		return nil, fmt.Errorf("nn: no gradient for a fused dense layer; build the graph for training")
	}
	return applyAll(
		opOn{newDenseGradOp(true, in[0].Shape()), G.Nodes{in[0], in[1], grad}},
		opOn{newDenseGradOp(false, in[1].Shape()), G.Nodes{in[0], in[1], grad}},
		opOn{newBiasGradOp(2), G.Nodes{grad}},
	)
}

// denseGradOp: (x, W, dy) -> dx when input, else dW.
type denseGradOp struct {
	base
	input bool
	shape tensor.Shape
}

func newDenseGradOp(input bool, shape tensor.Shape) denseGradOp {
	name := fmt.Sprintf("DenseGrad{input:%v}%v", input, shape)
	return denseGradOp{newBase(name, []int{2, 2, 2, 2}), input, shape}
}

func (op denseGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.shape.Clone(), nil
}
func (op denseGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op denseGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "dense input", "dense kernel", "output gradient")
	if err != nil {
		return nil, err
	}
	x, w, dy, xs, ws := in[0], in[1], in[2], s[0], s[1]
	t, o := op.out(prealloc, op.shape)
	if op.input {
		kernels.DenseGradInput(dy, w, xs[0], ws[0], ws[1], o)
	} else {
		kernels.DenseGradKernel(x, dy, xs[0], ws[0], ws[1], o)
	}
	return t, nil
}

// reluOp is max(x, 0), elementwise.
type reluOp struct{ base }

func newReLUOp(rank int) reluOp {
	return reluOp{newBase(fmt.Sprintf("ReLU%d", rank), []int{rank, rank})}
}

func (op reluOp) DiffWRT(int) []bool { return []bool{true} }
func (op reluOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("relu", ds)
}
func (op reluOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op reluOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "relu input")
	if err != nil {
		return nil, err
	}
	t, o := op.out(prealloc, s)
	kernels.ReLU(x, o)
	return t, nil
}
func (op reluOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if reluApplied(grad, output) {
		return G.Nodes{grad}, nil // the pool's gradient has applied ours
	}
	dx, err := G.ApplyOp(newReLUGradOp(op), output, grad)
	return G.Nodes{dx}, err
}

// reluGradOp: (y, dy) -> dy where y > 0, else 0.
type reluGradOp struct{ base }

func newReLUGradOp(r reluOp) reluGradOp {
	rank := r.ranks[0]
	return reluGradOp{newBase("Grad"+r.name, []int{rank, rank, rank})}
}

// InferShape is the ReLU's own, error included.
func (op reluGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("relu", ds)
}
func (op reluGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op reluGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "relu output", "output gradient")
	if err != nil {
		return nil, err
	}
	y, dy := in[0], in[1]
	t, o := op.out(prealloc, s[0])
	kernels.ReLUGrad(y, dy, o)
	return t, nil
}

// xentOp is the mean softmax cross-entropy of logits (N,K) against one-hot
// (or soft) targets (N,K), computed stably from the logits.
type xentOp struct{ base }

func newXentOp() xentOp { return xentOp{newBase("SoftmaxXent", []int{2, 2, 0})} }

func (op xentOp) DiffWRT(int) []bool { return []bool{true, false} }
func (op xentOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

// softmaxRows writes the softmax of each row of z (n rows of k) into p and
// returns the summed cross-entropy against y.
func softmaxRows(z, y []float32, k int, p []float64) float64 {
	loss := make([]float64, len(z)/k)
	kernels.SoftmaxXent(z, y, k, p, loss)
	total := 0.0
	for _, l := range loss { // in row order, on any number of cores
		total += l
	}
	return total
}

func (op xentOp) Do(v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "logits", "targets")
	if err != nil {
		return nil, err
	}
	z, y, zs, ys := in[0], in[1], s[0], s[1]
	if !zs.Eq(ys) || len(zs) != 2 || zs[0] == 0 {
		return nil, fmt.Errorf("xent: logits %v and targets %v differ", zs, ys)
	}
	loss := softmaxRows(z, y, zs[1], op.float64s(len(z))) / float64(zs[0])
	return tensor.New(tensor.FromScalar(float32(loss))), nil
}
func (op xentOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	// The loss is an input of its gradient only so that the machine runs
	// it first: the gradient then reuses the softmax it kept.
	dz, err := G.ApplyOp(newXentGradOp(op.keep), in[0], in[1], output, grad)
	return G.Nodes{dz, nil}, err
}

// xentGradOp: (logits, targets, loss, dloss) -> (softmax - targets) *
// dloss / N. The softmax is the one the loss's op kept in probs (under
// KeepOutputs) when it matches, else computed again.
type xentGradOp struct {
	base
	probs *kept
}

func newXentGradOp(probs *kept) xentGradOp {
	return xentGradOp{newBase("GradSoftmaxXent", []int{2, 2, 0, 0, 2}), probs}
}

func (op xentGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("xent grad", ds)
}
func (op xentGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op xentGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, ss, err := inputs(v, "logits", "targets")
	if err != nil {
		return nil, err
	}
	z, y, s := in[0], in[1], ss[0]
	var g float32
	switch d := v[3].(type) {
	case *G.F32:
		g = float32(*d)
	case tensor.Tensor:
		gs, ok := d.Data().(float32)
		if !ok {
			return nil, fmt.Errorf("xent grad: loss gradient is %T", d.Data())
		}
		g = gs
	default:
		return nil, fmt.Errorf("xent grad: loss gradient is %T", v[3])
	}
	var p []float64
	if k := op.probs; k != nil && k.on && len(k.f64) == len(z) {
		p = k.f64 // the loss's op ran first in this run (its output is our input)
	} else {
		p = op.float64s(len(z))
		softmaxRows(z, y, s[1], p)
	}
	t, o := op.out(prealloc, s)
	scale := float64(g) / float64(s[0])
	for i := range o {
		o[i] = float32((p[i] - float64(y[i])) * scale)
	}
	return t, nil
}
