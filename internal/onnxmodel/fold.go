package onnxmodel

import (
	"errors"
	"fmt"
	"math"
	"slices"

	pb "badprune/internal/third_party/onnxpb"
)

// folds compute nodes whose inputs are all constants: the Constant nodes,
// and the Shape, Gather, Unsqueeze, Concat chains older exports flatten
// with. A fold that only reshapes keeps the tensor's name, so a weight
// reshaped in the graph is still written back where it is stored.
var folds map[string]func(*converter, *pb.NodeProto) (*tensor, error)

func init() {
	folds = map[string]func(*converter, *pb.NodeProto) (*tensor, error){
		"Constant":   foldConstant,
		"Identity":   foldIdentity,
		"Dropout":    foldIdentity,
		"Cast":       foldCast,
		"Shape":      foldShape,
		"Gather":     foldGather,
		"Unsqueeze":  foldUnsqueeze,
		"Squeeze":    foldSqueeze,
		"Concat":     foldConcat,
		"Slice":      foldSlice,
		"Reshape":    foldReshape,
		"Flatten":    foldFlatten,
		"Transpose":  foldTranspose,
		"Add":        foldArith,
		"Sub":        foldArith,
		"Mul":        foldArith,
		"Div":        foldArith,
		"ReduceProd": foldReduceProd,
	}
}

// in returns constant input k of n (nil when absent).
func in(c *converter, n *pb.NodeProto, k int) *tensor {
	ins := n.GetInput()
	if k >= len(ins) || ins[k] == "" {
		return nil
	}
	return c.vals[ins[k]].c
}

func need(c *converter, n *pb.NodeProto, k int) (*tensor, error) {
	if t := in(c, n, k); t != nil {
		return t, nil
	}
	return nil, fmt.Errorf("input %d is missing", k)
}

// need2 returns the first two inputs of n, which a binary fold needs.
func need2(c *converter, n *pb.NodeProto) (*tensor, *tensor, error) {
	x, err := need(c, n, 0)
	if err != nil {
		return nil, nil, err
	}
	y, err := need(c, n, 1)
	return x, y, err
}

func foldConstant(c *converter, n *pb.NodeProto) (*tensor, error) {
	a := attrsOf(n)
	if at, ok := a["value"]; ok {
		return decode(at.GetT(), n.GetOutput()[0])
	}
	switch {
	case a["value_float"] != nil:
		return &tensor{float: true, f: []float32{a["value_float"].GetF()}}, nil
	case a["value_floats"] != nil:
		f := a["value_floats"].GetFloats()
		return &tensor{float: true, dims: []int{len(f)}, f: slices.Clone(f)}, nil
	case a["value_int"] != nil:
		return &tensor{i: []int64{a["value_int"].GetI()}}, nil
	case a["value_ints"] != nil:
		v := a["value_ints"].GetInts()
		return &tensor{dims: []int{len(v)}, i: slices.Clone(v)}, nil
	}
	return nil, errors.New("a Constant of a kind other than a tensor, a number or numbers: not supported")
}

func foldIdentity(c *converter, n *pb.NodeProto) (*tensor, error) { return need(c, n, 0) }

func foldCast(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, err := need(c, n, 0)
	if err != nil {
		return nil, err
	}
	switch to := pb.TensorProto_DataType(attrsOf(n).int("to", 0)); to {
	case pb.TensorProto_FLOAT, pb.TensorProto_DOUBLE:
		if t.float {
			return t, nil
		}
		out := &tensor{dims: t.dims, float: true, f: make([]float32, t.size())}
		for k, v := range t.i {
			out.f[k] = float32(v)
		}
		return out, nil
	case pb.TensorProto_INT64, pb.TensorProto_INT32:
		if !t.float {
			return t, nil
		}
		out := &tensor{dims: t.dims, i: make([]int64, t.size())}
		for k, v := range t.f {
			out.i[k] = int64(v)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("Cast to %s: not supported", to)
	}
}

func foldShape(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, err := need(c, n, 0)
	if err != nil {
		return nil, err
	}
	out := &tensor{dims: []int{len(t.dims)}, batch: make([]bool, len(t.dims))}
	for _, d := range t.dims {
		out.i = append(out.i, int64(d))
	}
	return sliceShape(n, out)
}

// sliceShape applies the start and end attributes of Shape (opset 15).
func sliceShape(n *pb.NodeProto, t *tensor) (*tensor, error) {
	a := attrsOf(n)
	r := int64(len(t.i))
	lo, hi := a.int("start", 0), a.int("end", r)
	if lo < 0 {
		lo += r
	}
	if hi < 0 {
		hi += r
	}
	lo, hi = min(max(lo, 0), r), min(max(hi, 0), r)
	if lo > hi {
		lo = hi
	}
	out := &tensor{dims: []int{int(hi - lo)}, i: t.i[lo:hi]}
	if t.batch != nil {
		out.batch = t.batch[lo:hi]
	}
	return out, nil
}

// vector1 checks that t is one axis of integers (or a single one).
func vector1(t *tensor, what string) error {
	if len(t.dims) > 1 {
		return fmt.Errorf("%s of shape %v: only one axis is supported", what, t.dims)
	}
	return nil
}

func foldGather(c *converter, n *pb.NodeProto) (*tensor, error) {
	data, idx, err := need2(c, n)
	if err != nil {
		return nil, err
	}
	if err := vector1(data, "Gather data"); err != nil {
		return nil, err
	}
	if ax := attrsOf(n).int("axis", 0); ax != 0 && ax != -1 {
		return nil, fmt.Errorf("axis %d of one axis of data", ax)
	}
	ix, err := idx.ints()
	if err != nil {
		return nil, err
	}
	if err := vector1(idx, "Gather indices"); err != nil {
		return nil, err
	}
	size := int64(data.size())
	out := &tensor{dims: slices.Clone(idx.dims), float: data.float}
	for _, i := range ix {
		if i < 0 {
			i += size
		}
		if i < 0 || i >= size {
			return nil, fmt.Errorf("index %d out of range of %d values", i, size)
		}
		data.appendTo(out, int(i))
	}
	return out, nil
}

// reshaped is t with other dimensions and the same values, still stored
// where t is.
func reshaped(t *tensor, dims []int) *tensor {
	out := *t
	out.dims = dims
	return &out
}

// withAxes returns the data of an Unsqueeze or Squeeze and its axes: an
// attribute before opset 13, an input since.
func withAxes(c *converter, n *pb.NodeProto) (*tensor, []int64, error) {
	t, err := need(c, n, 0)
	if err != nil {
		return nil, nil, err
	}
	ax := attrsOf(n).ints("axes")
	if a := in(c, n, 1); a != nil {
		if ax, err = a.ints(); err != nil {
			return nil, nil, err
		}
	}
	return t, ax, nil
}

func foldUnsqueeze(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, ax, err := withAxes(c, n)
	if err != nil {
		return nil, err
	}
	rank := len(t.dims) + len(ax)
	ones := make([]bool, rank)
	for _, a := range ax {
		if a < 0 {
			a += int64(rank)
		}
		if a < 0 || a >= int64(rank) || ones[a] {
			return nil, fmt.Errorf("axes %v for %d dimensions", ax, rank)
		}
		ones[a] = true
	}
	var dims []int
	k := 0
	for _, one := range ones {
		if one {
			dims = append(dims, 1)
		} else {
			dims = append(dims, t.dims[k])
			k++
		}
	}
	return reshaped(t, dims), nil
}

func foldSqueeze(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, ax, err := withAxes(c, n)
	if err != nil {
		return nil, err
	}
	drop := make([]bool, len(t.dims))
	for _, a := range ax {
		if a < 0 {
			a += int64(len(t.dims))
		}
		if a < 0 || a >= int64(len(t.dims)) || t.dims[a] != 1 {
			return nil, fmt.Errorf("axes %v of shape %v", ax, t.dims)
		}
		drop[a] = true
	}
	var dims []int
	for k, d := range t.dims {
		if !drop[k] && (ax != nil || d != 1) {
			dims = append(dims, d)
		}
	}
	return reshaped(t, dims), nil
}

func foldConcat(c *converter, n *pb.NodeProto) (*tensor, error) {
	out := &tensor{}
	withBatch := false
	var parts []*tensor
	for k := range n.GetInput() {
		t, err := need(c, n, k)
		if err != nil {
			return nil, err
		}
		if err := vector1(t, "Concat input"); err != nil {
			return nil, err
		}
		if k > 0 && t.float != parts[0].float {
			return nil, errors.New("Concat of integers and floating-point values")
		}
		withBatch = withBatch || t.batch != nil
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return nil, errors.New("no inputs")
	}
	out.float = parts[0].float
	for _, t := range parts {
		out.f = append(out.f, t.f...)
		out.i = append(out.i, t.i...)
		if withBatch {
			b := t.batch
			if b == nil {
				b = make([]bool, t.size())
			}
			out.batch = append(out.batch, b...)
		}
	}
	out.dims = []int{len(out.f) + len(out.i)}
	return out, nil
}

func foldSlice(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, err := need(c, n, 0)
	if err != nil {
		return nil, err
	}
	if err := vector1(t, "Slice data"); err != nil {
		return nil, err
	}
	a := attrsOf(n)
	starts, ends, axes := a.ints("starts"), a.ints("ends"), a.ints("axes")
	steps := []int64{1}
	for k, p := range []*[]int64{&starts, &ends, &axes, &steps} {
		if v := in(c, n, k+1); v != nil {
			if *p, err = v.ints(); err != nil {
				return nil, err
			}
		}
	}
	if len(starts) != 1 || len(ends) != 1 || len(steps) != 1 || len(axes) > 1 || len(axes) == 1 && axes[0] != 0 && axes[0] != -1 {
		return nil, fmt.Errorf("Slice %v:%v on axes %v: only one axis is supported", starts, ends, axes)
	}
	size, step := int64(t.size()), steps[0]
	if step < 1 {
		return nil, fmt.Errorf("step %d: only positive steps are supported", step)
	}
	clamp := func(v int64) int64 {
		if v < 0 {
			v += size
		}
		return min(max(v, 0), size)
	}
	out := &tensor{float: t.float}
	for i := clamp(starts[0]); i < clamp(ends[0]); i += step {
		t.appendTo(out, int(i))
	}
	out.dims = []int{len(out.f) + len(out.i)}
	return out, nil
}

func foldReshape(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, s, err := need2(c, n)
	if err != nil {
		return nil, err
	}
	target, err := s.ints()
	if err != nil {
		return nil, err
	}
	dims := make([]int, len(target))
	free := -1
	known := 1
	for k, d := range target {
		switch {
		case d == 0 && k < len(t.dims):
			dims[k] = t.dims[k]
		case d == -1 && free < 0:
			free = k
			continue
		case d < 1:
			return nil, fmt.Errorf("shape %v", target)
		default:
			dims[k] = int(d)
		}
		known *= dims[k]
		if known > maxElems {
			return nil, fmt.Errorf("shape %v", target)
		}
	}
	if free >= 0 && known > 0 {
		dims[free] = t.size() / known
	}
	if product(dims) != t.size() {
		return nil, fmt.Errorf("shape %v for %d values", target, t.size())
	}
	return reshaped(t, dims), nil
}

func foldFlatten(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, err := need(c, n, 0)
	if err != nil {
		return nil, err
	}
	ax := int(attrsOf(n).int("axis", 1))
	if ax < 0 {
		ax += len(t.dims)
	}
	if ax < 0 || ax > len(t.dims) {
		return nil, fmt.Errorf("axis %d of %d dimensions", ax, len(t.dims))
	}
	return reshaped(t, []int{product(t.dims[:ax]), product(t.dims[ax:])}), nil
}

func foldTranspose(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, err := need(c, n, 0)
	if err != nil {
		return nil, err
	}
	r := len(t.dims)
	perm := attrsOf(n).ints("perm")
	if perm == nil {
		for k := r - 1; k >= 0; k-- {
			perm = append(perm, int64(k))
		}
	}
	seen := make([]bool, r)
	if len(perm) != r {
		return nil, fmt.Errorf("perm %v for %d dimensions", perm, r)
	}
	dims := make([]int, r)
	for k, p := range perm {
		if p < 0 || p >= int64(r) || seen[p] {
			return nil, fmt.Errorf("perm %v is not a permutation", perm)
		}
		seen[p] = true
		dims[k] = t.dims[p]
	}
	// Strides of the source, then walk the output in order.
	stride := make([]int, r)
	s := 1
	for k := r - 1; k >= 0; k-- {
		stride[k] = s
		s *= t.dims[k]
	}
	out := &tensor{dims: dims, float: t.float}
	idx := make([]int, r)
	for range t.size() {
		src := 0
		for k, p := range perm {
			src += idx[k] * stride[p]
		}
		if t.float {
			out.f = append(out.f, t.f[src])
		} else {
			out.i = append(out.i, t.i[src])
		}
		for k := r - 1; k >= 0; k-- {
			if idx[k]++; idx[k] < dims[k] {
				break
			}
			idx[k] = 0
		}
	}
	return out, nil
}

// foldArith computes Add, Sub, Mul, Div of constants of the same shape or
// with one value: shape arithmetic, and constants the exporter did not
// fold.
func foldArith(c *converter, n *pb.NodeProto) (*tensor, error) {
	x, y, err := need2(c, n)
	if err != nil {
		return nil, err
	}
	if x.float != y.float {
		return nil, errors.New("arithmetic of integers and floating-point values")
	}
	if x.size() == 1 && y.size() != 1 {
		x = reshaped(broadcast(x, y.size()), y.dims)
	}
	if y.size() == 1 && x.size() != 1 {
		y = reshaped(broadcast(y, x.size()), x.dims)
	}
	if !slices.Equal(x.dims, y.dims) && x.size() != 1 {
		return nil, fmt.Errorf("shapes %v and %v: only equal shapes or one value are supported", x.dims, y.dims)
	}
	for _, t := range []*tensor{x, y} {
		if slices.Contains(t.batch, true) {
			return nil, errors.New("arithmetic on the batch size: not supported")
		}
	}
	dims := x.dims
	if len(y.dims) > len(dims) {
		dims = y.dims
	}
	op := n.GetOpType()
	out := &tensor{dims: slices.Clone(dims), float: x.float}
	if x.float {
		for k := range x.f {
			a, b := x.f[k], y.f[k]
			out.f = append(out.f, map[string]float32{"Add": a + b, "Sub": a - b, "Mul": a * b, "Div": a / b}[op])
		}
		return out, nil
	}
	for k := range x.i {
		a, b := x.i[k], y.i[k]
		if op == "Div" && b == 0 {
			return nil, errors.New("integer division by zero")
		}
		var v int64
		switch op {
		case "Add":
			v = a + b
		case "Sub":
			v = a - b
		case "Mul":
			v = a * b
		case "Div":
			v = a / b
		}
		out.i = append(out.i, v)
	}
	return out, nil
}

// broadcast repeats t's one value n times.
func broadcast(t *tensor, n int) *tensor {
	out := &tensor{float: t.float, dims: []int{n}}
	for range n {
		if t.float {
			out.f = append(out.f, t.f[0])
		} else {
			out.i = append(out.i, t.i[0])
		}
		if t.batch != nil {
			out.batch = append(out.batch, t.batch[0])
		}
	}
	return out
}

func foldReduceProd(c *converter, n *pb.NodeProto) (*tensor, error) {
	t, err := need(c, n, 0)
	if err != nil {
		return nil, err
	}
	a := attrsOf(n)
	if a.ints("axes") != nil || in(c, n, 1) != nil {
		return nil, errors.New("ReduceProd along chosen axes: not supported")
	}
	if slices.Contains(t.batch, true) {
		return nil, errors.New("arithmetic on the batch size: not supported")
	}
	dims := []int{}
	if a.int("keepdims", 1) != 0 {
		dims = make([]int, len(t.dims))
		for k := range dims {
			dims[k] = 1
		}
	}
	if t.float {
		p := 1.0
		for _, v := range t.f {
			p *= float64(v)
		}
		if math.IsInf(p, 0) {
			return nil, errors.New("product overflows")
		}
		return &tensor{dims: dims, float: true, f: []float32{float32(p)}}, nil
	}
	p := int64(1)
	for _, v := range t.i {
		p *= v
	}
	return &tensor{dims: dims, i: []int64{p}}, nil
}
