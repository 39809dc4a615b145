package onnxmodel

import (
	"math"
	"slices"

	"badprune/internal/model"
	pb "badprune/internal/third_party/onnxpb"
)

// ops convert the nodes that read the network's data, by op type.
var ops map[string]func(*converter, *pb.NodeProto) error

func init() {
	ops = map[string]func(*converter, *pb.NodeProto) error{
		"Conv":               (*converter).conv,
		"MaxPool":            (*converter).maxPool,
		"AveragePool":        (*converter).avgPool,
		"GlobalAveragePool":  (*converter).globalPool,
		"GlobalMaxPool":      (*converter).globalPool,
		"Pad":                (*converter).pad,
		"Relu":               (*converter).relu,
		"Clip":               (*converter).clip,
		"LeakyRelu":          (*converter).activation,
		"Sigmoid":            (*converter).activation,
		"Tanh":               (*converter).activation,
		"Elu":                (*converter).activation,
		"BatchNormalization": (*converter).batchNorm,
		"Gemm":               (*converter).gemm,
		"MatMul":             (*converter).matMul,
		"Add":                (*converter).arith,
		"Sub":                (*converter).arith,
		"Mul":                (*converter).arith,
		"Div":                (*converter).arith,
		"Concat":             (*converter).concat,
		"Flatten":            (*converter).flatten,
		"Reshape":            (*converter).reshape,
		"Transpose":          (*converter).transpose,
		"Unsqueeze":          (*converter).unsqueeze,
		"Squeeze":            (*converter).squeeze,
		"Softmax":            (*converter).softmax,
		"LogSoftmax":         (*converter).softmax,
		"Identity":           (*converter).identity,
		"Dropout":            (*converter).identity,
		"Cast":               (*converter).cast,
		"Shape":              (*converter).shape,
	}
}

// elementwise adds a layer that maps each value of x alone.
func (c *converter) elementwise(n *pb.NodeProto, x *value, l *model.Layer, nonneg bool) error {
	out := *x
	out.nonneg = nonneg
	return c.add(n, l, "", &out, x)
}

// relu is the activation of the layer before when only it reads that
// layer, as Keras models have it; else an Activation layer.
func (c *converter) relu(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	if c.fuse(n, x) {
		x.layer.Act = "relu"
		out := *x
		out.nonneg = true
		c.set(n.GetOutput()[0], &out)
		return nil
	}
	return c.elementwise(n, x, &model.Layer{Kind: model.Activation, Act: "relu"}, true)
}

// clip is ReLU6 and its kin: Clip to [0, max].
func (c *converter) clip(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	a := attrsOf(n)
	lo, hi := float64(a.float("min", -math.MaxFloat32)), float64(a.float("max", math.MaxFloat32))
	for k, p := range []*float64{&lo, &hi} {
		if v, _ := c.arg(n, k+1); v != nil {
			t, err := c.cst(n, k+1)
			if err != nil {
				return err
			}
			if t.size() != 1 {
				return c.errorf(n, "bound of shape %v: want one value", t.dims)
			}
			*p = t.values()[0]
		}
	}
	if lo != 0 || !(hi > 0) {
		return c.errorf(n, "Clip to [%g, %g]: only Clip to [0, max] (ReLU, ReLU6) is supported", lo, hi)
	}
	if hi >= math.MaxFloat32 {
		return c.relu(n)
	}
	return c.elementwise(n, x, &model.Layer{Kind: model.ReLU, Act: "relu", MaxValue: hi}, true)
}

// activation is an activation layer of its own: LeakyRelu, Sigmoid, Tanh,
// Elu.
func (c *converter) activation(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	a := attrsOf(n)
	var l *model.Layer
	nonneg := false
	switch n.GetOpType() {
	case "LeakyRelu":
		l = &model.Layer{Kind: model.LeakyReLU, Act: "leaky_relu", Alpha: float64(a.float("alpha", 0.01))}
	case "Elu":
		l = &model.Layer{Kind: model.ELU, Act: "elu", Alpha: float64(a.float("alpha", 1))}
	case "Sigmoid":
		l = &model.Layer{Kind: model.Activation, Act: "sigmoid"}
		nonneg = true
	case "Tanh":
		l = &model.Layer{Kind: model.Activation, Act: "tanh"}
	}
	return c.elementwise(n, x, l, nonneg)
}

// batchNorm is a BatchNormalization at inference, of images or of FC
// features: gamma, beta, the moving mean and variance, per channel.
func (c *converter) batchNorm(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	if x.image() && !slices.Equal(x.axes, nchw) {
		return c.errorf(n, "input is a transposed image: not supported")
	}
	a := attrsOf(n)
	if a.int("training_mode", 0) != 0 {
		return c.errorf(n, "training_mode 1: not supported (inference only)")
	}
	ch := x.dims[0]
	if x.image() {
		_, _, ch = x.hwc()
	}
	var ts [4]*tensor
	for k, what := range []string{"scale", "bias", "mean", "variance"} {
		if ts[k], err = c.param(n, k+1, what, ch); err != nil {
			return err
		}
	}
	for i, v := range ts[3].f {
		if !(v >= 0) {
			return c.errorf(n, "variance %g of channel %d", v, i)
		}
	}
	var rows []int
	if !x.image() {
		rows = x.perm
	}
	l := &model.Layer{Kind: model.BatchNorm, HasGamma: true, HasBeta: true, Axis: -1,
		Eps: float64(a.float("epsilon", 1e-5)), KernelShape: []int{ch},
		Kernel: permuted(ts[0].f, rows), Bias: permuted(ts[1].f, rows), Mean: permuted(ts[2].f, rows), Var: permuted(ts[3].f, rows)}
	out := *x
	out.nonneg = false
	if err := c.add(n, l, ts[0].name, &out, x); err != nil {
		return err
	}
	for k, f := range []field{kernel, bias, mean, variance} {
		c.weight(l, f, ts[k], plain, rows, n, k+1)
	}
	return nil
}

// permuted returns v with value i at rows[i] (a copy of v when rows is
// nil).
func permuted(v []float32, rows []int) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		r := i
		if rows != nil {
			r = rows[i]
		}
		out[r] = x
	}
	return out
}

// gemm is a Gemm with weight (and bias) constants: a Dense layer.
func (c *converter) gemm(n *pb.NodeProto) error {
	x, err := c.vec(n, 0)
	if err != nil {
		return err
	}
	a := attrsOf(n)
	if a.int("transA", 0) != 0 {
		return c.errorf(n, "transA 1: not supported")
	}
	bv, _ := c.arg(n, 2)
	if a.float("alpha", 1) != 1 || bv != nil && a.float("beta", 1) != 1 {
		return c.errorf(n, "alpha %g, beta %g: only 1 is supported", a.float("alpha", 1), a.float("beta", 1))
	}
	return c.dense(n, x, a.int("transB", 0) != 0, bv != nil)
}

// matMul is a MatMul by a constant: a Dense layer without bias, which a
// following Add of a constant gives (foldBias).
func (c *converter) matMul(n *pb.NodeProto) error {
	x, err := c.vec(n, 0)
	if err != nil {
		return err
	}
	return c.dense(n, x, false, false)
}

// dense is a Dense layer from a Gemm or MatMul whose weight (input 1) is
// (in, out), or (out, in) when transposed, and bias (input 2) (out).
func (c *converter) dense(n *pb.NodeProto, x *value, transposed, hasBias bool) error {
	wt, err := c.param(n, 1, "weight")
	if err != nil {
		return err
	}
	if len(wt.dims) != 2 {
		return c.errorf(n, "weight of shape %v: want a matrix", wt.dims)
	}
	in, out := wt.dims[0], wt.dims[1]
	lay := plain
	if transposed {
		in, out = out, in
		lay = denseOutIn
	}
	if in != x.features() {
		return c.errorf(n, "weight of shape %v for %d input features", wt.dims, x.features())
	}
	l := &model.Layer{Kind: model.Dense, KernelShape: []int{in, out}, Kernel: make([]float32, in*out)}
	for i := 0; i < in; i++ {
		r := i
		if x.perm != nil {
			r = x.perm[i]
		}
		for o := 0; o < out; o++ {
			if transposed {
				l.Kernel[r*out+o] = wt.f[o*in+i]
			} else {
				l.Kernel[r*out+o] = wt.f[i*out+o]
			}
		}
	}
	var b *tensor
	if hasBias {
		if b, err = c.param(n, 2, "bias"); err != nil {
			return err
		}
		if b.size() != out || len(b.dims) > 2 || len(b.dims) == 2 && b.dims[0] != 1 {
			return c.errorf(n, "bias of shape %v for %d outputs", b.dims, out)
		}
		l.Bias = slices.Clone(b.f)
	}
	if err := c.add(n, l, wt.name, &value{dims: []int{out}}, x); err != nil {
		return err
	}
	c.weight(l, kernel, wt, lay, x.perm, n, 1)
	if b != nil {
		c.weight(l, bias, b, plain, nil, n, 2)
	}
	return nil
}

// arith is Add, Sub, Mul or Div: of two network tensors (Add only), or of
// one and a constant, which becomes the bias of the layer before (an Add
// after a MatMul) or a Rescaling layer.
func (c *converter) arith(n *pb.NodeProto) error {
	a0, a1, err := inputs2(n, c.arg, c.arg)
	if err != nil {
		return err
	}
	if a0 == nil || a1 == nil {
		return c.errorf(n, "needs two inputs")
	}
	op := n.GetOpType()
	if a0.c == nil && a1.c == nil {
		if op != "Add" {
			return c.errorf(n, "%s of two computed tensors: not supported", op)
		}
		return c.addLayers(n)
	}
	xk, tk := 0, 1
	if a0.c != nil {
		xk, tk = 1, 0
	}
	x, err := c.net(n, xk)
	if err != nil {
		return err
	}
	t := []*value{a0, a1}[tk].c
	if op == "Add" && c.foldBias(n, x, t, tk) {
		return nil
	}
	vals, err := c.perChannel(n, x, t)
	if err != nil {
		return err
	}
	scale, offset := []float32{1}, vals
	switch {
	case op == "Sub" && tk == 1:
		offset = neg(vals)
	case op == "Sub":
		scale, offset = []float32{-1}, vals
	case op == "Mul":
		scale, offset = vals, []float32{0}
	case op == "Div" && tk == 1:
		scale, offset = make([]float32, len(vals)), []float32{0}
		for i, v := range vals {
			scale[i] = 1 / v
		}
	case op == "Div":
		return c.errorf(n, "a constant divided by the network's data: not supported")
	}
	return c.elementwise(n, x, &model.Layer{Kind: model.Rescaling, Scale: scale, Offset: offset}, false)
}

// neg is -v.
func neg(v []float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = -x
	}
	return out
}

// addLayers is the Add of two network tensors: an Add layer.
func (c *converter) addLayers(n *pb.NodeProto) error {
	x, y, err := inputs2(n, c.net, c.net)
	if err != nil {
		return err
	}
	if !slices.Equal(x.dims, y.dims) || !slices.Equal(x.axes, y.axes) || !slices.Equal(x.perm, y.perm) {
		return c.errorf(n, "inputs of shapes (N, %s) and (N, %s) laid out differently: not supported", dimsString(x.dims), dimsString(y.dims))
	}
	out := *x
	out.nonneg = x.nonneg && y.nonneg
	return c.add(n, &model.Layer{Kind: model.Add}, "", &out, x, y)
}

// foldBias makes t, input tk of n, the bias of the layer computing x when
// that layer has none and only this Add reads it: PyTorch's Linear
// exported as MatMul and Add.
func (c *converter) foldBias(n *pb.NodeProto, x *value, t *tensor, tk int) bool {
	l := x.layer
	if l.Kind != model.Dense && l.Kind != model.Conv2D || l.Bias != nil || l.Act != "linear" || c.refs[l] != 1 || !t.float {
		return false
	}
	oc := l.KernelShape[len(l.KernelShape)-1]
	want := []int{oc}
	if x.image() {
		want = []int{oc, 1, 1}
	}
	d := t.dims
	if len(d) == len(want)+1 && d[0] == 1 {
		d = d[1:]
	}
	if !slices.Equal(d, want) {
		return false
	}
	for _, v := range t.f {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	l.Bias = slices.Clone(t.f)
	c.weight(l, bias, t, plain, nil, n, tk)
	c.pass(n, x)
	return true
}

// perChannel returns a constant operand as one value, or one per channel
// of x in the layer's order, if it broadcasts so.
func (c *converter) perChannel(n *pb.NodeProto, x *value, t *tensor) ([]float32, error) {
	v := t.values()
	if t.size() == 1 {
		return []float32{float32(v[0])}, nil
	}
	full := append([]int{1}, x.dims...)
	d := t.dims
	if len(d) > len(full) {
		return nil, c.errorf(n, "constant of shape %v for data of shape (N, %s)", d, dimsString(x.dims))
	}
	// The channel axis of x in ONNX's view (counting the batch axis).
	axis := 1
	if x.image() {
		axis = 1 + slices.Index(x.axes, 2)
	}
	off := len(full) - len(d)
	for k, s := range d {
		if s != 1 && (k+off != axis || s != full[axis]) {
			return nil, c.errorf(n, "constant of shape %v: only one value, or one per channel, is supported", d)
		}
	}
	out := make([]float32, t.size())
	for i, x2 := range v {
		r := i
		if x.perm != nil {
			r = x.perm[i]
		}
		out[r] = float32(x2)
	}
	return out, nil
}

// softmax ends the model: the class scores' softmax (or log-softmax),
// which keeps their order, so the network leaves it out of its logits.
func (c *converter) softmax(n *pb.NodeProto) error {
	x, err := c.vec(n, 0)
	if err != nil {
		return err
	}
	if x.perm != nil {
		return c.errorf(n, "softmax of a flattened feature map: not supported")
	}
	if ax := attrsOf(n).int("axis", 1); ax != 1 && ax != -1 {
		return c.errorf(n, "axis %d: only the class axis is supported", ax)
	}
	l := x.layer
	if l.Kind == model.Dense && l.Act == "linear" && c.refs[l] == 1 {
		l.Act = "softmax"
		out := *x
		out.final = true
		c.pass(n, &out)
		return nil
	}
	out := *x
	out.final = true
	return c.add(n, &model.Layer{Kind: model.Softmax, Act: "softmax", Axis: -1}, "", &out, x)
}
