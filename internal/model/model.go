// Package model reads Keras networks (Keras 2 HDF5 full-model files with a
// model_config, weights-only files of the lab's DeepID, Keras 3 .keras
// archives and Keras-3-written HDF5, told apart by content), builds them as
// gorgonia graphs in NHWC layout, and writes copies of a model file with
// chosen weights replaced and every other byte kept.
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
)

// Layer is one Keras layer with its weights and output shape.
type Layer struct {
	Name   string
	Kind   Kind
	Inputs []string // names of the layers feeding this one, in order

	// Act is the activation of Conv2D, Dense and Activation layers:
	// "relu", "linear" or (for the last layer only) "softmax".
	Act string

	// Window and strides of Conv2D (kernel) and MaxPooling2D (pool).
	KH, KW, SH, SW int
	Same           bool // "same" padding, else "valid"

	// Weights of Conv2D (HWIO kernel) and Dense ([in][out] kernel).
	Kernel      []float32
	KernelShape []int
	Bias        []float32 // nil when the layer has no bias
	// Dataset paths of the weights in the model file.
	KernelPath, BiasPath string

	// Shape is the output shape without the batch axis: (H, W, C) for
	// images, (D) for vectors.
	Shape []int
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

// Clone returns a copy of m whose weights can be changed without touching m.
func (m *Model) Clone() *Model {
	c := *m
	c.Layers = make([]*Layer, len(m.Layers))
	for i, l := range m.Layers {
		nl := *l
		nl.Inputs = slices.Clone(l.Inputs)
		nl.Kernel = slices.Clone(l.Kernel)
		nl.KernelShape = slices.Clone(l.KernelShape)
		nl.Bias = slices.Clone(l.Bias)
		nl.Shape = slices.Clone(l.Shape)
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
// channels of a Conv2D or Dense layer.
func (m *Model) PruneChannels(layer string, channels []int) error {
	l := m.Layer(layer)
	if l == nil {
		return fmt.Errorf("no layer %q", layer)
	}
	if l.Kind != Conv2D && l.Kind != Dense {
		return fmt.Errorf("layer %q is a %s, not a Conv2D or Dense layer", layer, l.Kind)
	}
	oc := l.KernelShape[len(l.KernelShape)-1]
	for _, c := range channels {
		if c < 0 || c >= oc {
			return fmt.Errorf("layer %q has no channel %d", layer, c)
		}
		for i := c; i < len(l.Kernel); i += oc {
			l.Kernel[i] = 0
		}
		if l.Bias != nil {
			l.Bias[c] = 0
		}
	}
	return nil
}

// ZeroChannels lists the output channels of a Conv2D or Dense layer whose
// kernel slice and bias are all zero: the channels pruning removed.
func (l *Layer) ZeroChannels() []int {
	if l.Kind != Conv2D && l.Kind != Dense {
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
