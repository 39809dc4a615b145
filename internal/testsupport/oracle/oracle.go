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
		case model.MaxPool:
			y = pool(in[0], shapes[0], l)
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
		case model.Activation, model.Dropout:
			y = append([]float64(nil), in[0]...)
		}
		if l.Act == "relu" {
			for i := range y {
				y[i] = math.Max(y[i], 0)
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
				m := math.Inf(-1)
				for py := 0; py < l.KH; py++ {
					for px := 0; px < l.KW; px++ {
						iy, ix := oy*l.SH+py-pt, ox*l.SW+px-pl
						if iy < 0 || iy >= h || ix < 0 || ix >= w {
							continue
						}
						m = math.Max(m, x[(iy*w+ix)*c+ch])
					}
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
