package nn

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/kernels"
)

// The ops of the layers beyond the lab's DeepID: elementwise activations,
// per-channel affine maps (a frozen BatchNormalization, Rescaling),
// average and global pooling, zero padding, concatenation on the channel
// axis and depthwise convolution, each with its gradient. They are plain
// Go loops: these layers cost little beside the convolutions.

// Act is an elementwise activation in Keras's terms: Name as Keras spells
// it, Alpha the negative slope of relu and leaky_relu or elu's alpha,
// MaxValue (0: none) and Threshold relu's.
type Act struct {
	Name                       string
	Alpha, MaxValue, Threshold float64
}

// Apply applies a to x elementwise.
func Apply(x *G.Node, a Act) (*G.Node, error) {
	if _, _, ok := a.eval(0); !ok {
		return nil, fmt.Errorf("nn: activation %q is not supported", a.Name)
	}
	return G.ApplyOp(actOp{newBase(fmt.Sprintf("Act%+v%d", a, x.Dims()), []int{x.Dims(), x.Dims()}), a}, x)
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// eval returns a(x) and its derivative there; ok is false for an unknown
// activation. The definitions are Keras's (keras.activations).
func (a Act) eval(x float64) (y, dy float64, ok bool) {
	const seluScale, seluAlpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
	switch a.Name {
	case "linear":
		return x, 1, true
	case "relu":
		// x where x > threshold (else 0), clipped to max_value, less
		// alpha·relu(threshold - x).
		t := a.Threshold
		if x > t {
			y, dy = x, 1
		}
		if a.MaxValue > 0 && (y < 0 || y > a.MaxValue) {
			y, dy = math.Min(math.Max(y, 0), a.MaxValue), 0
		}
		if a.Alpha != 0 && t-x > 0 {
			y -= a.Alpha * (t - x)
			dy += a.Alpha
		}
		return y, dy, true
	case "relu6":
		if x <= 0 || x >= 6 {
			return math.Min(math.Max(x, 0), 6), 0, true
		}
		return x, 1, true
	case "leaky_relu":
		if x >= 0 {
			return x, 1, true
		}
		return a.Alpha * x, a.Alpha, true
	case "elu", "selu":
		scale, alpha := 1.0, a.Alpha
		if a.Name == "selu" {
			scale, alpha = seluScale, seluAlpha
		}
		if x > 0 {
			return scale * x, scale, true
		}
		e := math.Exp(x)
		return scale * alpha * (e - 1), scale * alpha * e, true
	case "sigmoid":
		s := sigmoid(x)
		return s, s * (1 - s), true
	case "tanh":
		t := math.Tanh(x)
		return t, 1 - t*t, true
	case "swish", "silu":
		s := sigmoid(x)
		return x * s, s + x*s*(1-s), true
	case "softplus":
		return math.Max(x, 0) + math.Log1p(math.Exp(-math.Abs(x))), sigmoid(x), true
	case "softsign":
		d := 1 + math.Abs(x)
		return x / d, 1 / (d * d), true
	case "gelu":
		c := 0.5 * (1 + math.Erf(x/math.Sqrt2))
		return x * c, c + x*math.Exp(-x*x/2)/math.Sqrt(2*math.Pi), true
	}
	return 0, 0, false
}

type actOp struct {
	base
	act Act
}

func (op actOp) DiffWRT(int) []bool { return []bool{true} }
func (op actOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("activation", ds)
}
func (op actOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op actOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "activation input")
	if err != nil {
		return nil, err
	}
	t, o := op.out(prealloc, s)
	for i, a := range x {
		y, _, _ := op.act.eval(float64(a))
		o[i] = float32(y)
	}
	return t, nil
}
func (op actOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	r := op.ranks[0]
	dx, err := G.ApplyOp(actGradOp{newBase("Grad"+op.name, []int{r, r, r}), op.act}, in[0], grad)
	return G.Nodes{dx}, err
}

// actGradOp: (x, dy) -> dy·a'(x).
type actGradOp struct {
	base
	act Act
}

func (op actGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("activation grad", ds)
}
func (op actGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op actGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "activation input", "output gradient")
	if err != nil {
		return nil, err
	}
	t, o := op.out(prealloc, s[0])
	for i, a := range in[0] {
		_, d, _ := op.act.eval(float64(a))
		o[i] = float32(d * float64(in[1][i]))
	}
	return t, nil
}

// Affine computes x·a + b per channel (the last axis of x): a
// BatchNormalization at inference, or a Rescaling. a and b are constants
// of the graph; no gradient flows to them.
func Affine(x, a, b *G.Node) (*G.Node, error) {
	r := x.Dims()
	return G.ApplyOp(affineOp{newBase(fmt.Sprintf("Affine%d", r), []int{r, 1, 1, r})}, x, a, b)
}

type affineOp struct{ base }

func (op affineOp) DiffWRT(int) []bool { return []bool{true, false, false} }
func (op affineOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("affine", ds)
}
func (op affineOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op affineOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "affine input", "affine scale", "affine shift")
	if err != nil {
		return nil, err
	}
	x, a, b := in[0], in[1], in[2]
	c := len(a)
	if c == 0 || s[0][len(s[0])-1] != c || len(b) != c {
		return nil, fmt.Errorf("affine: input %v, %d scales, %d shifts", s[0], c, len(b))
	}
	t, o := op.out(prealloc, s[0])
	for i := 0; i < len(x); i += c {
		for j := 0; j < c; j++ {
			o[i+j] = x[i+j]*a[j] + b[j]
		}
	}
	return t, nil
}
func (op affineOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	r := op.ranks[0]
	dx, err := G.ApplyOp(scaleOp{newBase(fmt.Sprintf("Scale%d", r), []int{r, 1, r})}, grad, in[1])
	return G.Nodes{dx, nil, nil}, err
}

// scaleOp: (dy, a) -> dy·a per channel.
type scaleOp struct{ base }

func (op scaleOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShape("scale", ds)
}
func (op scaleOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op scaleOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "output gradient", "affine scale")
	if err != nil {
		return nil, err
	}
	dy, a := in[0], in[1]
	c := len(a)
	t, o := op.out(prealloc, s[0])
	for i := 0; i < len(dy); i += c {
		for j := 0; j < c; j++ {
			o[i+j] = dy[i+j] * a[j]
		}
	}
	return t, nil
}

// Window is a pooling or depthwise window on NHWC images: the output is
// OH x OW, the input padded by PadT and PadL (and what "same" needs after).
type Window struct {
	kernels.Pool
	OH, OW int
}

// cells calls f for each input cell of output (oy, ox) inside an h x w
// input, with its flat position y*w+x and the window offset (ky, kx).
func (p Window) cells(h, w, oy, ox int, f func(pos, ky, kx int)) {
	for ky := 0; ky < p.PH; ky++ {
		y := oy*p.SH + ky - p.PadT
		if y < 0 || y >= h {
			continue
		}
		for kx := 0; kx < p.PW; kx++ {
			x := ox*p.SW + kx - p.PadL
			if x >= 0 && x < w {
				f(y*w+x, ky, kx)
			}
		}
	}
}

// AvgPool applies a Keras AveragePooling2D: the mean of each window's
// cells inside the input, padding not counted (TensorFlow's "same").
func AvgPool(x *G.Node, p Window) (*G.Node, error) {
	return G.ApplyOp(avgPoolOp{newBase(fmt.Sprintf("AvgPool%+v", p), []int{4, 4}), p}, x)
}

type avgPoolOp struct {
	base
	Window
}

func (op avgPoolOp) DiffWRT(int) []bool { return []bool{true} }
func (op avgPoolOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return pooledShape("avgpool", ds, op.OH, op.OW)
}
func (op avgPoolOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op avgPoolOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "pool input")
	if err != nil {
		return nil, err
	}
	n, h, w, c := s[0], s[1], s[2], s[3]
	t, o := op.out(prealloc, tensor.Shape{n, op.OH, op.OW, c})
	op.split(n, 1, func(lo, hi int) {
		acc := make([]float32, c)
		for i := lo; i < hi; i++ {
			img := x[i*h*w*c : (i+1)*h*w*c]
			for oy := 0; oy < op.OH; oy++ {
				for ox := 0; ox < op.OW; ox++ {
					clear(acc)
					cnt := 0
					op.cells(h, w, oy, ox, func(pos, _, _ int) {
						for j, v := range img[pos*c : (pos+1)*c] {
							acc[j] += v
						}
						cnt++
					})
					dst := o[((i*op.OH+oy)*op.OW+ox)*c:][:c]
					for j := range dst {
						dst[j] = acc[j] / float32(cnt)
					}
				}
			}
		}
	})
	return t, nil
}
func (op avgPoolOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(avgPoolGradOp{newBase("Grad"+op.name+fmt.Sprint(in[0].Shape()), []int{4, 4}), op.Window, in[0].Shape()}, grad)
	return G.Nodes{dx}, err
}

// avgPoolGradOp: dy -> dx, each output's gradient shared by its cells.
type avgPoolGradOp struct {
	base
	Window
	shape tensor.Shape
}

func (op avgPoolGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape.Clone(), nil }
func (op avgPoolGradOp) Do(v ...G.Value) (G.Value, error)               { return op.UsePreallocDo(nil, v...) }
func (op avgPoolGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	dy, _, err := f32(v[0], "output gradient")
	if err != nil {
		return nil, err
	}
	n, h, w, c := op.shape[0], op.shape[1], op.shape[2], op.shape[3]
	t, dx := op.out(prealloc, op.shape)
	zero(dx)
	for i := 0; i < n; i++ {
		img := dx[i*h*w*c : (i+1)*h*w*c]
		for oy := 0; oy < op.OH; oy++ {
			for ox := 0; ox < op.OW; ox++ {
				cnt := 0
				op.cells(h, w, oy, ox, func(int, int, int) { cnt++ })
				g := dy[((i*op.OH+oy)*op.OW+ox)*c:][:c]
				op.cells(h, w, oy, ox, func(pos, _, _ int) {
					for j, v := range g {
						img[pos*c+j] += v / float32(cnt)
					}
				})
			}
		}
	}
	return t, nil
}

// GlobalPool applies GlobalAveragePooling2D (or GlobalMaxPooling2D when
// max is set): (N, H, W, C) to (N, C).
func GlobalPool(x *G.Node, max bool) (*G.Node, error) {
	return G.ApplyOp(globalPoolOp{newBase(fmt.Sprintf("GlobalPool{max:%v}", max), []int{4, 2}), max}, x)
}

type globalPoolOp struct {
	base
	max bool
}

func (op globalPoolOp) DiffWRT(int) []bool { return []bool{true} }
func (op globalPoolOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok || len(s) != 4 {
		return nil, fmt.Errorf("global pool: want a 4-D input")
	}
	return tensor.Shape{s[0], s[3]}, nil
}
func (op globalPoolOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }

// argmaxCells sets at, per channel of an image of hw cells of c channels,
// to the first cell holding the channel's largest value.
func argmaxCells(x []float32, hw, c int, at []int) {
	for j := range at {
		at[j] = 0
	}
	for p := 1; p < hw; p++ {
		for j := 0; j < c; j++ {
			if x[p*c+j] > x[at[j]*c+j] {
				at[j] = p
			}
		}
	}
}

func (op globalPoolOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "pool input")
	if err != nil {
		return nil, err
	}
	n, hw, c := s[0], s[1]*s[2], s[3]
	t, o := op.out(prealloc, tensor.Shape{n, c})
	at := make([]int, c)
	acc := make([]float64, c)
	for i := 0; i < n; i++ {
		img := x[i*hw*c : (i+1)*hw*c]
		dst := o[i*c : (i+1)*c]
		if op.max {
			argmaxCells(img, hw, c, at)
			for j := range dst {
				dst[j] = img[at[j]*c+j]
			}
			continue
		}
		clear(acc)
		for p := 0; p < hw; p++ {
			for j, v := range img[p*c : (p+1)*c] {
				acc[j] += float64(v)
			}
		}
		for j := range dst {
			dst[j] = float32(acc[j] / float64(hw))
		}
	}
	return t, nil
}
func (op globalPoolOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(globalPoolGradOp{newBase("Grad"+op.name, []int{4, 2, 4}), op.max, in[0].Shape()}, in[0], grad)
	return G.Nodes{dx}, err
}

// globalPoolGradOp: (x, dy) -> dx: spread evenly, or to each channel's
// first largest cell.
type globalPoolGradOp struct {
	base
	max   bool
	shape tensor.Shape
}

func (op globalPoolGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return op.shape.Clone(), nil
}
func (op globalPoolGradOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op globalPoolGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, _, err := inputs(v, "pool input", "output gradient")
	if err != nil {
		return nil, err
	}
	x, dy := in[0], in[1]
	n, hw, c := op.shape[0], op.shape[1]*op.shape[2], op.shape[3]
	t, dx := op.out(prealloc, op.shape)
	zero(dx)
	at := make([]int, c)
	for i := 0; i < n; i++ {
		g := dy[i*c : (i+1)*c]
		img := dx[i*hw*c : (i+1)*hw*c]
		if op.max {
			argmaxCells(x[i*hw*c:(i+1)*hw*c], hw, c, at)
			for j, v := range g {
				img[at[j]*c+j] = v
			}
			continue
		}
		for p := 0; p < hw; p++ {
			for j, v := range g {
				img[p*c+j] = v / float32(hw)
			}
		}
	}
	return t, nil
}

// Pad applies a Keras ZeroPadding2D: pad rows on top and bottom, columns
// on the left and right, with zeros.
func Pad(x *G.Node, top, bottom, left, right int) (*G.Node, error) {
	p := padSpec{top, bottom, left, right}
	return G.ApplyOp(padOp{newBase(fmt.Sprintf("Pad%v", p), []int{4, 4}), p}, x)
}

type padSpec [4]int

type padOp struct {
	base
	p padSpec
}

func (op padOp) DiffWRT(int) []bool { return []bool{true} }
func (op padOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok || len(s) != 4 {
		return nil, fmt.Errorf("pad: want a 4-D input")
	}
	return tensor.Shape{s[0], s[1] + op.p[0] + op.p[1], s[2] + op.p[2] + op.p[3], s[3]}, nil
}
func (op padOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op padOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	x, s, err := f32(v[0], "pad input")
	if err != nil {
		return nil, err
	}
	os, _ := op.InferShape(s)
	t, o := op.out(prealloc, os)
	zero(o)
	op.p.copy(x, o, s, false)
	return t, nil
}
func (op padOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(cropOp{newBase("Grad"+op.name+fmt.Sprint(in[0].Shape()), []int{4, 4}), op.p, in[0].Shape()}, grad)
	return G.Nodes{dx}, err
}

// copy moves the rows of an unpadded batch of shape s between small and
// its padded form big: into big, or back out of it when crop is set.
func (p padSpec) copy(small, big []float32, s tensor.Shape, crop bool) {
	n, h, w, c := s[0], s[1], s[2], s[3]
	ph, pw := h+p[0]+p[1], w+p[2]+p[3]
	for i := 0; i < n; i++ {
		for y := 0; y < h; y++ {
			a := small[((i*h+y)*w)*c:][:w*c]
			b := big[((i*ph+y+p[0])*pw+p[2])*c:][:w*c]
			if crop {
				copy(a, b)
			} else {
				copy(b, a)
			}
		}
	}
}

// cropOp: the gradient of padding, dy cropped to the input's shape.
type cropOp struct {
	base
	p     padSpec
	shape tensor.Shape
}

func (op cropOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape.Clone(), nil }
func (op cropOp) Do(v ...G.Value) (G.Value, error)               { return op.UsePreallocDo(nil, v...) }
func (op cropOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	dy, _, err := f32(v[0], "output gradient")
	if err != nil {
		return nil, err
	}
	t, dx := op.out(prealloc, op.shape)
	op.p.copy(dx, dy, op.shape, true)
	return t, nil
}

// Concat joins its inputs on their last axis, as Keras's Concatenate
// (axis -1).
func Concat(xs ...*G.Node) (*G.Node, error) {
	r := xs[0].Dims()
	ranks := make([]int, len(xs)+1)
	for i := range ranks {
		ranks[i] = r
	}
	return G.ApplyOp(concatOp{newBase(fmt.Sprintf("Concat%d", len(xs)), ranks)}, xs...)
}

type concatOp struct{ base }

func (op concatOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = true
	}
	return d
}
func (op concatOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s0, ok := ds[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("concat: expected shapes")
	}
	o := s0.Clone()
	for _, d := range ds[1:] {
		s, ok := d.(tensor.Shape)
		if !ok || len(s) != len(s0) || !s[:len(s)-1].Eq(s0[:len(s0)-1]) {
			return nil, fmt.Errorf("concat: inputs %v and %v", s0, d)
		}
		o[len(o)-1] += s[len(s)-1]
	}
	return o, nil
}
func (op concatOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op concatOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	names := make([]string, len(v))
	for i := range names {
		names[i] = fmt.Sprintf("concat input %d", i)
	}
	in, ss, err := inputs(v, names...)
	if err != nil {
		return nil, err
	}
	ds := make([]G.DimSizer, len(ss))
	for i, s := range ss {
		ds[i] = s
	}
	os, err := op.InferShape(ds...)
	if err != nil {
		return nil, err
	}
	t, o := op.out(prealloc, os)
	total := os[len(os)-1]
	rows := len(o) / total
	at := 0
	for i, x := range in {
		c := ss[i][len(ss[i])-1]
		for r := 0; r < rows; r++ {
			copy(o[r*total+at:r*total+at+c], x[r*c:(r+1)*c])
		}
		at += c
	}
	return t, nil
}
func (op concatOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	total, at := output.Shape()[output.Dims()-1], 0
	var ops []opOn
	for _, x := range in {
		s := x.Shape()
		c := s[len(s)-1]
		ops = append(ops, opOn{sliceOp{newBase(fmt.Sprintf("ConcatGrad%v[%d:%d]", s, at, at+c), []int{len(s), len(s)}), at, total, s.Clone()}, G.Nodes{grad}})
		at += c
	}
	return applyAll(ops...)
}

// sliceOp: the channels [from, from+shape's last) of an input whose last
// axis has total channels.
type sliceOp struct {
	base
	from, total int
	shape       tensor.Shape
}

func (op sliceOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.shape.Clone(), nil }
func (op sliceOp) Do(v ...G.Value) (G.Value, error)               { return op.UsePreallocDo(nil, v...) }
func (op sliceOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	dy, _, err := f32(v[0], "output gradient")
	if err != nil {
		return nil, err
	}
	t, o := op.out(prealloc, op.shape)
	c := op.shape[len(op.shape)-1]
	for r := 0; r*c < len(o); r++ {
		copy(o[r*c:(r+1)*c], dy[r*op.total+op.from:])
	}
	return t, nil
}

// Depthwise applies a Keras DepthwiseConv2D without its bias' absence
// mattering: x (N,H,W,C), k (KH,KW,C,M), b (C·M); output channel c·M+m is
// channel c convolved with k[:,:,c,m]. spec's padding and strides apply;
// its ReLU and Pool must be unset.
func Depthwise(x, k, b *G.Node, spec ConvSpec) (*G.Node, error) {
	if spec.ReLU || spec.Pool {
		return nil, fmt.Errorf("nn: depthwise convolution fuses nothing")
	}
	return G.ApplyOp(depthwiseOp{newBase(fmt.Sprintf("Depthwise%+v", spec), []int{4, 4, 1, 4}), spec}, x, k, b)
}

type depthwiseOp struct {
	base
	spec ConvSpec
}

func (op depthwiseOp) DiffWRT(int) []bool { return []bool{true, true, true} }

// geometry returns the padded input size and the output size.
func (op depthwiseOp) geometry(x, k tensor.Shape) (ph, pw, oh, ow int, err error) {
	if len(x) != 4 || len(k) != 4 || x[3] != k[2] {
		return 0, 0, 0, 0, fmt.Errorf("depthwise: input %v and kernel %v do not fit", x, k)
	}
	sp := op.spec
	ph, pw = x[1]+sp.PadT+sp.PadB, x[2]+sp.PadL+sp.PadR
	if ph < k[0] || pw < k[1] {
		return 0, 0, 0, 0, fmt.Errorf("depthwise: input %v smaller than kernel %v", x, k)
	}
	return ph, pw, kernels.OutSize(ph, k[0], sp.SH), kernels.OutSize(pw, k[1], sp.SW), nil
}

func (op depthwiseOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, ok1 := ds[0].(tensor.Shape)
	k, ok2 := ds[1].(tensor.Shape)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("depthwise: expected shapes")
	}
	_, _, oh, ow, err := op.geometry(x, k)
	if err != nil {
		return nil, err
	}
	return tensor.Shape{x[0], oh, ow, k[2] * k[3]}, nil
}

// each calls f for every output position of image i and every kernel
// cell, with the flat padded-input and output offsets (times channels).
func (op depthwiseOp) each(ph, pw, oh, ow int, k tensor.Shape, f func(in, out, cell int)) {
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			for ky := 0; ky < k[0]; ky++ {
				for kx := 0; kx < k[1]; kx++ {
					f((oy*op.spec.SH+ky)*pw+ox*op.spec.SW+kx, oy*ow+ox, ky*k[1]+kx)
				}
			}
		}
	}
}

func (op depthwiseOp) Do(v ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, v...) }
func (op depthwiseOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	in, s, err := inputs(v, "depthwise input", "depthwise kernel", "depthwise bias")
	if err != nil {
		return nil, err
	}
	x, k, b, xs, ks := in[0], in[1], in[2], s[0], s[1]
	ph, pw, oh, ow, err := op.geometry(xs, ks)
	if err != nil {
		return nil, err
	}
	c, m := ks[2], ks[3]
	t, o := op.out(prealloc, tensor.Shape{xs[0], oh, ow, c * m})
	px, _, _ := op.spec.pad(x, xs)
	op.split(xs[0], 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			img := px[i*ph*pw*c : (i+1)*ph*pw*c]
			dst := o[i*oh*ow*c*m : (i+1)*oh*ow*c*m]
			for p := 0; p < oh*ow; p++ {
				copy(dst[p*c*m:(p+1)*c*m], b)
			}
			op.each(ph, pw, oh, ow, ks, func(ip, opos, cell int) {
				src, d, kk := img[ip*c:(ip+1)*c], dst[opos*c*m:(opos+1)*c*m], k[cell*c*m:(cell+1)*c*m]
				for j := range d {
					d[j] += src[j/m] * kk[j]
				}
			})
		}
	})
	return t, nil
}
func (op depthwiseOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	xs, ks := in[0].Shape(), in[1].Shape()
	gradOp := func(input bool) depthwiseGradOp {
		name := fmt.Sprintf("DepthwiseGrad{input:%v}%+v%v%v", input, op.spec, xs, ks)
		return depthwiseGradOp{newBase(name, []int{4, 4, 4}), op, input, xs.Clone(), ks.Clone()}
	}
	return applyAll(
		opOn{gradOp(true), G.Nodes{grad, in[1]}},
		opOn{gradOp(false), G.Nodes{in[0], grad}},
		opOn{newBiasGradOp(4), G.Nodes{grad}},
	)
}

// depthwiseGradOp: (dy, k) -> dx when input, else (x, dy) -> dk.
type depthwiseGradOp struct {
	base
	op     depthwiseOp
	input  bool
	xs, ks tensor.Shape
}

func (g depthwiseGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	if g.input {
		return g.xs.Clone(), nil
	}
	return g.ks.Clone(), nil
}
func (g depthwiseGradOp) Do(v ...G.Value) (G.Value, error) { return g.UsePreallocDo(nil, v...) }
func (g depthwiseGradOp) UsePreallocDo(prealloc G.Value, v ...G.Value) (G.Value, error) {
	a, _, err := f32(v[0], "depthwise gradient input")
	if err != nil {
		return nil, err
	}
	b, _, err := f32(v[1], "depthwise gradient input")
	if err != nil {
		return nil, err
	}
	xs, ks := g.xs, g.ks
	ph, pw, oh, ow, err := g.op.geometry(xs, ks)
	if err != nil {
		return nil, err
	}
	n, c, m := xs[0], ks[2], ks[3]
	if g.input {
		dy, k := a, b
		pdx := make([]float32, n*ph*pw*c)
		for i := 0; i < n; i++ {
			img := pdx[i*ph*pw*c : (i+1)*ph*pw*c]
			gy := dy[i*oh*ow*c*m : (i+1)*oh*ow*c*m]
			g.op.each(ph, pw, oh, ow, ks, func(ip, opos, cell int) {
				d, gg, kk := img[ip*c:(ip+1)*c], gy[opos*c*m:(opos+1)*c*m], k[cell*c*m:(cell+1)*c*m]
				for j := range gg {
					d[j/m] += gg[j] * kk[j]
				}
			})
		}
		t, dx := g.out(prealloc, xs)
		padSpec{g.op.spec.PadT, g.op.spec.PadB, g.op.spec.PadL, g.op.spec.PadR}.copy(dx, pdx, xs, true)
		return t, nil
	}
	x, dy := a, b
	px, _, _ := g.op.spec.pad(x, xs)
	t, dk := g.out(prealloc, ks)
	zero(dk)
	for i := 0; i < n; i++ {
		img := px[i*ph*pw*c : (i+1)*ph*pw*c]
		gy := dy[i*oh*ow*c*m : (i+1)*oh*ow*c*m]
		g.op.each(ph, pw, oh, ow, ks, func(ip, opos, cell int) {
			src, gg, d := img[ip*c:(ip+1)*c], gy[opos*c*m:(opos+1)*c*m], dk[cell*c*m:(cell+1)*c*m]
			for j := range gg {
				d[j] += src[j/m] * gg[j]
			}
		})
	}
	return t, nil
}
