// Package oracle is a deliberately plain forward pass of a model: float64
// loops written straight from Keras's definitions, sharing no code with the
// kernels or the gorgonia graph. Tests check the fast paths against it.
package oracle

import (
	"math"

	"badprune/internal/model"
)

// Options change the oracle's semantics, to show that a test can tell.
type Options struct {
	// FlattenNCHW flattens images channel-major, as a Theano/PyTorch port
	// would, instead of Keras's NHWC order.
	FlattenNCHW bool
	// Mask zeroes these output channels of the named layer after its
	// activation (what pruning the layer's kernel slice and bias does).
	MaskLayer    string
	MaskChannels []int
}

// Forward returns every layer's output for one NHWC image; the last layer's
// entry is the logits (before any softmax).
func Forward(m *model.Model, img []float32, opt Options) map[string][]float64 {
	out := map[string][]float64{}
	for _, l := range m.Layers {
		var in [][]float64
		var shapes [][]int
		for _, name := range l.Inputs {
			in = append(in, out[name])
			shapes = append(shapes, m.Layer(name).Shape)
		}
		var y []float64
		switch l.Kind {
		case model.Input:
			y = make([]float64, len(img))
			for i, v := range img {
				y[i] = float64(v)
			}
		case model.Conv2D:
			y = conv(in[0], shapes[0], l)
		case model.DepthwiseConv2D:
			y = depthwise(in[0], shapes[0], l, l.Kernel, l.KernelShape, l.Bias)
		case model.SeparableConv2D:
			d := depthwise(in[0], shapes[0], l, l.Depthwise, l.DepthwiseShape, nil)
			p := *l
			p.KH, p.KW, p.SH, p.SW, p.Same = 1, 1, 1, 1, false
			y = conv(d, []int{l.Shape[0], l.Shape[1], l.DepthwiseShape[2] * l.DepthwiseShape[3]}, &p)
		case model.MaxPool, model.AvgPool:
			y = pool(in[0], shapes[0], l)
		case model.GlobalAvgPool, model.GlobalMaxPool:
			y = globalPool(in[0], shapes[0], l.Kind == model.GlobalMaxPool)
		case model.ZeroPad:
			y = zeroPad(in[0], shapes[0], l)
		case model.BatchNorm:
			y = batchNorm(in[0], l)
		case model.Rescaling:
			y = make([]float64, len(in[0]))
			for i, v := range in[0] {
				y[i] = v*float64(l.Scale[i%l.Channels()%len(l.Scale)]) + float64(l.Offset[i%l.Channels()%len(l.Offset)])
			}
		case model.Concat:
			y = concat(in, shapes)
		case model.Activation, model.Dropout, model.Identity, model.ReLU, model.LeakyReLU, model.ELU, model.Softmax:
			y = append([]float64(nil), in[0]...)
		case model.Flatten:
			y = append([]float64(nil), in[0]...)
			if opt.FlattenNCHW && len(shapes[0]) == 3 {
				h, w, c := shapes[0][0], shapes[0][1], shapes[0][2]
				for ch := 0; ch < c; ch++ {
					for p := 0; p < h*w; p++ {
						y[ch*h*w+p] = in[0][p*c+ch]
					}
				}
			}
		case model.Dense:
			y = dense(in[0], l)
		case model.Add:
			y = make([]float64, len(in[0]))
			for _, v := range in {
				for i := range y {
					y[i] += v[i]
				}
			}
		}
		if act := m.Applied(l); act != "linear" {
			for i := range y {
				y[i] = activate(act, l, y[i])
			}
		}
		if l.Name == opt.MaskLayer {
			c := l.Channels()
			for _, ch := range opt.MaskChannels {
				for i := ch; i < len(y); i += c {
					y[i] = 0
				}
			}
		}
		out[l.Name] = y
	}
	return out
}

// Logits is the model's output for one image.
func Logits(m *model.Model, img []float32, opt Options) []float64 {
	return Forward(m, img, opt)[m.Output.Name]
}

// Argmax is the index of the first largest value.
func Argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// samePad is TensorFlow's split of "same" padding: the extra cell goes last.
func samePad(in, k, s int) (int, int) {
	o := (in + s - 1) / s
	p := (o-1)*s + k - in
	if p < 0 {
		p = 0
	}
	return p / 2, o
}

// activate is Keras's activation act (keras.activations) of x, with l's
// parameters.
func activate(act string, l *model.Layer, x float64) float64 {
	sigmoid := 1 / (1 + math.Exp(-x))
	switch act {
	case "relu":
		// backend relu(x, negative_slope, max_value, threshold)
		y := 0.0
		if x > l.Threshold {
			y = x
		}
		if l.MaxValue > 0 {
			y = math.Min(math.Max(y, 0), l.MaxValue)
		}
		return y - l.Alpha*math.Max(l.Threshold-x, 0)
	case "relu6":
		return math.Min(math.Max(x, 0), 6)
	case "leaky_relu":
		if x < 0 {
			return l.Alpha * x
		}
		return x
	case "elu":
		if x > 0 {
			return x
		}
		return l.Alpha * (math.Exp(x) - 1)
	case "selu":
		const alpha, scale = 1.67326324, 1.05070098
		if x > 0 {
			return scale * x
		}
		return scale * alpha * (math.Exp(x) - 1)
	case "sigmoid":
		return sigmoid
	case "tanh":
		return math.Tanh(x)
	case "swish", "silu":
		return x * sigmoid
	case "softplus":
		return math.Log(1 + math.Exp(x))
	case "softsign":
		return x / (1 + math.Abs(x))
	case "gelu":
		return 0.5 * x * (1 + math.Erf(x/math.Sqrt2))
	}
	panic("oracle: activation " + act)
}

// batchNorm is gamma·(x - mean)/sqrt(variance + epsilon) + beta per channel.
func batchNorm(x []float64, l *model.Layer) []float64 {
	gamma, beta, mean, variance := l.Norm()
	c := len(variance)
	y := make([]float64, len(x))
	for i, v := range x {
		ch := i % c
		y[i] = (v - float64(mean[ch])) / math.Sqrt(float64(variance[ch])+l.Eps)
		if gamma != nil {
			y[i] *= float64(gamma[ch])
		}
		if beta != nil {
			y[i] += float64(beta[ch])
		}
	}
	return y
}

// depthwise convolves each input channel c with kernel k[:, :, c, m] into
// output channel c·M+m (k of shape ks = (KH, KW, C, M)), plus bias.
func depthwise(x []float64, s []int, l *model.Layer, k []float32, ks []int, bias []float32) []float64 {
	h, w, c := s[0], s[1], s[2]
	kh, kw, dm := ks[0], ks[1], ks[3]
	oh, ow := l.Shape[0], l.Shape[1]
	pt, pl := 0, 0
	if l.Same {
		pt, _ = samePad(h, kh, l.SH)
		pl, _ = samePad(w, kw, l.SW)
	}
	y := make([]float64, oh*ow*c*dm)
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			for ci := 0; ci < c; ci++ {
				for m := 0; m < dm; m++ {
					o := ci*dm + m
					sum := 0.0
					if bias != nil {
						sum = float64(bias[o])
					}
					for ky := 0; ky < kh; ky++ {
						for kx := 0; kx < kw; kx++ {
							iy, ix := oy*l.SH+ky-pt, ox*l.SW+kx-pl
							if iy >= 0 && iy < h && ix >= 0 && ix < w {
								sum += x[(iy*w+ix)*c+ci] * float64(k[((ky*kw+kx)*c+ci)*dm+m])
							}
						}
					}
					y[(oy*ow+ox)*c*dm+o] = sum
				}
			}
		}
	}
	return y
}

func globalPool(x []float64, s []int, max bool) []float64 {
	hw, c := s[0]*s[1], s[2]
	y := make([]float64, c)
	for ch := 0; ch < c; ch++ {
		acc := 0.0
		if max {
			acc = math.Inf(-1)
		}
		for p := 0; p < hw; p++ {
			if max {
				acc = math.Max(acc, x[p*c+ch])
			} else {
				acc += x[p*c+ch]
			}
		}
		if !max {
			acc /= float64(hw)
		}
		y[ch] = acc
	}
	return y
}

func zeroPad(x []float64, s []int, l *model.Layer) []float64 {
	h, w, c := s[0], s[1], s[2]
	ow := l.Shape[1]
	y := make([]float64, l.Size())
	for iy := 0; iy < h; iy++ {
		for ix := 0; ix < w; ix++ {
			for ch := 0; ch < c; ch++ {
				y[((iy+l.Pad[0])*ow+ix+l.Pad[2])*c+ch] = x[(iy*w+ix)*c+ch]
			}
		}
	}
	return y
}

// concat joins its inputs on the last axis.
func concat(in [][]float64, shapes [][]int) []float64 {
	var y []float64
	rows := len(in[0]) / shapes[0][len(shapes[0])-1]
	for r := 0; r < rows; r++ {
		for i, x := range in {
			c := shapes[i][len(shapes[i])-1]
			y = append(y, x[r*c:(r+1)*c]...)
		}
	}
	return y
}

func conv(x []float64, s []int, l *model.Layer) []float64 {
	h, w, c := s[0], s[1], s[2]
	kh, kw, oc := l.KernelShape[0], l.KernelShape[1], l.KernelShape[3]
	oh, ow := l.Shape[0], l.Shape[1]
	pt, pl := 0, 0
	if l.Same {
		pt, _ = samePad(h, kh, l.SH)
		pl, _ = samePad(w, kw, l.SW)
	}
	y := make([]float64, oh*ow*oc)
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			for o := 0; o < oc; o++ {
				sum := 0.0
				if l.Bias != nil {
					sum = float64(l.Bias[o])
				}
				for ky := 0; ky < kh; ky++ {
					for kx := 0; kx < kw; kx++ {
						iy, ix := oy*l.SH+ky-pt, ox*l.SW+kx-pl
						if iy < 0 || iy >= h || ix < 0 || ix >= w {
							continue
						}
						for ci := 0; ci < c; ci++ {
							sum += x[(iy*w+ix)*c+ci] * float64(l.Kernel[((ky*kw+kx)*c+ci)*oc+o])
						}
					}
				}
				y[(oy*ow+ox)*oc+o] = sum
			}
		}
	}
	return y
}

func pool(x []float64, s []int, l *model.Layer) []float64 {
	h, w, c := s[0], s[1], s[2]
	oh, ow := l.Shape[0], l.Shape[1]
	pt, pl := 0, 0
	if l.Same {
		pt, _ = samePad(h, l.KH, l.SH)
		pl, _ = samePad(w, l.KW, l.SW)
	}
	y := make([]float64, oh*ow*c)
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			for ch := 0; ch < c; ch++ {
				m, sum, n := math.Inf(-1), 0.0, 0
				for py := 0; py < l.KH; py++ {
					for px := 0; px < l.KW; px++ {
						iy, ix := oy*l.SH+py-pt, ox*l.SW+px-pl
						if iy < 0 || iy >= h || ix < 0 || ix >= w {
							continue
						}
						m = math.Max(m, x[(iy*w+ix)*c+ch])
						sum += x[(iy*w+ix)*c+ch]
						n++
					}
				}
				if l.Kind == model.AvgPool {
					m = sum / float64(n) // padding is not counted
				}
				y[(oy*ow+ox)*c+ch] = m
			}
		}
	}
	return y
}

func dense(x []float64, l *model.Layer) []float64 {
	in, units := l.KernelShape[0], l.KernelShape[1]
	y := make([]float64, units)
	for u := 0; u < units; u++ {
		sum := 0.0
		if l.Bias != nil {
			sum = float64(l.Bias[u])
		}
		for i := 0; i < in; i++ {
			sum += x[i] * float64(l.Kernel[i*units+u])
		}
		y[u] = sum
	}
	return y
}
