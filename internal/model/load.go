package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
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
func Load(path string) (*Model, error) { return LoadWith(path, LoadOptions{}) }

// LoadOptions change how LoadWith reads a model.
type LoadOptions struct {
	// Architecture is a JSON file with the architecture of a weights-only
	// HDF5 file, as Keras's model.to_json() writes it (Keras 2 or 3).
	// Files that hold their own architecture ignore it; weights-only files
	// without one are taken for the lab's DeepID.
	Architecture string
}

// LoadWith is Load with options.
func LoadWith(path string, opt LoadOptions) (*Model, error) {
	kind, err := sniff(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var m *Model
	if kind == zipFile {
		if m, err = loadArchive(path); err == nil {
			err = readArchiveLayers(m)
		}
	} else {
		err = h5.Locked(func() (err error) {
			m, err = load(path, opt)
			return err
		})
	}
	if err == nil {
		err = m.checkWeights()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// architecture reads a model.to_json() file.
func architecture(path string) (*kerasNode, []*Layer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("architecture %s: %w", path, errors.Unwrap(err))
	}
	tree, layers, err := parseModel(b)
	if err != nil {
		return nil, nil, fmt.Errorf("architecture %s: %w", path, err)
	}
	return tree, layers, nil
}

func load(path string, opt LoadOptions) (*Model, error) {
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
		if opt.Architecture == "" {
			m.Layers = deepID()
		} else if tree, m.Layers, err = architecture(opt.Architecture); err != nil {
			return nil, err
		}
	case f.LinkExists(archiveLayers) || f.LinkExists("vars"):
		return nil, errors.New("a Keras 3 weights file (.weights.h5) is not supported: save the whole model (model.save) instead")
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

// readWeights loads every layer's weights (weightRoles), using the
// weight_names attribute of the layer's group (or, for a layer of a nested
// model, of the nested model's group).
func readWeights(m *Model, root *hdf5.CommonFG, groups map[string]string) error {
	prefix := ""
	if m.FullModel {
		prefix = "model_weights/"
	}
	for _, l := range m.Layers {
		roles := l.weightRoles()
		if roles == nil {
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
		err = readGroupWeights(g, l, roles, prefix+group, nested)
		g.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func readGroupWeights(g *hdf5.Group, l *Layer, roles []weightRole, group string, nested bool) error {
	names, err := h5.StringsAttr(g, "weight_names")
	if err != nil {
		return fmt.Errorf("layer %q: %w", l.Name, err)
	}
	for r, name := range pickWeights(names, l.Name, nested, roles) {
		role := roles[r]
		if name == "" {
			if role.optional {
				continue
			}
			return fmt.Errorf("layer %q: no %s listed in weight_names of group %q", l.Name, role.names[0], group)
		}
		v, shape, err := readArray(g, name)
		if err != nil {
			return fmt.Errorf("layer %q: weight %q: %w", l.Name, name, err)
		}
		role.set(v, shape, group+"/"+name)
	}
	return nil
}

// weightRole is one weight a layer stores: the names Keras gives it (the
// first is Keras 2's), whether a layer may lack it (a bias with use_bias
// false), and where it is in the Layer.
type weightRole struct {
	names    []string
	optional bool
	set      func(v []float32, shape []int, path string)
	get      func() (v []float32, shape []int)
}

// weightRoles are l's weights in Keras's order, the order of a layer's
// weight_names and of its vars in a .keras archive; nil for a layer
// without weights.
func (l *Layer) weightRoles() []weightRole {
	vector := func(v []float32) func() ([]float32, []int) {
		return func() ([]float32, []int) { return v, []int{len(v)} }
	}
	kernel := func(names ...string) weightRole {
		return weightRole{names, false, func(v []float32, shape []int, path string) { l.Kernel, l.KernelShape, l.KernelPath = v, shape, path },
			func() ([]float32, []int) { return l.Kernel, l.KernelShape }}
	}
	bias := weightRole{[]string{"bias"}, true, func(v []float32, _ []int, path string) { l.Bias, l.BiasPath = v, path }, vector(l.Bias)}
	switch l.Kind {
	case Conv2D, Dense:
		return []weightRole{kernel("kernel"), bias}
	case DepthwiseConv2D:
		// Keras 2 calls it depthwise_kernel, Keras 3 kernel.
		return []weightRole{kernel("depthwise_kernel", "kernel"), bias}
	case SeparableConv2D:
		depthwise := weightRole{[]string{"depthwise_kernel"}, false, func(v []float32, shape []int, _ string) { l.Depthwise, l.DepthwiseShape = v, shape },
			func() ([]float32, []int) { return l.Depthwise, l.DepthwiseShape }}
		return []weightRole{depthwise, kernel("pointwise_kernel"), bias}
	case BatchNorm:
		gamma, beta, mean, variance := l.Norm()
		var r []weightRole
		if l.HasGamma {
			g := kernel("gamma")
			g.get = vector(gamma)
			r = append(r, g)
		}
		if l.HasBeta {
			bias.names, bias.optional, bias.get = []string{"beta"}, false, vector(beta)
			r = append(r, bias)
		}
		setMean := func(v []float32, shape []int, path string) {
			if l.HasGamma {
				l.Mean = v
			} else {
				l.Kernel, l.KernelShape, l.KernelPath = v, shape, path // see Norm
			}
		}
		setVar := func(v []float32, _ []int, _ string) { l.Var = v }
		return append(r, weightRole{[]string{"moving_mean"}, false, setMean, vector(mean)},
			weightRole{[]string{"moving_variance"}, false, setVar, vector(variance)})
	}
	return nil
}

// pickWeights finds a layer's weights among the weight_names of its group,
// one name (or "") per role. Keras 2 names them "<layer>/kernel:0", Keras 3
// by variable path, "<model>/<layer>/kernel". In a nested model's group
// only names whose parent is the layer count; in the layer's own group the
// names come in the layer's weight order whatever they are called, as
// Keras writes them, so a role no name matches takes the name in its
// place.
func pickWeights(names []string, layer string, nested bool, roles []weightRole) []string {
	picked := make([]string, len(roles))
	taken := map[string]bool{}
	for _, n := range names {
		parts := strings.Split(n, "/")
		if nested && (len(parts) < 2 || parts[len(parts)-2] != layer) {
			continue
		}
		base := parts[len(parts)-1]
		if i := strings.LastIndexByte(base, ':'); i > 0 {
			base = base[:i]
		}
		for r, role := range roles {
			if picked[r] == "" && slices.Contains(role.names, base) {
				picked[r], taken[n] = n, true
				break
			}
		}
	}
	if nested {
		return picked
	}
	for r := range roles {
		if picked[r] == "" && r < len(names) && !taken[names[r]] {
			picked[r], taken[names[r]] = names[r], true
		}
	}
	return picked
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
	if err := InferShapes(m.Layers); err != nil {
		return err
	}
	for _, l := range m.Layers {
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
	if last.Shape[0] < 2 {
		return fmt.Errorf("last layer %q outputs one score: binary classifiers with a single output are not supported", last.Name)
	}
	m.Output = last
	m.Classes = last.Shape[0]
	return nil
}

// InferShapes computes the output shape of each layer, in topological
// order, from its inputs' and its own configuration and weights (for
// Conv2D and Dense, their kernel): what New does before checking that the
// layers make a model, for building one layer by layer.
func InferShapes(layers []*Layer) error {
	seen := map[string]*Layer{}
	for _, l := range layers {
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
			return fmt.Errorf("layer %q (%s): %w", l.Name, l.KerasClass(), err)
		}
	}
	return nil
}

func (l *Layer) inferShape(in []*Layer) error {
	want := 1
	switch l.Kind {
	case Input:
		want = 0
	case Add, Concat:
		want = -1
	}
	if want >= 0 && len(in) != want {
		return fmt.Errorf("has %d inputs, want %d", len(in), want)
	}
	var s []int // the input image, for the layers that take one
	switch l.Kind {
	case Conv2D, SeparableConv2D, DepthwiseConv2D, MaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool, ZeroPad:
		if s = in[0].Shape; len(s) != 3 {
			return fmt.Errorf("input shape %v is not an image", s)
		}
	}
	switch l.Kind {
	case Input:
		if len(l.Shape) != 3 || l.Shape[0] < 1 || l.Shape[1] < 1 || l.Shape[2] < 1 {
			return fmt.Errorf("input shape %v: want (height, width, channels)", l.Shape)
		}
	case Conv2D:
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
		if err := l.slide(s, ks[3]); err != nil {
			return err
		}
	case SeparableConv2D, DepthwiseConv2D:
		// The weights are checked by checkWeights: a .keras archive's are
		// read after the shapes.
		if l.KH < 1 || l.KW < 1 || l.KH > 64 || l.DepthMul < 1 {
			return fmt.Errorf("kernel_size %dx%d, depth_multiplier %d", l.KH, l.KW, l.DepthMul)
		}
		oc := s[2] * l.DepthMul
		if l.Kind == SeparableConv2D {
			oc = l.Filters
		}
		if err := l.slide(s, oc); err != nil {
			return err
		}
	case MaxPool, AvgPool:
		if err := l.slide(s, s[2]); err != nil {
			return err
		}
	case GlobalAvgPool, GlobalMaxPool:
		l.Shape = []int{s[2]}
		if l.KeepDims {
			l.Shape = []int{1, 1, s[2]}
		}
	case ZeroPad:
		p := l.Pad
		l.Shape = []int{s[0] + p[0] + p[1], s[1] + p[2] + p[3], s[2]}
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
	case Concat:
		if len(in) < 2 {
			return fmt.Errorf("has %d inputs, want at least 2", len(in))
		}
		s0 := in[0].Shape
		if err := lastAxis(l.Axis, len(s0)); err != nil {
			return err
		}
		l.Shape = slices.Clone(s0)
		for _, p := range in[1:] {
			if len(p.Shape) != len(s0) || !equal(p.Shape[:len(s0)-1], s0[:len(s0)-1]) {
				return fmt.Errorf("inputs of shapes %v and %v do not join on the last axis", s0, p.Shape)
			}
			l.Shape[len(s0)-1] += p.Shape[len(s0)-1]
		}
	case BatchNorm, Softmax:
		if err := lastAxis(l.Axis, len(in[0].Shape)); err != nil {
			return err
		}
		l.Shape = slices.Clone(in[0].Shape)
	case Rescaling:
		c := in[0].Shape[len(in[0].Shape)-1]
		for _, v := range [][]float32{l.Scale, l.Offset} {
			if len(v) != 1 && len(v) != c {
				return fmt.Errorf("%d scale or offset values for %d channels", len(v), c)
			}
		}
		l.Shape = slices.Clone(in[0].Shape)
	case Identity:
		if t := l.Target; t != nil {
			s := in[0].Shape
			if len(s) != 3 || s[0] != t[0] || s[1] != t[1] {
				return fmt.Errorf("changes the size to %dx%d from %v; only a %s to the size the input already has (the identity) is supported",
					t[0], t[1], s, l.Class)
			}
		}
		l.Shape = slices.Clone(in[0].Shape)
	case Activation, Dropout, ReLU, LeakyReLU, ELU:
		l.Shape = slices.Clone(in[0].Shape)
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

// lastAxis checks that a Keras axis, which counts the batch axis, is the
// last of an output of the given rank (without the batch axis).
func lastAxis(axis, rank int) error {
	// 0, the batch axis, is never meant: it is the zero Axis of a layer
	// made in memory, which means the last.
	if axis == -1 || axis == 0 || axis == rank {
		return nil
	}
	return fmt.Errorf("axis %d: only the last axis (-1, the channels) is supported", axis)
}

// checkWeights checks the weights of the layers whose shapes do not depend
// on them, once they are read: SeparableConv2D, DepthwiseConv2D,
// BatchNormalization.
func (m *Model) checkWeights() error {
	for _, l := range m.Layers {
		if err := l.checkWeights(m); err != nil {
			return fmt.Errorf("layer %q (%s): %w", l.Name, l.KerasClass(), err)
		}
	}
	return nil
}

func (l *Layer) checkWeights(m *Model) error {
	want := func(what string, v []float32, shape []int, wantShape ...int) error {
		if v == nil {
			return fmt.Errorf("no %s in the file", what)
		}
		if shape != nil && !equal(shape, wantShape) {
			return fmt.Errorf("%s of shape %v, want %v", what, shape, wantShape)
		}
		n := 1
		for _, d := range wantShape {
			n *= d
		}
		if len(v) != n {
			return fmt.Errorf("%s of %d values, want %d", what, len(v), n)
		}
		return nil
	}
	if l.Kind != SeparableConv2D && l.Kind != DepthwiseConv2D && l.Kind != BatchNorm {
		return nil
	}
	c := m.Layer(l.Inputs[0]).Channels()
	oc := l.Channels()
	switch l.Kind {
	case SeparableConv2D:
		if err := want("depthwise kernel", l.Depthwise, l.DepthwiseShape, l.KH, l.KW, c, l.DepthMul); err != nil {
			return err
		}
		if err := want("pointwise kernel", l.Kernel, l.KernelShape, 1, 1, c*l.DepthMul, oc); err != nil {
			return err
		}
	case DepthwiseConv2D:
		if err := want("depthwise kernel", l.Kernel, l.KernelShape, l.KH, l.KW, c, l.DepthMul); err != nil {
			return err
		}
	case BatchNorm:
		gamma, beta, mean, variance := l.Norm()
		for _, w := range []struct {
			what string
			v    []float32
			used bool
		}{{"gamma", gamma, l.HasGamma}, {"beta", beta, l.HasBeta}, {"moving mean", mean, true}, {"moving variance", variance, true}} {
			if err := want(w.what, w.v, nil, c); w.used && err != nil {
				return err
			}
		}
		for i, v := range variance {
			if !(float64(v)+l.Eps > 0) {
				return fmt.Errorf("moving variance %g of channel %d with epsilon %g: the normalization divides by zero", v, i, l.Eps)
			}
		}
		return nil
	}
	if l.Bias != nil && len(l.Bias) != oc {
		return fmt.Errorf("bias of %d values for %d channels", len(l.Bias), oc)
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
// slide sets l's shape to that of its window sliding over the image s,
// with c channels.
func (l *Layer) slide(s []int, c int) error {
	oh, ow, err := window(s[0], s[1], l.KH, l.KW, l.SH, l.SW, l.Same)
	if err != nil {
		return err
	}
	l.Shape = []int{oh, ow, c}
	return nil
}

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

// layerConfig is the config of any layer. Keys whose type differs between
// classes (padding: a string or ZeroPadding2D's numbers; scale: a bool or
// Rescaling's numbers; axis: a number or a list) stay raw.
type layerConfig struct {
	Name            string          `json:"name"`
	BatchInputShape []*int          `json:"batch_input_shape"`
	BatchShape      []*int          `json:"batch_shape"`
	Filters         int             `json:"filters"`
	Units           int             `json:"units"`
	KernelSize      []int           `json:"kernel_size"`
	PoolSize        []int           `json:"pool_size"`
	Strides         []int           `json:"strides"`
	Padding         json.RawMessage `json:"padding"`
	DataFormat      *string         `json:"data_format"`
	DilationRate    []int           `json:"dilation_rate"`
	Activation      activationName  `json:"activation"`
	UseBias         *bool           `json:"use_bias"`
	Groups          int             `json:"groups"`
	DepthMultiplier int             `json:"depth_multiplier"`

	Axis          json.RawMessage `json:"axis"`
	Epsilon       *float64        `json:"epsilon"`
	Center        *bool           `json:"center"`
	Scale         json.RawMessage `json:"scale"`
	Offset        json.RawMessage `json:"offset"`
	Renorm        bool            `json:"renorm"`
	Alpha         *float64        `json:"alpha"`
	NegativeSlope *float64        `json:"negative_slope"`
	MaxValue      *float64        `json:"max_value"`
	Threshold     *float64        `json:"threshold"`
	Height        int             `json:"height"`
	Width         int             `json:"width"`
	KeepDims      bool            `json:"keepdims"`
}

// activationName is a serialized activation: its name, or in Keras 3 at
// times an object whose config is the name.
type activationName string

func (a *activationName) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = activationName(s)
		return nil
	}
	var o struct {
		ClassName string `json:"class_name"`
		Config    any    `json:"config"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return errors.New("activation is neither a name nor an object")
	}
	switch c := o.Config.(type) {
	case string:
		*a = activationName(c)
	case nil:
		*a = ""
	default:
		// A layer used as an activation (LeakyReLU(...)): named by its
		// class, which activation() then refuses.
		*a = activationName(o.ClassName)
	}
	return nil
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
		// In a nested block, its own input stands for what feeds the block.
		l, err := p.place(n, kl, name, c, []string{prev}, prev, depth, &prev)
		if err != nil {
			return "", err
		}
		if l == nil {
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
		p.add(n, kl, l, prev)
		prev = name
	}
	return prev, nil
}

// place handles the layer kl of a Sequential or functional model, named
// name with config c. A nested model, which must have one input, is added
// under n whole, and *last set to its output. An InputLayer is added and
// *last set to it, unless feed ("" for none) stands for the model's input:
// then it is an alias of feed. Both give a nil layer. Any other layer is
// converted and returned for the caller to wire and add.
func (p *parser) place(n *kerasNode, kl *kerasObject, name string, c *layerConfig, inputs []string, feed string, depth int, last *string) (*Layer, error) {
	if isModelClass(kl.ClassName) {
		if len(inputs) != 1 {
			return nil, fmt.Errorf("layer %q: nested model with %d inputs: only single-input models are supported", name, len(inputs))
		}
		sub, out, err := p.model(kl, inputs[0], depth+1)
		if err != nil {
			return nil, fmt.Errorf("layer %q: %w", name, err)
		}
		n.children = append(n.children, sub)
		p.alias[name] = out
		*last = out
		return nil, nil
	}
	l, err := convertLayer(kl.ClassName, name, c)
	if err != nil {
		return nil, fmt.Errorf("layer %q: %w", name, err)
	}
	if l.Kind != Input {
		return l, nil
	}
	if feed != "" {
		p.alias[name] = feed
	} else {
		p.out = append(p.out, l)
		*last = name
	}
	return nil, nil
}

// add adds the layer l of kl, reading inputs, under n.
func (p *parser) add(n *kerasNode, kl *kerasObject, l *Layer, inputs ...string) {
	l.Inputs = inputs
	n.children = append(n.children, &kerasNode{name: l.Name, class: kl.ClassName, layer: l})
	p.out = append(p.out, l)
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
		l, err := p.place(n, kl, name, cfg, inputs, feed, depth, &last)
		if err != nil {
			return "", err
		}
		if l == nil {
			continue
		}
		p.add(n, kl, l, inputs...)
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
	if identityClass(class) {
		l.Kind, l.Class = Identity, class
		if (class == "Resizing" || class == "RandomCrop") && (c.Height > 0 || c.Width > 0) {
			l.Target = []int{c.Height, c.Width}
		}
		return l, nil
	}
	acts := Activations()
	var err error
	switch l.Kind {
	case Input:
		shape := c.BatchInputShape
		if shape == nil {
			shape = c.BatchShape
		}
		return inputFrom(name, shape)
	case Conv2D, SeparableConv2D, DepthwiseConv2D:
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
		if l.Kind != Conv2D {
			l.Filters, l.DepthMul = c.Filters, max(c.DepthMultiplier, 1)
			if l.Kind == SeparableConv2D && l.Filters < 1 {
				return nil, fmt.Errorf("filters %d", l.Filters)
			}
		}
		if l.Act, err = activation(string(c.Activation), acts...); err != nil {
			return nil, err
		}
		l.Alpha = activationAlpha(l.Act)
		l.Same, err = padding(c.Padding)
		return l, err
	case MaxPool, AvgPool:
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
	case Dense, Activation:
		l.Act, err = activation(string(c.Activation), acts...)
		l.Alpha = activationAlpha(l.Act)
		return l, err
	case BatchNorm:
		if c.Renorm {
			return nil, errors.New("batch renormalization (renorm) is not supported")
		}
		l.Eps, l.HasBeta, l.HasGamma = 1e-3, true, true
		if c.Epsilon != nil {
			l.Eps = *c.Epsilon
		}
		if c.Center != nil {
			l.HasBeta = *c.Center
		}
		if len(c.Scale) > 0 && string(c.Scale) != "null" {
			if err := json.Unmarshal(c.Scale, &l.HasGamma); err != nil {
				return nil, fmt.Errorf("scale %s: want true or false", c.Scale)
			}
		}
		if !(l.Eps >= 0) {
			return nil, fmt.Errorf("epsilon %v", l.Eps)
		}
		return l, axis(l, c.Axis)
	case Concat, Softmax:
		l.Act = "softmax"
		if l.Kind == Concat {
			l.Act = ""
		}
		return l, axis(l, c.Axis)
	case ReLU:
		l.Act = "relu"
		if c.NegativeSlope != nil {
			l.Alpha = *c.NegativeSlope
		}
		if c.Threshold != nil {
			l.Threshold = *c.Threshold
		}
		if c.MaxValue != nil {
			if !(*c.MaxValue > 0) {
				return nil, fmt.Errorf("max_value %v: want a positive number", *c.MaxValue)
			}
			l.MaxValue = *c.MaxValue
		}
		return l, nil
	case LeakyReLU, ELU:
		l.Act, l.Alpha = "leaky_relu", 0.3 // Keras's LeakyReLU default
		if l.Kind == ELU {
			l.Act, l.Alpha = "elu", 1
		}
		for _, v := range []*float64{c.Alpha, c.NegativeSlope} {
			if v != nil {
				l.Alpha = *v
			}
		}
		return l, nil
	case Rescaling:
		if l.Scale, err = numbers(c.Scale, 1, "scale"); err != nil {
			return nil, err
		}
		l.Offset, err = numbers(c.Offset, 0, "offset")
		return l, err
	case ZeroPad:
		l.Pad, err = zeroPadding(c.Padding)
		return l, err
	case GlobalAvgPool, GlobalMaxPool:
		l.KeepDims = c.KeepDims
		return l, nil
	case Flatten, Add, Dropout:
		return l, nil
	}
	return nil, fmt.Errorf("unsupported layer type %q (supported: %s)", class, strings.Join(supportedClasses(), ", "))
}

// supportedClasses lists the Keras layer classes Load reads.
func supportedClasses() []string {
	return []string{"InputLayer", "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense", "BatchNormalization",
		"MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D",
		"Flatten", "Add", "Concatenate", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Rescaling",
		"Resizing and RandomCrop to the input's size", "Dropout and the other dropout and noise layers",
		"RandomFlip, RandomRotation, RandomZoom, RandomTranslation, RandomContrast, RandomBrightness",
		"nested Sequential and Functional models"}
}

// activationAlpha is the parameter an activation named in a string takes
// by default: Keras 3's leaky_relu slope, elu's alpha.
func activationAlpha(act string) float64 {
	switch act {
	case "leaky_relu":
		return 0.2
	case "elu":
		return 1
	}
	return 0
}

// axis reads the axis of a BatchNormalization, Concatenate or Softmax
// layer: a number or a one-element list, counting the batch axis, kept
// for shape inference to check that it is the last.
func axis(l *Layer, raw json.RawMessage) error {
	l.Axis = -1
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var list []int
	if err := json.Unmarshal(raw, &l.Axis); err == nil {
		return nil
	}
	if err := json.Unmarshal(raw, &list); err != nil || len(list) != 1 {
		return fmt.Errorf("axis %s: only a single axis, the channels, is supported", raw)
	}
	l.Axis = list[0]
	return nil
}

// numbers reads a Rescaling scale or offset: a number, a list of numbers
// (one per channel), or Keras 3's serialized NumPy array.
func numbers(raw json.RawMessage, def float32, what string) ([]float32, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return []float32{def}, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	if o, ok := v.(map[string]any); ok {
		cfg, _ := o["config"].(map[string]any)
		v = cfg["value"]
	}
	var out []float32
	var flat func(x any, depth int) bool
	flat = func(x any, depth int) bool {
		switch t := x.(type) {
		case float64:
			out = append(out, float32(t))
			return true
		case []any:
			for _, e := range t {
				if depth > 3 || !flat(e, depth+1) {
					return false
				}
			}
			return true
		}
		return false
	}
	if !flat(v, 0) || len(out) == 0 {
		return nil, fmt.Errorf("%s %s: want a number or one per channel", what, raw)
	}
	return out, nil
}

// zeroPadding reads ZeroPadding2D's padding: n, [h, w] or [[t, b], [l, r]].
func zeroPadding(raw json.RawMessage) ([4]int, error) {
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return [4]int{n, n, n, n}, validPad(n)
	}
	var hw []int
	if err := json.Unmarshal(raw, &hw); err == nil && len(hw) == 2 {
		return [4]int{hw[0], hw[0], hw[1], hw[1]}, validPad(hw...)
	}
	var tblr [][]int
	if err := json.Unmarshal(raw, &tblr); err == nil && len(tblr) == 2 && len(tblr[0]) == 2 && len(tblr[1]) == 2 {
		p := [4]int{tblr[0][0], tblr[0][1], tblr[1][0], tblr[1][1]}
		return p, validPad(p[:]...)
	}
	return [4]int{}, fmt.Errorf("padding %s: want a number, two, or two pairs", raw)
}

func validPad(v ...int) error {
	for _, x := range v {
		if x < 0 || x > 1<<12 {
			return fmt.Errorf("padding %d", x)
		}
	}
	return nil
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

// padding reads the padding of a window: "valid" (the default) or "same".
func padding(raw json.RawMessage) (bool, error) {
	var p string
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &p); err != nil {
			return false, fmt.Errorf("padding %s: want \"valid\" or \"same\"", raw)
		}
	}
	switch p {
	case "", "valid":
		return false, nil
	case "same":
		return true, nil
	}
	return false, fmt.Errorf("padding %q is not supported", p)
}
