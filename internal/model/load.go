package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"gonum.org/v1/hdf5"

	"badprune/internal/h5"
)

// Load reads a Keras 2 HDF5 model. A file with a model_config attribute
// gets the architecture it describes; a weights-only file (root attribute
// layer_names) gets the lab's DeepID architecture with sizes from its
// weights. Errors name the file and what is wrong.
func Load(path string) (*Model, error) {
	var m *Model
	err := h5.Locked(func() (err error) {
		m, err = load(path)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func load(path string) (*Model, error) {
	f, err := h5.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := &Model{Path: path}
	var root *hdf5.CommonFG
	switch {
	case h5.HasAttr(f, "model_config"):
		cfg, err := h5.StringAttr(f, "model_config")
		if err != nil {
			return nil, err
		}
		if m.Layers, err = parseConfig([]byte(cfg)); err != nil {
			return nil, fmt.Errorf("model_config: %w", err)
		}
		if !f.LinkExists("model_weights") {
			return nil, errors.New(`full-model file without a "model_weights" group`)
		}
		g, err := f.OpenGroup("model_weights")
		if err != nil {
			return nil, errors.New(`cannot open the "model_weights" group`)
		}
		defer g.Close()
		root = &g.CommonFG
		m.FullModel = true
	case h5.HasAttr(f, "layer_names"):
		root = &f.CommonFG
		m.Layers = deepID()
	default:
		return nil, errors.New("not a Keras model: neither a model_config nor a layer_names attribute")
	}
	if err := readWeights(m, root); err != nil {
		return nil, err
	}
	if err := m.infer(); err != nil {
		return nil, err
	}
	return m, nil
}

// readWeights loads every Conv2D and Dense layer's kernel and bias, using
// the weight_names attribute of the layer's group.
func readWeights(m *Model, root *hdf5.CommonFG) error {
	prefix := ""
	if m.FullModel {
		prefix = "model_weights/"
	}
	for _, l := range m.Layers {
		if l.Kind != Conv2D && l.Kind != Dense {
			continue
		}
		if !root.LinkExists(l.Name) {
			return fmt.Errorf("layer %q: no weights in the file (group %q missing)", l.Name, prefix+l.Name)
		}
		g, err := root.OpenGroup(l.Name)
		if err != nil {
			return fmt.Errorf("layer %q: cannot open group %q", l.Name, prefix+l.Name)
		}
		names, err := h5.StringsAttr(g, "weight_names")
		if err != nil {
			g.Close()
			return fmt.Errorf("layer %q: %w", l.Name, err)
		}
		var kernelName, biasName string
		for _, n := range names {
			switch {
			case strings.HasSuffix(n, "kernel:0"):
				kernelName = n
			case strings.HasSuffix(n, "bias:0"):
				biasName = n
			}
		}
		if kernelName == "" && len(names) > 0 {
			kernelName = names[0] // Keras writes kernel first
		}
		if biasName == "" && len(names) > 1 {
			biasName = names[1]
		}
		if kernelName == "" {
			g.Close()
			return fmt.Errorf("layer %q: no kernel listed in weight_names", l.Name)
		}
		l.KernelPath = prefix + l.Name + "/" + kernelName
		if l.Kernel, l.KernelShape, err = readArray(g, kernelName); err != nil {
			g.Close()
			return fmt.Errorf("layer %q: weight %q: %w", l.Name, kernelName, err)
		}
		if biasName != "" {
			l.BiasPath = prefix + l.Name + "/" + biasName
			if l.Bias, _, err = readArray(g, biasName); err != nil {
				g.Close()
				return fmt.Errorf("layer %q: weight %q: %w", l.Name, biasName, err)
			}
		}
		g.Close()
	}
	return nil
}

func readArray(g *hdf5.Group, name string) ([]float32, []int, error) {
	if !g.LinkExists(name) {
		return nil, nil, errors.New("dataset missing")
	}
	ds, err := g.OpenDataset(name)
	if err != nil {
		return nil, nil, errors.New("cannot open dataset")
	}
	defer ds.Close()
	t, err := h5.TypeOf(ds)
	if err != nil {
		return nil, nil, err
	}
	if t.Class != h5.Float {
		return nil, nil, fmt.Errorf("stored as %s, want float32 or float64", t)
	}
	dims, err := h5.Dims(ds)
	if err != nil {
		return nil, nil, err
	}
	n := 1
	for _, d := range dims {
		n *= d
	}
	if len(dims) == 0 || n == 0 {
		return nil, nil, fmt.Errorf("empty weight of shape %v", dims)
	}
	v := make([]float32, n)
	off := make([]int, len(dims))
	if err := h5.ReadFloat32(ds, off, dims, v); err != nil {
		return nil, nil, err
	}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, nil, fmt.Errorf("non-finite value at index %d", i)
		}
	}
	return v, dims, nil
}

// deepID is the lab's architecture; sizes come from the weights.
func deepID() []*Layer {
	conv := func(name, in string) *Layer {
		return &Layer{Name: name, Kind: Conv2D, Inputs: []string{in}, Act: "relu", SH: 1, SW: 1}
	}
	pool := func(name, in string) *Layer {
		return &Layer{Name: name, Kind: MaxPool, Inputs: []string{in}, KH: 2, KW: 2, SH: 2, SW: 2}
	}
	return []*Layer{
		{Name: "input", Kind: Input, Shape: []int{55, 47, 3}},
		conv("conv_1", "input"), pool("pool_1", "conv_1"),
		conv("conv_2", "pool_1"), pool("pool_2", "conv_2"),
		conv("conv_3", "pool_2"), pool("pool_3", "conv_3"),
		conv("conv_4", "pool_3"),
		{Name: "flatten_1", Kind: Flatten, Inputs: []string{"pool_3"}},
		{Name: "flatten_2", Kind: Flatten, Inputs: []string{"conv_4"}},
		{Name: "fc_1", Kind: Dense, Inputs: []string{"flatten_1"}, Act: "linear"},
		{Name: "fc_2", Kind: Dense, Inputs: []string{"flatten_2"}, Act: "linear"},
		{Name: "add_1", Kind: Add, Inputs: []string{"fc_1", "fc_2"}},
		{Name: "activation_1", Kind: Activation, Inputs: []string{"add_1"}, Act: "relu"},
		{Name: "output", Kind: Dense, Inputs: []string{"activation_1"}, Act: "softmax"},
	}
}

// infer checks the graph and the weights and computes every layer's
// output shape.
func (m *Model) infer() error {
	seen := map[string]*Layer{}
	for _, l := range m.Layers {
		if seen[l.Name] != nil {
			return fmt.Errorf("layer %q appears twice", l.Name)
		}
		var in []*Layer
		for _, name := range l.Inputs {
			p := seen[name]
			if p == nil {
				return fmt.Errorf("layer %q: input %q is not an earlier layer", l.Name, name)
			}
			in = append(in, p)
		}
		seen[l.Name] = l
		if err := l.inferShape(in); err != nil {
			return fmt.Errorf("layer %q (%s): %w", l.Name, l.Kind, err)
		}
		if l.Kind == Input {
			if m.Input != nil {
				return errors.New("more than one input layer")
			}
			m.Input = l
		}
	}
	if m.Input == nil {
		return errors.New("no input layer")
	}
	if len(m.Input.Shape) != 3 {
		return fmt.Errorf("input shape %v: want height, width, channels", m.Input.Shape)
	}
	last := m.Layers[len(m.Layers)-1]
	for _, l := range m.Layers {
		if l != last && len(m.Consumers(l.Name)) == 0 {
			return fmt.Errorf("layer %q feeds nothing: only single-output models are supported", l.Name)
		}
		if l.Act == "softmax" && l != last {
			return fmt.Errorf("layer %q: softmax is supported only in the last layer", l.Name)
		}
	}
	if len(last.Shape) != 1 {
		return fmt.Errorf("last layer %q outputs shape %v, want class scores", last.Name, last.Shape)
	}
	m.Output = last
	m.Classes = last.Shape[0]
	return nil
}

func (l *Layer) inferShape(in []*Layer) error {
	want := 1
	switch l.Kind {
	case Input:
		want = 0
	case Add:
		want = -1
	}
	if want >= 0 && len(in) != want {
		return fmt.Errorf("has %d inputs, want %d", len(in), want)
	}
	switch l.Kind {
	case Input:
		if len(l.Shape) != 3 || l.Shape[0] < 1 || l.Shape[1] < 1 || l.Shape[2] < 1 {
			return fmt.Errorf("input shape %v: want (height, width, channels)", l.Shape)
		}
	case Conv2D:
		s := in[0].Shape
		if len(s) != 3 {
			return fmt.Errorf("input shape %v is not an image", s)
		}
		ks := l.KernelShape
		if len(ks) != 4 {
			return fmt.Errorf("kernel shape %v, want (height, width, in, out)", ks)
		}
		if ks[2] != s[2] {
			return fmt.Errorf("kernel shape %v does not fit input with %d channels", ks, s[2])
		}
		if l.KH != 0 && (l.KH != ks[0] || l.KW != ks[1]) {
			return fmt.Errorf("kernel shape %v does not fit kernel_size %dx%d", ks, l.KH, l.KW)
		}
		if ks[0] > 64 {
			return fmt.Errorf("kernel height %d is over 64", ks[0])
		}
		l.KH, l.KW = ks[0], ks[1]
		if l.Bias != nil && len(l.Bias) != ks[3] {
			return fmt.Errorf("bias of %d values for %d filters", len(l.Bias), ks[3])
		}
		oh, ow, err := window(s[0], s[1], l.KH, l.KW, l.SH, l.SW, l.Same)
		if err != nil {
			return err
		}
		l.Shape = []int{oh, ow, ks[3]}
	case MaxPool:
		s := in[0].Shape
		if len(s) != 3 {
			return fmt.Errorf("input shape %v is not an image", s)
		}
		oh, ow, err := window(s[0], s[1], l.KH, l.KW, l.SH, l.SW, l.Same)
		if err != nil {
			return err
		}
		l.Shape = []int{oh, ow, s[2]}
	case Flatten:
		l.Shape = []int{in[0].Size()}
	case Dense:
		if len(in[0].Shape) != 1 {
			return fmt.Errorf("input shape %v: Dense needs a flat input (add a Flatten layer)", in[0].Shape)
		}
		ks := l.KernelShape
		if len(ks) != 2 || ks[0] != in[0].Shape[0] {
			return fmt.Errorf("kernel shape %v does not fit an input of %d values", ks, in[0].Shape[0])
		}
		if l.Bias != nil && len(l.Bias) != ks[1] {
			return fmt.Errorf("bias of %d values for %d units", len(l.Bias), ks[1])
		}
		l.Shape = []int{ks[1]}
	case Add:
		if len(in) < 2 {
			return fmt.Errorf("has %d inputs, want at least 2", len(in))
		}
		for _, p := range in[1:] {
			if !equal(p.Shape, in[0].Shape) {
				return fmt.Errorf("inputs of shapes %v and %v", in[0].Shape, p.Shape)
			}
		}
		l.Shape = append([]int(nil), in[0].Shape...)
	case Activation, Dropout:
		l.Shape = append([]int(nil), in[0].Shape...)
	default:
		return fmt.Errorf("unsupported layer type %q", l.Kind)
	}
	for _, d := range l.Shape {
		if d < 1 {
			return fmt.Errorf("output shape %v is empty", l.Shape)
		}
	}
	return nil
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// window is Keras's output size of a sliding window: floor for "valid",
// ceil(in/stride) for "same".
func window(h, w, kh, kw, sh, sw int, same bool) (int, int, error) {
	if kh < 1 || kw < 1 || sh < 1 || sw < 1 {
		return 0, 0, fmt.Errorf("window %dx%d, strides %dx%d", kh, kw, sh, sw)
	}
	if same {
		return (h + sh - 1) / sh, (w + sw - 1) / sw, nil
	}
	if h < kh || w < kw {
		return 0, 0, fmt.Errorf("input %dx%d is smaller than the window %dx%d", h, w, kh, kw)
	}
	return (h-kh)/sh + 1, (w-kw)/sw + 1, nil
}

// SamePad is the zero padding (top, bottom, left, right) TensorFlow uses for
// "same" windows: any odd cell goes to the bottom and right.
func SamePad(h, w, kh, kw, sh, sw int) (t, b, l, r int) {
	oh, ow := (h+sh-1)/sh, (w+sw-1)/sw
	ph := max((oh-1)*sh+kh-h, 0)
	pw := max((ow-1)*sw+kw-w, 0)
	return ph / 2, ph - ph/2, pw / 2, pw - pw/2
}

// Keras's model_config, the parts badprune reads.
type kerasModel struct {
	ClassName string          `json:"class_name"`
	Config    json.RawMessage `json:"config"`
}

type kerasLayer struct {
	ClassName    string          `json:"class_name"`
	Name         string          `json:"name"`
	Config       json.RawMessage `json:"config"`
	InboundNodes json.RawMessage `json:"inbound_nodes"`
}

type layerConfig struct {
	Name            string  `json:"name"`
	BatchInputShape []*int  `json:"batch_input_shape"`
	BatchShape      []*int  `json:"batch_shape"`
	Filters         int     `json:"filters"`
	Units           int     `json:"units"`
	KernelSize      []int   `json:"kernel_size"`
	PoolSize        []int   `json:"pool_size"`
	Strides         []int   `json:"strides"`
	Padding         string  `json:"padding"`
	DataFormat      *string `json:"data_format"`
	DilationRate    []int   `json:"dilation_rate"`
	Activation      string  `json:"activation"`
	UseBias         *bool   `json:"use_bias"`
	Groups          int     `json:"groups"`
}

func parseConfig(raw []byte) ([]*Layer, error) {
	var km kerasModel
	if err := json.Unmarshal(raw, &km); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	var layers []kerasLayer
	sequential := km.ClassName == "Sequential"
	switch km.ClassName {
	case "Model", "Functional", "Sequential":
		var c struct {
			Layers []kerasLayer `json:"layers"`
		}
		if err := json.Unmarshal(km.Config, &c); err != nil || c.Layers == nil {
			// Old Sequential configs are a bare list of layers.
			if err2 := json.Unmarshal(km.Config, &layers); err2 != nil || !sequential {
				return nil, errors.New("no layer list in the config")
			}
		} else {
			layers = c.Layers
		}
	default:
		return nil, fmt.Errorf("unsupported model class %q", km.ClassName)
	}
	if len(layers) == 0 {
		return nil, errors.New("the model has no layers")
	}
	var out []*Layer
	for i, kl := range layers {
		var c layerConfig
		if err := json.Unmarshal(kl.Config, &c); err != nil {
			return nil, fmt.Errorf("layer %d: bad config: %v", i, err)
		}
		name := kl.Name
		if name == "" {
			name = c.Name
		}
		if name == "" {
			return nil, fmt.Errorf("layer %d has no name", i)
		}
		l, err := convertLayer(kl.ClassName, name, &c)
		if err != nil {
			return nil, fmt.Errorf("layer %q: %w", name, err)
		}
		if sequential {
			if i == 0 && l.Kind != Input {
				// The input is implied by the first layer's batch_input_shape.
				in, err := inputFrom(name+"_input", &c)
				if err != nil {
					return nil, fmt.Errorf("layer %q: %w", name, err)
				}
				out = append(out, in)
			}
			if len(out) > 0 {
				l.Inputs = []string{out[len(out)-1].Name}
			}
		} else if l.Kind != Input {
			if l.Inputs, err = inbound(kl.InboundNodes); err != nil {
				return nil, fmt.Errorf("layer %q: %w", name, err)
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// inbound reads Keras 2's inbound_nodes: [[[name, node, tensor, kwargs], ...]].
func inbound(raw json.RawMessage) ([]string, error) {
	var nodes [][][]any
	if err := json.Unmarshal(raw, &nodes); err != nil {
		return nil, errors.New("inbound_nodes not in Keras 2 format")
	}
	if len(nodes) != 1 {
		return nil, fmt.Errorf("called %d times: shared layers are not supported", len(nodes))
	}
	var names []string
	for _, n := range nodes[0] {
		if len(n) < 1 {
			return nil, errors.New("empty inbound node")
		}
		s, ok := n[0].(string)
		if !ok {
			return nil, errors.New("inbound node without a layer name")
		}
		names = append(names, s)
	}
	if len(names) == 0 {
		return nil, errors.New("no inputs")
	}
	return names, nil
}

func inputFrom(name string, c *layerConfig) (*Layer, error) {
	shape := c.BatchInputShape
	if shape == nil {
		shape = c.BatchShape
	}
	if len(shape) != 4 {
		return nil, fmt.Errorf("batch_input_shape %v: want (batch, height, width, channels)", shape)
	}
	l := &Layer{Name: name, Kind: Input}
	for _, d := range shape[1:] {
		if d == nil {
			return nil, errors.New("input size is not fixed")
		}
		l.Shape = append(l.Shape, *d)
	}
	return l, nil
}

func pair(v []int, def int, what string) (int, int, error) {
	switch len(v) {
	case 0:
		return def, def, nil
	case 1:
		return v[0], v[0], nil
	case 2:
		return v[0], v[1], nil
	}
	return 0, 0, fmt.Errorf("%s %v: want two numbers", what, v)
}

func convertLayer(class, name string, c *layerConfig) (*Layer, error) {
	l := &Layer{Name: name, Kind: Kind(class)}
	if c.DataFormat != nil && *c.DataFormat != "channels_last" {
		return nil, fmt.Errorf("data_format %q is not supported (channels_last only)", *c.DataFormat)
	}
	var err error
	switch l.Kind {
	case Input:
		in, err := inputFrom(name, c)
		if err != nil {
			return nil, err
		}
		return in, nil
	case Conv2D:
		if l.KH, l.KW, err = pair(c.KernelSize, 0, "kernel_size"); err != nil {
			return nil, err
		}
		if l.SH, l.SW, err = pair(c.Strides, 1, "strides"); err != nil {
			return nil, err
		}
		if dh, dw, err := pair(c.DilationRate, 1, "dilation_rate"); err != nil || dh != 1 || dw != 1 {
			return nil, fmt.Errorf("dilation_rate %v is not supported", c.DilationRate)
		}
		if c.Groups > 1 {
			return nil, fmt.Errorf("grouped convolution (groups %d) is not supported", c.Groups)
		}
		if l.Act, err = activation(c.Activation, "relu", "linear"); err != nil {
			return nil, err
		}
		l.Same, err = padding(c.Padding)
		return l, err
	case MaxPool:
		if l.KH, l.KW, err = pair(c.PoolSize, 2, "pool_size"); err != nil {
			return nil, err
		}
		if len(c.Strides) == 0 {
			l.SH, l.SW = l.KH, l.KW
		} else if l.SH, l.SW, err = pair(c.Strides, 1, "strides"); err != nil {
			return nil, err
		}
		l.Same, err = padding(c.Padding)
		return l, err
	case Dense:
		l.Act, err = activation(c.Activation, "relu", "linear", "softmax")
		return l, err
	case Activation:
		l.Act, err = activation(c.Activation, "relu", "linear", "softmax")
		return l, err
	case Flatten, Add, Dropout:
		return l, nil
	}
	return nil, fmt.Errorf("unsupported layer type %q (supported: InputLayer, Conv2D, MaxPooling2D, Flatten, Dense, Add, Activation, Dropout)", class)
}

func activation(a string, allowed ...string) (string, error) {
	if a == "" {
		a = "linear"
	}
	for _, ok := range allowed {
		if a == ok {
			return a, nil
		}
	}
	return "", fmt.Errorf("activation %q is not supported here (supported: %s)", a, strings.Join(allowed, ", "))
}

func padding(p string) (bool, error) {
	switch p {
	case "", "valid":
		return false, nil
	case "same":
		return true, nil
	}
	return false, fmt.Errorf("padding %q is not supported", p)
}
