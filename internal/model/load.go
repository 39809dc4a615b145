package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/hdf5"

	"badprune/internal/h5"
)

// Load reads a Keras model: an HDF5 file written by Keras 2 or Keras 3
// (a full model with a model_config, or a weights-only file of the lab's
// DeepID, whose architecture then comes with sizes from its weights), or a
// .keras archive written by Keras 3 or tf.keras 2.13+. The format is told
// by the file's content, not its name. Errors name the file and what is
// wrong.
func Load(path string) (*Model, error) {
	kind, err := sniff(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var m *Model
	if kind == zipFile {
		m, err = loadArchive(path)
	} else {
		err = h5.Locked(func() (err error) {
			m, err = load(path)
			return err
		})
	}
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
	var tree *kerasNode
	switch {
	case h5.HasAttr(f, "model_config"):
		cfg, err := h5.StringAttr(f, "model_config")
		if err != nil {
			return nil, err
		}
		if tree, m.Layers, err = parseModel([]byte(cfg)); err != nil {
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
	if err := readWeights(m, root, groupsOf(tree)); err != nil {
		return nil, err
	}
	if err := m.infer(); err != nil {
		return nil, err
	}
	return m, nil
}

// groupsOf maps each layer of a nested model to the top-level layer (the
// nested model) whose HDF5 group holds its weights; Keras saves one group
// per top-level layer.
func groupsOf(tree *kerasNode) map[string]string {
	out := map[string]string{}
	if tree == nil {
		return out
	}
	for _, c := range tree.children {
		if c.layer != nil {
			continue
		}
		c.walk(func(n *kerasNode) {
			if n.layer != nil {
				out[n.layer.Name] = c.name
			}
		})
	}
	return out
}

// readWeights loads every Conv2D and Dense layer's kernel and bias, using
// the weight_names attribute of the layer's group (or, for a layer of a
// nested model, of the nested model's group).
func readWeights(m *Model, root *hdf5.CommonFG, groups map[string]string) error {
	prefix := ""
	if m.FullModel {
		prefix = "model_weights/"
	}
	for _, l := range m.Layers {
		if l.Kind != Conv2D && l.Kind != Dense {
			continue
		}
		group, nested := groups[l.Name]
		if !nested {
			group = l.Name
		}
		if !root.LinkExists(group) {
			return fmt.Errorf("layer %q: no weights in the file (group %q missing)", l.Name, prefix+group)
		}
		g, err := root.OpenGroup(group)
		if err != nil {
			return fmt.Errorf("layer %q: cannot open group %q", l.Name, prefix+group)
		}
		names, err := h5.StringsAttr(g, "weight_names")
		if err != nil {
			g.Close()
			return fmt.Errorf("layer %q: %w", l.Name, err)
		}
		kernelName, biasName := pickWeights(names, l.Name, nested)
		if kernelName == "" {
			g.Close()
			return fmt.Errorf("layer %q: no kernel listed in weight_names of group %q", l.Name, prefix+group)
		}
		l.KernelPath = prefix + group + "/" + kernelName
		if l.Kernel, l.KernelShape, err = readArray(g, kernelName); err != nil {
			g.Close()
			return fmt.Errorf("layer %q: weight %q: %w", l.Name, kernelName, err)
		}
		if biasName != "" {
			l.BiasPath = prefix + group + "/" + biasName
			if l.Bias, _, err = readArray(g, biasName); err != nil {
				g.Close()
				return fmt.Errorf("layer %q: weight %q: %w", l.Name, biasName, err)
			}
		}
		g.Close()
	}
	return nil
}

// pickWeights finds a layer's kernel and bias among the weight_names of
// its group. Keras 2 names them "<layer>/kernel:0", Keras 3 by variable
// path, "<model>/<layer>/kernel". In a nested model's group only names
// whose parent is the layer count; in the layer's own group the first two
// names are kernel and bias whatever they are called, as Keras writes them.
func pickWeights(names []string, layer string, nested bool) (kernel, bias string) {
	for _, n := range names {
		parts := strings.Split(n, "/")
		if nested && (len(parts) < 2 || parts[len(parts)-2] != layer) {
			continue
		}
		switch base := parts[len(parts)-1]; {
		case strings.HasSuffix(base, "kernel:0") || base == "kernel":
			kernel = n
		case strings.HasSuffix(base, "bias:0") || base == "bias":
			bias = n
		}
	}
	if nested {
		return kernel, bias
	}
	if kernel == "" && len(names) > 0 {
		kernel = names[0]
	}
	if bias == "" && len(names) > 1 {
		bias = names[1]
	}
	return kernel, bias
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

// kerasObject is a serialized Keras model or layer, the parts badprune
// reads. Keras 2 and tf.keras write a layer's name both at the top and in
// its config; Keras 3 only in its config.
type kerasObject struct {
	ClassName    string          `json:"class_name"`
	Name         string          `json:"name"`
	Config       json.RawMessage `json:"config"`
	InboundNodes json.RawMessage `json:"inbound_nodes"`
	BuildConfig  *struct {
		InputShape []*int `json:"input_shape"`
	} `json:"build_config"`
}

// modelConfig is the config of a Sequential or Functional model.
type modelConfig struct {
	Name            string          `json:"name"`
	Layers          []kerasObject   `json:"layers"`
	InputLayers     json.RawMessage `json:"input_layers"`
	OutputLayers    json.RawMessage `json:"output_layers"`
	BuildInputShape []*int          `json:"build_input_shape"`
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

// kerasNode is the structure of a parsed model: a model's node lists its
// layers and nested models in config order (input layers left out), which
// is how Keras names their weights in a .keras archive.
type kerasNode struct {
	name, class string
	layer       *Layer // nil for a model
	children    []*kerasNode
}

func (n *kerasNode) walk(fn func(*kerasNode)) {
	fn(n)
	for _, c := range n.children {
		c.walk(fn)
	}
}

// maxNesting bounds models nested in models; a hostile config could
// otherwise recurse as deep as the JSON decoder lets it.
const maxNesting = 16

func isModelClass(class string) bool {
	return class == "Sequential" || class == "Functional" || class == "Model"
}

// parseConfig turns a Keras model config into badprune's layers.
func parseConfig(raw []byte) ([]*Layer, error) {
	_, layers, err := parseModel(raw)
	return layers, err
}

// parseModel reads a Keras 2 model_config or a Keras 3 config.json. Models
// nested in the model are flattened: their layers join the outer ones,
// wired to what fed the nested model, and what the nested model fed takes
// its output.
func parseModel(raw []byte) (*kerasNode, []*Layer, error) {
	var top kerasObject
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if !isModelClass(top.ClassName) {
		return nil, nil, fmt.Errorf("unsupported model class %q", top.ClassName)
	}
	p := &parser{alias: map[string]string{}}
	tree, _, err := p.model(&top, "", 0)
	if err != nil {
		return nil, nil, err
	}
	if len(p.out) == 0 {
		return nil, nil, errors.New("the model has no layers")
	}
	return tree, p.out, nil
}

type parser struct {
	out []*Layer
	// alias maps the name of a nested model, or of a nested model's input
	// layer, to the layer whose output it stands for.
	alias map[string]string
}

func (p *parser) resolve(name string) string {
	if a, ok := p.alias[name]; ok {
		return a
	}
	return name
}

// model parses a model whose input is the output of layer feed ("" at the
// top) and returns its node and the name of the layer giving its output.
func (p *parser) model(obj *kerasObject, feed string, depth int) (*kerasNode, string, error) {
	if depth > maxNesting {
		return nil, "", fmt.Errorf("models nested more than %d deep", maxNesting)
	}
	sequential := obj.ClassName == "Sequential"
	var c modelConfig
	var layers []kerasObject
	if err := json.Unmarshal(obj.Config, &c); err != nil || c.Layers == nil {
		// Old Sequential configs are a bare list of layers.
		if err2 := json.Unmarshal(obj.Config, &layers); err2 != nil || !sequential {
			return nil, "", errors.New("no layer list in the config")
		}
	} else {
		layers = c.Layers
	}
	if len(layers) == 0 {
		return nil, "", errors.New("the model has no layers")
	}
	n := &kerasNode{name: obj.Name, class: obj.ClassName}
	if n.name == "" {
		n.name = c.Name
	}
	if sequential {
		shape := c.BuildInputShape
		if shape == nil && obj.BuildConfig != nil {
			shape = obj.BuildConfig.InputShape
		}
		out, err := p.sequential(n, layers, feed, shape, depth)
		return n, out, err
	}
	out, err := p.functional(n, layers, feed, &c, depth)
	return n, out, err
}

// layerName decodes a layer's config and finds its name.
func layerName(kl *kerasObject, i int) (string, *layerConfig, error) {
	var c layerConfig
	if isModelClass(kl.ClassName) {
		// A nested model's config may be a bare list (old Sequential).
		var mc struct {
			Name string `json:"name"`
		}
		json.Unmarshal(kl.Config, &mc)
		c.Name = mc.Name
	} else if err := json.Unmarshal(kl.Config, &c); err != nil {
		return "", nil, fmt.Errorf("layer %d: bad config: %v", i, err)
	}
	name := kl.Name
	if name == "" {
		name = c.Name
	}
	if name == "" {
		return "", nil, fmt.Errorf("layer %d has no name", i)
	}
	kl.Name = name
	return name, &c, nil
}

// sequential chains layers after prev ("" when the model starts here).
// buildShape is the model's build input shape, for a Sequential without an
// InputLayer whose first layer has no batch_input_shape either.
func (p *parser) sequential(n *kerasNode, layers []kerasObject, prev string, buildShape []*int, depth int) (string, error) {
	for i := range layers {
		kl := &layers[i]
		name, c, err := layerName(kl, i)
		if err != nil {
			return "", err
		}
		if isModelClass(kl.ClassName) {
			sub, out, err := p.model(kl, prev, depth+1)
			if err != nil {
				return "", fmt.Errorf("layer %q: %w", name, err)
			}
			n.children = append(n.children, sub)
			p.alias[name] = out
			prev = out
			continue
		}
		l, err := convertLayer(kl.ClassName, name, c)
		if err != nil {
			return "", fmt.Errorf("layer %q: %w", name, err)
		}
		if l.Kind == Input {
			if prev != "" {
				// A nested block's own input: it is what feeds the block.
				p.alias[name] = prev
				continue
			}
			p.out = append(p.out, l)
			prev = name
			continue
		}
		if prev == "" {
			// The input is implied by the first layer's batch_input_shape,
			// or by the shape the model was built with.
			shape := c.BatchInputShape
			if shape == nil {
				shape = c.BatchShape
			}
			if shape == nil {
				shape = buildShape
			}
			if shape == nil && kl.BuildConfig != nil {
				shape = kl.BuildConfig.InputShape
			}
			in, err := inputFrom(name+"_input", shape)
			if err != nil {
				return "", fmt.Errorf("layer %q: %w", name, err)
			}
			p.out = append(p.out, in)
			prev = in.Name
		}
		l.Inputs = []string{prev}
		n.children = append(n.children, &kerasNode{name: name, class: kl.ClassName, layer: l})
		p.out = append(p.out, l)
		prev = name
	}
	return prev, nil
}

// functional adds layers wired by their inbound_nodes; feed, when not "",
// stands for the model's input layer.
func (p *parser) functional(n *kerasNode, layers []kerasObject, feed string, c *modelConfig, depth int) (string, error) {
	ins, err := layerRefs(c.InputLayers)
	if err != nil {
		return "", fmt.Errorf("input_layers: %w", err)
	}
	if len(ins) > 1 {
		return "", fmt.Errorf("%d inputs: only single-input models are supported", len(ins))
	}
	outs, err := layerRefs(c.OutputLayers)
	if err != nil {
		return "", fmt.Errorf("output_layers: %w", err)
	}
	if len(outs) > 1 {
		return "", fmt.Errorf("%d outputs: only single-output models are supported", len(outs))
	}
	last := ""
	for i := range layers {
		kl := &layers[i]
		name, cfg, err := layerName(kl, i)
		if err != nil {
			return "", err
		}
		var inputs []string
		if kl.ClassName != string(Input) {
			if inputs, err = inbound(kl.InboundNodes); err != nil {
				return "", fmt.Errorf("layer %q: %w", name, err)
			}
			for j, in := range inputs {
				inputs[j] = p.resolve(in)
			}
		}
		if isModelClass(kl.ClassName) {
			if len(inputs) != 1 {
				return "", fmt.Errorf("layer %q: nested model with %d inputs: only single-input models are supported", name, len(inputs))
			}
			sub, out, err := p.model(kl, inputs[0], depth+1)
			if err != nil {
				return "", fmt.Errorf("layer %q: %w", name, err)
			}
			n.children = append(n.children, sub)
			p.alias[name] = out
			last = out
			continue
		}
		l, err := convertLayer(kl.ClassName, name, cfg)
		if err != nil {
			return "", fmt.Errorf("layer %q: %w", name, err)
		}
		if l.Kind == Input {
			if feed != "" {
				p.alias[name] = feed
				continue
			}
			p.out = append(p.out, l)
			last = name
			continue
		}
		l.Inputs = inputs
		n.children = append(n.children, &kerasNode{name: name, class: kl.ClassName, layer: l})
		p.out = append(p.out, l)
		last = name
	}
	if len(outs) == 1 {
		return p.resolve(outs[0]), nil
	}
	return last, nil
}

// layerRefs reads input_layers or output_layers: a list of [name, node,
// tensor], or, in Keras 3 for a single one, a flat [name, node, tensor].
func layerRefs(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var v []any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, errors.New("not a list of layer references")
	}
	if len(v) > 0 {
		if s, ok := v[0].(string); ok {
			return []string{s}, nil
		}
	}
	var out []string
	for _, e := range v {
		r, ok := e.([]any)
		if !ok || len(r) == 0 {
			return nil, errors.New("not a list of layer references")
		}
		s, ok := r[0].(string)
		if !ok {
			return nil, errors.New("a layer reference without a layer name")
		}
		out = append(out, s)
	}
	return out, nil
}

// inbound reads the names of the layers feeding a layer from its
// inbound_nodes, in Keras 2's form [[[name, node, tensor, kwargs], ...]] or
// Keras 3's [{"args": [keras tensors], "kwargs": {...}}].
func inbound(raw json.RawMessage) ([]string, error) {
	var nodes []json.RawMessage
	if err := json.Unmarshal(raw, &nodes); err != nil {
		return nil, errors.New("inbound_nodes is not a list")
	}
	switch len(nodes) {
	case 0:
		return nil, errors.New("no inbound nodes: the layer is not connected")
	case 1:
	default:
		return nil, fmt.Errorf("called %d times: shared layers are not supported", len(nodes))
	}
	var names []string
	var k2 [][]any
	if err := json.Unmarshal(nodes[0], &k2); err == nil {
		for _, n := range k2 {
			if len(n) < 1 {
				return nil, errors.New("empty inbound node")
			}
			s, ok := n[0].(string)
			if !ok {
				return nil, errors.New("inbound node without a layer name")
			}
			names = append(names, s)
		}
	} else {
		var k3 struct {
			Args []any `json:"args"`
		}
		if err := json.Unmarshal(nodes[0], &k3); err != nil {
			return nil, errors.New("inbound_nodes in neither the Keras 2 nor the Keras 3 form")
		}
		// Only args carry inputs; kwargs hold options such as training.
		if err := kerasTensors(k3.Args, &names, 0); err != nil {
			return nil, err
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no inputs")
	}
	return names, nil
}

// kerasTensors collects the producing layers of the Keras 3 tensors in v
// (a tensor, or lists of them); other values are constants and skipped.
func kerasTensors(v any, names *[]string, depth int) error {
	if depth > 32 {
		return errors.New("inbound_nodes nested too deeply")
	}
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if err := kerasTensors(e, names, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		if x["class_name"] != "__keras_tensor__" {
			return nil
		}
		cfg, _ := x["config"].(map[string]any)
		hist, _ := cfg["keras_history"].([]any)
		if len(hist) < 1 {
			return errors.New("an input tensor without keras_history")
		}
		name, ok := hist[0].(string)
		if !ok || name == "" {
			return errors.New("an input tensor without a layer name in keras_history")
		}
		*names = append(*names, name)
	}
	return nil
}

// inputFrom makes an input layer of a batch shape (batch, height, width,
// channels); the batch size, fixed or not, is ignored.
func inputFrom(name string, shape []*int) (*Layer, error) {
	if len(shape) == 0 {
		return nil, errors.New("no input shape (batch_input_shape, batch_shape or a build input shape)")
	}
	if len(shape) != 4 {
		return nil, fmt.Errorf("batch_input_shape %v: want (batch, height, width, channels)", dims(shape))
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

// dims shows a shape with nil (free) sizes as "None", as Keras prints it.
func dims(shape []*int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = "None"
		if d != nil {
			parts[i] = strconv.Itoa(*d)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
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
		shape := c.BatchInputShape
		if shape == nil {
			shape = c.BatchShape
		}
		return inputFrom(name, shape)
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
