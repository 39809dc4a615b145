package onnxmodel

import (
	"slices"

	"badprune/internal/model"
	pb "badprune/internal/third_party/onnxpb"
)

// concat is a Concat of images along their channels, or of vectors: a
// Concatenate layer on the last axis.
func (c *converter) concat(n *pb.NodeProto) error {
	var ins []*value
	for k := range n.GetInput() {
		v, err := c.net(n, k)
		if err != nil {
			return err
		}
		ins = append(ins, v)
	}
	if len(ins) < 2 {
		if len(ins) == 1 {
			c.pass(n, ins[0])
			return nil
		}
		return c.errorf(n, "no inputs")
	}
	x := ins[0]
	rank := len(x.dims) + 1
	axis := int(attrsOf(n).int("axis", 1))
	if axis < 0 {
		axis += rank
	}
	chAxis := 1
	if x.image() {
		chAxis = 1 + slices.Index(x.axes, 2)
	}
	if axis != chAxis {
		return c.errorf(n, "axis %d: only the channels are supported", axis)
	}
	out := &value{dims: slices.Clone(x.dims), axes: x.axes, nonneg: true}
	withPerm := false
	for _, v := range ins {
		withPerm = withPerm || v.perm != nil
	}
	var perm []int
	for k, v := range ins {
		other := slices.Clone(v.dims)
		other[axis-1] = x.dims[axis-1]
		if k > 0 && (!slices.Equal(other, x.dims) || !slices.Equal(v.axes, x.axes)) {
			return c.errorf(n, "inputs of shapes (N, %s) and (N, %s): not supported", dimsString(x.dims), dimsString(v.dims))
		}
		if !x.image() && v.units() > 0 {
			return c.errorf(n, "input of shape (N, %s) is not a (N, D) matrix", dimsString(v.dims))
		}
		if withPerm {
			base := len(perm)
			for i := 0; i < v.dims[0]; i++ {
				r := i
				if v.perm != nil {
					r = v.perm[i]
				}
				perm = append(perm, base+r)
			}
		}
		if k > 0 {
			out.dims[axis-1] += v.dims[axis-1]
		}
		out.nonneg = out.nonneg && v.nonneg
	}
	out.perm = perm
	return c.add(n, &model.Layer{Kind: model.Concat, Axis: -1}, "", out, ins...)
}

// flatten is a Flatten of each sample (axis 1).
func (c *converter) flatten(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	axis := int(attrsOf(n).int("axis", 1))
	if axis < 0 {
		axis += len(x.dims) + 1
	}
	if axis != 1 {
		return c.errorf(n, "axis %d: only flattening each sample (axis 1) is supported", axis)
	}
	return c.toVector(n, x)
}

// toVector flattens each sample of x: an image becomes a Flatten layer,
// whose output's features the value maps to ONNX's order; a vector loses
// its axes of size 1.
func (c *converter) toVector(n *pb.NodeProto, x *value) error {
	if !x.image() {
		out := *x
		out.dims = x.dims[:1]
		c.pass(n, &out)
		return nil
	}
	h, w, ch := x.hwc()
	size := h * w * ch
	perm := make([]int, size)
	identity := true
	d := x.dims
	for i := range perm {
		// ONNX's coordinates of element i, then the network's index.
		co := [3]int{i / (d[1] * d[2]), i / d[2] % d[1], i % d[2]}
		var s [3]int
		for k, a := range x.axes {
			s[a] = co[k]
		}
		perm[i] = (s[0]*w+s[1])*ch + s[2]
		identity = identity && perm[i] == i
	}
	if identity {
		perm = nil
	}
	return c.add(n, &model.Layer{Kind: model.Flatten}, "", &value{dims: []int{size}, perm: perm, nonneg: x.nonneg}, x)
}

// reshape is a Reshape that flattens each sample, to (N, -1), (-1, D) or
// (batch, D), or that adds or keeps axes of size 1.
func (c *converter) reshape(n *pb.NodeProto) error {
	x, t, err := inputs2(n, c.net, c.cst)
	if err != nil {
		return err
	}
	target, err := t.ints()
	if err != nil {
		return c.errorf(n, "shape %v", err)
	}
	size := product(x.dims)
	// The batch axis: a Shape's batch, 0 (copy), or the input's fixed
	// batch size.
	isBatch := func(k int) bool {
		return t.batch != nil && t.batch[k] || target[k] == 0 || c.batch > 0 && target[k] == c.batch
	}
	rest := func(from int) (int64, bool) {
		p := int64(1)
		for k := from; k < len(target); k++ {
			if target[k] < 1 {
				return 0, false
			}
			p *= target[k]
		}
		return p, true
	}
	switch {
	case len(target) == 2 && (isBatch(0) && (target[1] == -1 || target[1] == int64(size)) || target[0] == -1 && target[1] == int64(size)):
		return c.toVector(n, x)
	case len(target) > 2 && !x.image() && (isBatch(0) || target[0] == -1) && target[1] == int64(x.features()):
		if p, ok := rest(2); ok && p == 1 {
			out := *x
			out.dims = append([]int{x.features()}, make([]int, len(target)-2)...)
			for k := 1; k < len(out.dims); k++ {
				out.dims[k] = 1
			}
			c.pass(n, &out)
			return nil
		}
	case len(target) == 4 && x.image() && isBatch(0):
		if slices.Equal([]int64{int64(x.dims[0]), int64(x.dims[1]), int64(x.dims[2])}, target[1:]) {
			c.pass(n, x)
			return nil
		}
	}
	return c.errorf(n, "Reshape of (N, %s) to %v: only flattening each sample, (N, -1), is supported", dimsString(x.dims), target)
}

// transpose permutes the axes of an image: the network keeps its NHWC
// layout, the value records ONNX's new order (a model that mimics Keras
// transposes to NHWC before it flattens).
func (c *converter) transpose(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	perm := attrsOf(n).ints("perm")
	rank := len(x.dims) + 1
	if perm == nil {
		for k := rank - 1; k >= 0; k-- {
			perm = append(perm, int64(k))
		}
	}
	if len(perm) != rank || perm[0] != 0 {
		return c.errorf(n, "perm %v: only permutations of the axes of each sample are supported", perm)
	}
	if !x.image() {
		for k, p := range perm {
			if p != int64(k) {
				return c.errorf(n, "perm %v of data of shape (N, %s): not supported", perm, dimsString(x.dims))
			}
		}
		c.pass(n, x)
		return nil
	}
	out := *x
	out.dims, out.axes = make([]int, 3), make([]int, 3)
	seen := map[int64]bool{}
	for k, p := range perm[1:] {
		if p < 1 || p > 3 || seen[p] {
			return c.errorf(n, "perm %v: not a permutation", perm)
		}
		seen[p] = true
		out.dims[k], out.axes[k] = x.dims[p-1], x.axes[p-1]
	}
	c.pass(n, &out)
	return nil
}

// axesArg reads the axes of Unsqueeze or Squeeze: an attribute before
// opset 13, an input since.
func (c *converter) axesArg(n *pb.NodeProto, rank int) ([]int, bool, error) {
	ax := attrsOf(n).ints("axes")
	if v, _ := c.arg(n, 1); v != nil {
		t, err := c.cst(n, 1)
		if err != nil {
			return nil, false, err
		}
		if ax, err = t.ints(); err != nil {
			return nil, false, c.errorf(n, "axes %v", err)
		}
	} else if ax == nil {
		return nil, false, nil
	}
	out := make([]int, len(ax))
	for k, a := range ax {
		if a < 0 {
			a += int64(rank)
		}
		if a < 0 || a >= int64(rank) {
			return nil, false, c.errorf(n, "axis %d out of range", ax[k])
		}
		out[k] = int(a)
	}
	slices.Sort(out)
	return slices.Compact(out), true, nil
}

// unsqueeze adds axes of size 1 after a vector's features, as PyTorch
// does around a BatchNorm1d of FC features.
func (c *converter) unsqueeze(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	ax, ok, err := c.axesArg(n, len(x.dims)+1+len(attrsOf(n).ints("axes"))+c.inputLen(n, 1))
	if err != nil {
		return err
	}
	if !ok {
		return c.errorf(n, "no axes")
	}
	if x.image() || ax[0] < 2 {
		return c.errorf(n, "Unsqueeze of (N, %s) at axes %v: only adding axes after a sample's features is supported", dimsString(x.dims), ax)
	}
	out := *x
	out.dims = slices.Clone(x.dims)
	for range ax {
		out.dims = append(out.dims, 1)
	}
	c.pass(n, &out)
	return nil
}

// inputLen is the number of values of n's constant input k (0 if none).
func (c *converter) inputLen(n *pb.NodeProto, k int) int {
	if v, _ := c.arg(n, k); v != nil && v.c != nil {
		return v.c.size()
	}
	return 0
}

// squeeze removes axes of size 1: a vector's trailing ones, or the
// height and width of a 1x1 image (a Flatten).
func (c *converter) squeeze(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	rank := len(x.dims) + 1
	ax, ok, err := c.axesArg(n, rank)
	if err != nil {
		return err
	}
	if !ok {
		for k, d := range x.dims {
			if d == 1 {
				ax = append(ax, k+1)
			}
		}
	}
	if x.image() {
		h, w, _ := x.hwc()
		hw := []int{1 + slices.Index(x.axes, 0), 1 + slices.Index(x.axes, 1)}
		slices.Sort(hw)
		if h == 1 && w == 1 && slices.Equal(ax, hw) {
			return c.toVector(n, x)
		}
	} else if len(ax) > 0 && ax[0] >= 2 {
		out := *x
		out.dims = x.dims[:len(x.dims)-len(ax)]
		c.pass(n, &out)
		return nil
	}
	return c.errorf(n, "Squeeze of (N, %s) at axes %v: only removing axes of size 1 after a sample's features is supported", dimsString(x.dims), ax)
}

// through returns the network input of a node that passes it on as it
// is, which may follow the final softmax.
func (c *converter) through(n *pb.NodeProto) (*value, error) {
	if v, err := c.arg(n, 0); err == nil && v != nil && v.c == nil && v.final {
		return v, nil
	}
	return c.net(n, 0)
}

// identity is an Identity or a Dropout (inference): no layer.
func (c *converter) identity(n *pb.NodeProto) error {
	x, err := c.through(n)
	if err != nil {
		return err
	}
	if n.GetOpType() == "Dropout" {
		if v, _ := c.arg(n, 2); v != nil {
			t, err := c.cst(n, 2)
			if err != nil {
				return err
			}
			if t.size() == 1 && t.values()[0] != 0 {
				return c.errorf(n, "training_mode true: not supported (inference only)")
			}
		}
	}
	c.pass(n, x)
	return nil
}

// cast of the network's data to float is nothing.
func (c *converter) cast(n *pb.NodeProto) error {
	x, err := c.through(n)
	if err != nil {
		return err
	}
	if to := pb.TensorProto_DataType(attrsOf(n).int("to", 0)); to != pb.TensorProto_FLOAT {
		return c.errorf(n, "Cast of the network's data to %s: not supported", to)
	}
	c.pass(n, x)
	return nil
}

// shape is the Shape of a network tensor: a constant whose first value is
// the batch size, whatever it is.
func (c *converter) shape(n *pb.NodeProto) error {
	x, err := c.net(n, 0)
	if err != nil {
		return err
	}
	t := &tensor{dims: []int{len(x.dims) + 1}, i: []int64{max(c.batch, 1)}, batch: []bool{true}}
	for _, d := range x.dims {
		t.i = append(t.i, int64(d))
		t.batch = append(t.batch, false)
	}
	t, err = sliceShape(n, t)
	if err != nil {
		return c.errorf(n, "%v", err)
	}
	c.refs[x.layer]-- // reads no values
	c.vals[n.GetOutput()[0]] = &value{c: t}
	return nil
}
