package onnxmodel

import (
	"slices"

	"badprune/internal/model"
	pb "badprune/internal/third_party/onnxpb"
)

// win is a sliding window over an image as a node gives it.
type win struct {
	kh, kw, sh, sw int
	pads           [4]int // top, left, bottom, right: ONNX's order
	ceil           bool
}

// placement is where the network's layers put a window: TensorFlow's
// "valid" or "same", or "valid" after zero padding.
type placement struct {
	same   bool
	pad    bool
	zero   [4]int // ZeroPadding2D's top, bottom, left, right
	oh, ow int
	pads   [4]int // the node's padding, ONNX's order, auto_pad applied
}

// window reads the window attributes every windowed op shares. kernel is
// the conv weight's (height, width), nil for pooling.
func (c *converter) window(n *pb.NodeProto, a attrs, kernel []int) (win, error) {
	var w win
	ks := a.ints("kernel_shape")
	switch {
	case ks == nil && kernel != nil:
		ks = []int64{int64(kernel[0]), int64(kernel[1])}
	case len(ks) != 2:
		return w, c.errorf(n, "kernel_shape %v: only 2-D windows are supported", ks)
	case kernel != nil && (ks[0] != int64(kernel[0]) || ks[1] != int64(kernel[1])):
		return w, c.errorf(n, "kernel_shape %v does not fit the weight's %v", ks, kernel)
	}
	st := a.ints("strides")
	if st == nil {
		st = []int64{1, 1}
	}
	if len(st) != 2 || ks[0] < 1 || ks[1] < 1 || ks[0] > 64 || ks[1] > 64 || st[0] < 1 || st[1] < 1 || st[0] > 64 || st[1] > 64 {
		return w, c.errorf(n, "kernel_shape %v, strides %v: not supported", ks, st)
	}
	for _, d := range a.ints("dilations") {
		if d != 1 {
			return w, c.errorf(n, "dilations %v: not supported (1 only)", a.ints("dilations"))
		}
	}
	w = win{kh: int(ks[0]), kw: int(ks[1]), sh: int(st[0]), sw: int(st[1]), ceil: a.int("ceil_mode", 0) != 0}
	switch ap := a.str("auto_pad", "NOTSET"); ap {
	case "NOTSET", "":
		p := a.ints("pads")
		if p != nil && len(p) != 4 {
			return w, c.errorf(n, "pads %v: want 4 numbers", p)
		}
		for k, v := range p {
			if v < 0 || v > 64 {
				return w, c.errorf(n, "pads %v: not supported", p)
			}
			w.pads[k] = int(v)
		}
	case "VALID", "SAME_UPPER", "SAME_LOWER":
		// place sets the "same" pads, which depend on the input's size.
	default:
		return w, c.errorf(n, "auto_pad %q: not supported", ap)
	}
	return w, nil
}

// place fits w over an h x w input the way the network can compute it.
func (c *converter) place(n *pb.NodeProto, a attrs, w win, h, wd int) (placement, error) {
	var p placement
	if ap := a.str("auto_pad", "NOTSET"); ap == "SAME_UPPER" || ap == "SAME_LOWER" {
		for k, d := range [][3]int{{h, w.kh, w.sh}, {wd, w.kw, w.sw}} {
			o := (d[0] + d[2] - 1) / d[2]
			total := max((o-1)*d[2]+d[1]-d[0], 0)
			begin := total / 2
			if ap == "SAME_LOWER" {
				begin = total - total/2
			}
			w.pads[k], w.pads[k+2] = begin, total-begin
		}
	}
	type axis struct{ in, k, s, b, e, out int }
	var ax [2]axis
	for k, d := range [][3]int{{h, w.kh, w.sh}, {wd, w.kw, w.sw}} {
		x := axis{in: d[0], k: d[1], s: d[2], b: w.pads[k], e: w.pads[k+2]}
		span := x.in + x.b + x.e - x.k
		if span < 0 {
			return p, c.errorf(n, "window %dx%d does not fit the padded %dx%d input", w.kh, w.kw, h, wd)
		}
		x.out = span/x.s + 1
		if w.ceil {
			x.out = (span+x.s-1)/x.s + 1
			if (x.out-1)*x.s >= x.in+x.b {
				return p, c.errorf(n, "ceil_mode with a last window starting in the padding: not supported")
			}
		}
		ax[k] = x
	}
	p.oh, p.ow, p.pads = ax[0].out, ax[1].out, w.pads
	valid, same := true, true
	for _, x := range ax {
		valid = valid && x.b == 0 && x.in >= x.k && x.out == (x.in-x.k)/x.s+1
		tfOut := (x.in + x.s - 1) / x.s
		same = same && x.out == tfOut && x.b == max((tfOut-1)*x.s+x.k-x.in, 0)/2
	}
	switch {
	case valid:
	case same:
		p.same = true
	default:
		p.pad = true
		for k, x := range ax {
			e := max((x.out-1)*x.s+x.k-x.in-x.b, 0)
			p.zero[2*k], p.zero[2*k+1] = x.b, e
		}
	}
	return p, nil
}

// zeroPad puts a ZeroPadding2D layer before a windowed node's layer.
func (c *converter) zeroPad(n *pb.NodeProto, x *value, z [4]int) (*value, error) {
	h, w, ch := x.hwc()
	if (h+z[0]+z[1])*(w+z[2]+z[3])*ch > maxValues {
		return nil, c.errorf(n, "pads %v: the padded input is too large", z)
	}
	l := &model.Layer{Kind: model.ZeroPad, Pad: z, Inputs: []string{x.layer.Name}}
	l.Name = c.name(nodeName(n) + "_pad")
	c.layers = append(c.layers, l)
	c.refs[l] = 1
	return &value{layer: l, dims: []int{ch, h + z[0] + z[1], w + z[2] + z[3]}, axes: nchw, nonneg: x.nonneg}, nil
}

// nodeName names a node in layer names: its name, else its output.
func nodeName(n *pb.NodeProto) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	return n.GetOutput()[0]
}

// conv is a Conv: Conv2D, or DepthwiseConv2D for one group per input
// channel, after a ZeroPadding2D when PyTorch pads where TensorFlow
// would not.
func (c *converter) conv(n *pb.NodeProto) error {
	x, err := c.img(n, 0)
	if err != nil {
		return err
	}
	wt, err := c.param(n, 1, "weight")
	if err != nil {
		return err
	}
	if len(wt.dims) != 4 {
		return c.errorf(n, "weight of shape %v: only 2-D convolutions are supported", wt.dims)
	}
	o, ipg, kh, kw := wt.dims[0], wt.dims[1], wt.dims[2], wt.dims[3]
	h, w, ch := x.hwc()
	a := attrsOf(n)
	kind := model.Conv2D
	switch g := a.int("group", 1); {
	case g == 1 && ipg == ch:
	case g > 1 && g == int64(ch) && ipg == 1 && o%ch == 0:
		kind = model.DepthwiseConv2D
	default:
		return c.errorf(n, "group %d with a weight of shape %v for %d input channels: only plain (group 1) and depthwise convolutions are supported", g, wt.dims, ch)
	}
	wn, err := c.window(n, a, []int{kh, kw})
	if err != nil {
		return err
	}
	p, err := c.place(n, a, wn, h, w)
	if err != nil {
		return err
	}
	in := x
	if p.pad {
		if in, err = c.zeroPad(n, x, p.zero); err != nil {
			return err
		}
	}
	l := &model.Layer{Kind: kind, KH: kh, KW: kw, SH: wn.sh, SW: wn.sw, Same: p.same,
		Kernel: oihwToHWIO(wt.f, o, ipg, kh, kw), KernelShape: []int{kh, kw, ipg, o}}
	if kind == model.DepthwiseConv2D {
		l.DepthMul = o / ch
		l.KernelShape = []int{kh, kw, ch, o / ch}
	}
	var b *tensor
	if v, _ := c.arg(n, 2); v != nil {
		if b, err = c.param(n, 2, "bias", o); err != nil {
			return err
		}
		l.Bias = slices.Clone(b.f)
	}
	if err := c.add(n, l, wt.name, &value{dims: []int{o, p.oh, p.ow}, axes: nchw}, in); err != nil {
		return err
	}
	c.weight(l, kernel, wt, convOIHW, nil, n, 1)
	if b != nil {
		c.weight(l, bias, b, plain, nil, n, 2)
	}
	return nil
}

// oihwToHWIO reorders a PyTorch conv weight (out, in, h, w) into a Keras
// kernel (h, w, in, out).
func oihwToHWIO(src []float32, o, i, kh, kw int) []float32 {
	return reorderConv(src, o, i, kh, kw, false)
}

// hwioToOIHW is oihwToHWIO's inverse.
func hwioToOIHW(src []float32, o, i, kh, kw int) []float32 {
	return reorderConv(src, o, i, kh, kw, true)
}

// reorderConv moves a conv weight of o outputs, i inputs and a kh x kw
// window between PyTorch's (out, in, h, w) layout and Keras's (h, w, in,
// out): to Keras's, or back to PyTorch's when toOIHW.
func reorderConv(src []float32, o, i, kh, kw int, toOIHW bool) []float32 {
	dst := make([]float32, len(src))
	for oc := range o {
		for ic := range i {
			for y := range kh {
				for x := range kw {
					hwio, oihw := ((y*kw+x)*i+ic)*o+oc, ((oc*i+ic)*kh+y)*kw+x
					if toOIHW {
						dst[oihw] = src[hwio]
					} else {
						dst[hwio] = src[oihw]
					}
				}
			}
		}
	}
	return dst
}

func (c *converter) maxPool(n *pb.NodeProto) error { return c.pool(n, model.MaxPool) }
func (c *converter) avgPool(n *pb.NodeProto) error { return c.pool(n, model.AvgPool) }

// pool is a MaxPool or AveragePool: MaxPooling2D or AveragePooling2D,
// after a ZeroPadding2D when that computes the same.
func (c *converter) pool(n *pb.NodeProto, kind model.Kind) error {
	x, err := c.img(n, 0)
	if err != nil {
		return err
	}
	a := attrsOf(n)
	wn, err := c.window(n, a, nil)
	if err != nil {
		return err
	}
	h, w, ch := x.hwc()
	p, err := c.place(n, a, wn, h, w)
	if err != nil {
		return err
	}
	countPad := kind == model.AvgPool && a.int("count_include_pad", 0) != 0
	if countPad && p.pads != [4]int{} {
		// The padding counts in the average: zeros the network pads with,
		// then a valid window.
		z := [4]int{p.pads[0], p.pads[2], p.pads[1], p.pads[3]}
		if (h+z[0]+z[1]-wn.kh)/wn.sh+1 != p.oh || (w+z[2]+z[3]-wn.kw)/wn.sw+1 != p.ow {
			return c.errorf(n, "ceil_mode with count_include_pad: not supported")
		}
		p.pad, p.same, p.zero = true, false, z
	}
	in := x
	if p.pad {
		switch {
		case kind == model.MaxPool && !x.nonneg:
			return c.errorf(n, "pads %v on inputs that may be negative: not supported (the network pads with zeros)", p.pads)
		case kind == model.AvgPool && !countPad:
			return c.errorf(n, "pads %v that leave the padding out of the average: only TensorFlow's \"same\" placement is supported", p.pads)
		}
		if in, err = c.zeroPad(n, x, p.zero); err != nil {
			return err
		}
	}
	l := &model.Layer{Kind: kind, KH: wn.kh, KW: wn.kw, SH: wn.sh, SW: wn.sw, Same: p.same}
	return c.add(n, l, "", &value{dims: []int{ch, p.oh, p.ow}, axes: nchw, nonneg: x.nonneg}, in)
}

// globalPool is GlobalAveragePool or GlobalMaxPool.
func (c *converter) globalPool(n *pb.NodeProto) error {
	x, err := c.img(n, 0)
	if err != nil {
		return err
	}
	kind := model.GlobalAvgPool
	if n.GetOpType() == "GlobalMaxPool" {
		kind = model.GlobalMaxPool
	}
	_, _, ch := x.hwc()
	// ONNX keeps (N, C, 1, 1); the network's (C) is the same values, seen
	// as a vector with two axes of size 1.
	return c.add(n, &model.Layer{Kind: kind}, "", &value{dims: []int{ch, 1, 1}, nonneg: x.nonneg}, x)
}

// pad is a Pad of zeros around the height and width of an image: a
// ZeroPadding2D layer.
func (c *converter) pad(n *pb.NodeProto) error {
	x, err := c.img(n, 0)
	if err != nil {
		return err
	}
	a := attrsOf(n)
	if m := a.str("mode", "constant"); m != "constant" {
		return c.errorf(n, "mode %q: only zero padding is supported", m)
	}
	pads := a.ints("pads")
	val := float64(a.float("value", 0))
	if v, _ := c.arg(n, 1); v != nil {
		t, err := c.cst(n, 1)
		if err != nil {
			return err
		}
		if pads, err = t.ints(); err != nil {
			return c.errorf(n, "pads %v", err)
		}
	}
	if v, _ := c.arg(n, 2); v != nil {
		t, err := c.cst(n, 2)
		if err != nil {
			return err
		}
		if t.size() != 1 {
			return c.errorf(n, "constant_value of shape %v", t.dims)
		}
		val = t.values()[0]
	}
	if v, _ := c.arg(n, 3); v != nil {
		return c.errorf(n, "axes: not supported")
	}
	if val != 0 {
		return c.errorf(n, "padding with %v: only zero padding is supported", val)
	}
	if len(pads) != 8 || pads[0] != 0 || pads[1] != 0 || pads[4] != 0 || pads[5] != 0 {
		return c.errorf(n, "pads %v: only padding of the height and width is supported", pads)
	}
	for _, p := range pads {
		if p < 0 || p > 1<<12 {
			return c.errorf(n, "pads %v: not supported", pads)
		}
	}
	h, w, ch := x.hwc()
	z := [4]int{int(pads[2]), int(pads[6]), int(pads[3]), int(pads[7])}
	if z == [4]int{} {
		c.pass(n, x) // PyTorch pads by nothing before some average pools
		return nil
	}
	l := &model.Layer{Kind: model.ZeroPad, Pad: z}
	return c.add(n, l, "", &value{dims: []int{ch, h + z[0] + z[1], w + z[2] + z[3]}, axes: nchw, nonneg: x.nonneg}, x)
}
