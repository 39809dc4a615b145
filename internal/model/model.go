// Package model reads Keras networks (Keras 2 HDF5 full-model files with a
// model_config, weights-only files with their architecture given or of the
// lab's DeepID, Keras 3 .keras archives and Keras-3-written HDF5, told
// apart by content), builds them as gorgonia graphs in NHWC layout, and
// writes copies of a model file with chosen weights replaced and every
// other byte kept.
package model

import (
	"fmt"
	"slices"
)

// Kind is a supported Keras layer class.
type Kind string

const (
	Input      Kind = "InputLayer"
	Conv2D     Kind = "Conv2D"
	MaxPool    Kind = "MaxPooling2D"
	Flatten    Kind = "Flatten"
	Dense      Kind = "Dense"
	Add        Kind = "Add"
	Activation Kind = "Activation"
	Dropout    Kind = "Dropout"

	SeparableConv2D Kind = "SeparableConv2D" // depthwise, then a 1x1 pointwise Conv2D
	DepthwiseConv2D Kind = "DepthwiseConv2D"
	BatchNorm       Kind = "BatchNormalization"
	AvgPool         Kind = "AveragePooling2D"
	GlobalAvgPool   Kind = "GlobalAveragePooling2D"
	GlobalMaxPool   Kind = "GlobalMaxPooling2D"
	ZeroPad         Kind = "ZeroPadding2D"
	Concat          Kind = "Concatenate"
	ReLU            Kind = "ReLU"      // Act "relu" with Alpha, MaxValue, Threshold
	LeakyReLU       Kind = "LeakyReLU" // Act "leaky_relu" with Alpha
	ELU             Kind = "ELU"       // Act "elu" with Alpha
	Softmax         Kind = "Softmax"   // Act "softmax"
	Rescaling       Kind = "Rescaling"
	// Identity is a layer that passes its input through at inference:
	// dropout and noise layers, random augmentation, and a Resizing or
	// RandomCrop to the size the input already has. Layer.Class keeps the
	// Keras class.
	Identity Kind = "Identity"
)

// Layer is one Keras layer with its weights and output shape.
type Layer struct {
	Name   string
	Kind   Kind
	Inputs []string // names of the layers feeding this one, in order

	// Class is the Keras class of an Identity layer ("RandomFlip", ...);
	// other layers' class is their Kind.
	Class string

	// Act is the activation of Conv2D, SeparableConv2D, DepthwiseConv2D,
	// Dense and the activation layers (Activation, ReLU, LeakyReLU, ELU,
	// Softmax): "linear", "relu", "relu6", "leaky_relu", "elu", "selu",
	// "sigmoid", "tanh", "swish", "softplus", "softsign", "gelu" or (for
	// the last layer only) "softmax". Alpha is the negative slope of relu
	// and leaky_relu and the alpha of elu; MaxValue (0: none) and Threshold
	// are relu's (Keras's ReLU layer).
	Act                        string
	Alpha, MaxValue, Threshold float64

	// Window and strides of the convolutions (kernel) and of
	// MaxPooling2D and AveragePooling2D (pool).
	KH, KW, SH, SW int
	Same           bool // "same" padding, else "valid"

	// Weights of Conv2D (HWIO kernel), Dense ([in][out] kernel),
	// DepthwiseConv2D (its (KH, KW, C, DepthMul) depthwise kernel) and
	// SeparableConv2D (its (1, 1, C*DepthMul, Filters) pointwise kernel; the
	// depthwise one is Depthwise). BatchNormalization keeps gamma in Kernel
	// and beta in Bias; see Norm. Kernel and Bias are the weights pruning
	// zeroes and WriteCopy writes.
	Kernel      []float32
	KernelShape []int
	Bias        []float32 // nil when the layer has no bias
	// Dataset paths of the weights in the model file.
	KernelPath, BiasPath string

	// Filters of SeparableConv2D, and the depth_multiplier of
	// DepthwiseConv2D and SeparableConv2D.
	Filters, DepthMul int
	// SeparableConv2D's depthwise kernel, (KH, KW, C, DepthMul).
	Depthwise      []float32
	DepthwiseShape []int

	// BatchNormalization: whether it has gamma (scale) and beta (center),
	// its epsilon and moving statistics (see Norm).
	HasGamma, HasBeta bool
	Eps               float64
	Mean, Var         []float32

	// Axis of BatchNormalization, Concatenate and Softmax as configured,
	// counting the batch axis: -1 or the last, the channels.
	Axis int

	// Rescaling's scale and offset: one value, or one per channel.
	Scale, Offset []float32
	// ZeroPadding2D's padding: top, bottom, left, right.
	Pad [4]int
	// Target is the (height, width) of a Resizing or RandomCrop layer.
	Target []int
	// KeepDims makes a global pooling output (1, 1, C) instead of (C).
	KeepDims bool

	// Shape is the output shape without the batch axis: (H, W, C) for
	// images, (D) for vectors.
	Shape []int

	// Aliases are other names the layer answers to (Model.Resolve), such
	// as the node, output and weight names of an ONNX file.
	Aliases []string
}

// Size is the number of values the layer outputs per sample.
func (l *Layer) Size() int {
	n := 1
	for _, d := range l.Shape {
		n *= d
	}
	return n
}

// Channels is the size of the last axis of the output.
func (l *Layer) Channels() int { return l.Shape[len(l.Shape)-1] }

// Model is a loaded network.
type Model struct {
	Path      string
	FullModel bool     // a Keras full-model file (else weights-only)
	Layers    []*Layer // in topological order, inputs first
	Input     *Layer
	Output    *Layer // its output, before any softmax, is the logits
	Classes   int

	// Source is what the registered format that read the file (Read)
	// keeps to write copies of it, and adapter that format; both nil for
	// Keras files and models made in memory.
	Source  any
	adapter *Format
}

// Layer returns the layer called name, or nil.
func (m *Model) Layer(name string) *Layer {
	for _, l := range m.Layers {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// Consumers returns the layers that take name's output as an input.
func (m *Model) Consumers(name string) []*Layer {
	var out []*Layer
	for _, l := range m.Layers {
		if slices.Contains(l.Inputs, name) {
			out = append(out, l)
		}
	}
	return out
}

// InputShape is the (H, W, C) of one input image.
func (m *Model) InputShape() (h, w, c int) {
	s := m.Input.Shape
	return s[0], s[1], s[2]
}

// LayerNames returns the names of m's layers, in order.
func (m *Model) LayerNames() []string {
	var names []string
	for _, l := range m.Layers {
		names = append(names, l.Name)
	}
	return names
}

// Clone returns a copy of m whose weights can be changed without touching m.
func (m *Model) Clone() *Model { return m.clone(func(*Layer) bool { return true }) }

// PrunedCopy returns a copy of m with the given channels of layer pruned
// (PruneChannels). Only the weights pruning changes are copied; the copy
// shares the others with m, so neither may change them (Clone, then
// PruneChannels, for a copy to train): writing a B' then copies no more
// than it writes.
func (m *Model) PrunedCopy(layer string, channels []int) (*Model, error) {
	changed := m.Pruned(layer)
	c := m.clone(func(l *Layer) bool { return slices.Contains(changed, l.Name) })
	if err := c.PruneChannels(layer, channels); err != nil {
		return nil, err
	}
	return c, nil
}

// clone copies m's layers, and the weights of those deep says.
func (m *Model) clone(deep func(*Layer) bool) *Model {
	c := *m
	c.Layers = make([]*Layer, len(m.Layers))
	for i, l := range m.Layers {
		nl := *l
		nl.Inputs = slices.Clone(l.Inputs)
		nl.KernelShape, nl.Shape = slices.Clone(l.KernelShape), slices.Clone(l.Shape)
		if deep(l) {
			for _, w := range []*[]float32{&nl.Kernel, &nl.Bias, &nl.Depthwise, &nl.Mean, &nl.Var} {
				*w = slices.Clone(*w)
			}
		}
		c.Layers[i] = &nl
		if l == m.Input {
			c.Input = &nl
		}
		if l == m.Output {
			c.Output = &nl
		}
	}
	return &c
}

// PruneChannels zeroes the kernel slices and biases of the given output
// channels of a Conv2D, SeparableConv2D (its pointwise kernel) or Dense
// layer, and the channels' weights in the BatchNormalization layers that
// carry them (PerChannel; Norm says which), so that their output is zero
// wherever the network reads it: m.Pruned(layer) names the layers changed.
func (m *Model) PruneChannels(layer string, channels []int) error {
	l := m.Layer(layer)
	if l == nil {
		return fmt.Errorf("no layer %q", layer)
	}
	if l.Kind != Conv2D && l.Kind != SeparableConv2D && l.Kind != Dense {
		return fmt.Errorf("layer %q is a %s, not a Conv2D, SeparableConv2D or Dense layer", layer, l.KerasClass())
	}
	oc := l.Channels()
	for _, c := range channels {
		if c < 0 || c >= oc {
			return fmt.Errorf("layer %q has no channel %d", layer, c)
		}
	}
	for _, name := range m.Pruned(layer) {
		w := m.Layer(name)
		for _, c := range channels {
			for i := c; i < len(w.Kernel); i += oc {
				w.Kernel[i] = 0
			}
			if w.Bias != nil {
				w.Bias[c] = 0
			}
		}
	}
	return nil
}

// ZeroChannels lists the output channels of a Conv2D, SeparableConv2D or
// Dense layer whose kernel slice and bias are all zero: the channels
// pruning removed.
func (l *Layer) ZeroChannels() []int {
	if l.Kind != Conv2D && l.Kind != SeparableConv2D && l.Kind != Dense {
		return nil
	}
	oc := l.KernelShape[len(l.KernelShape)-1]
	var out []int
	for c := 0; c < oc; c++ {
		zero := l.Bias == nil || l.Bias[c] == 0
		for i := c; zero && i < len(l.Kernel); i += oc {
			zero = l.Kernel[i] == 0
		}
		if zero {
			out = append(out, c)
		}
	}
	return out
}

// New makes a model from layers in topological order, checking them and
// computing their shapes. path names it in messages.
func New(path string, layers []*Layer) (*Model, error) {
	m := &Model{Path: path, Layers: layers}
	if err := m.infer(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.checkWeights(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// DeepID returns the lab's DeepID layers (without weights) for inputs of
// h x w x c; give every Conv2D and Dense layer a Kernel, KernelShape and
// Bias before passing them to New.
func DeepID(h, w, c int) []*Layer {
	l := deepID()
	l[0].Shape = []int{h, w, c}
	return l
}
