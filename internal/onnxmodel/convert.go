package onnxmodel

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"badprune/internal/model"
	pb "badprune/internal/third_party/onnxpb"
)

// NodeError is a node of the graph that badprune cannot turn into layers.
type NodeError struct {
	Node    string // the node's name; old exports leave it empty
	Output  string // its first output, which names it then
	Op      string
	Problem string
}

func (e *NodeError) Error() string {
	if e.Node != "" {
		return fmt.Sprintf("node %q (op %s): %s", e.Node, e.Op, e.Problem)
	}
	return fmt.Sprintf("node with output %q (op %s): %s", e.Output, e.Op, e.Problem)
}

// value is what an ONNX tensor is to the converter: a constant, or the
// output of a network layer seen through ONNX's NCHW layout.
type value struct {
	c *tensor

	layer *model.Layer
	// dims are the tensor's ONNX dimensions without the batch axis.
	dims []int
	// axes, for an image, are the NHWC axes (0 H, 1 W, 2 C) of dims. A
	// vector has none; its dims are (D) and then any number of 1s (what
	// Unsqueeze and GlobalAveragePool leave).
	axes []int
	// perm, for a vector, says that feature i of the tensor is feature
	// perm[i] of the layer's output (nil: feature i). PyTorch flattens a
	// feature map C, H, W, the network H, W, C; the Dense layer that reads
	// the flattened map takes its rows in the network's order.
	perm []int
	// nonneg: no value is negative (after a ReLU), so zero padding is as
	// good as the -inf padding of max pooling.
	nonneg bool
	// final: the output of the model's softmax, which only the graph's
	// output may be.
	final bool
}

// nchw is the axes of an image in ONNX's layout.
var nchw = []int{2, 0, 1}

func (v *value) image() bool { return v.c == nil && v.axes != nil }

// hwc is an image value's (height, width, channels).
func (v *value) hwc() (h, w, c int) {
	var s [3]int
	for k, a := range v.axes {
		s[a] = v.dims[k]
	}
	return s[0], s[1], s[2]
}

// features is the size of a vector value.
func (v *value) features() int { return v.dims[0] }

// units is the number of trailing axes of size 1 of a vector value.
func (v *value) units() int { return len(v.dims) - 1 }

// weightRef says where one of a layer's weights is stored and how the
// layer's layout of it differs from the file's.
type weightRef struct {
	tensor string // the initializer or Constant output holding it
	field  field
	layout layout
	// rows: row i of the stored tensor (along the input features of a
	// dense kernel, along the values of a vector) is row rows[i] of the
	// layer's; nil: row i.
	rows []int
	// dims of the stored tensor.
	dims []int
	// The node reading it (by its first output, unique in a graph) and
	// at which input: a layer whose weights come to differ from those of
	// the layers it shares a tensor with gets a tensor of its own there.
	node  string
	input int
}

// field is the layer slice a weight lives in.
type field int

const (
	kernel field = iota
	bias
	mean
	variance
)

// layout is how a stored weight maps onto a layer's.
type layout int

const (
	plain      layout = iota // as stored (a vector; a dense [in][out] kernel)
	convOIHW                 // a conv kernel: stored OIHW, the layer's HWIO
	denseOutIn               // a dense kernel stored [out][in] (Gemm transB)
)

// source is what a model read from an ONNX file keeps to write copies.
type source struct {
	weights map[string][]weightRef // by layer name
	// users are, for each stored tensor, the layers whose weights it
	// holds. Exporters store equal weights once (PyTorch deduplicates
	// initializers): writing one that others share would change them too.
	users map[string][]string
}

// converter turns an ONNX graph into the network's layers.
type converter struct {
	graph  *pb.GraphProto
	inits  map[string]*pb.TensorProto
	vals   map[string]*value
	uses   map[string]int       // consumers of each tensor; the graph output is one
	refs   map[*model.Layer]int // consumers of a layer's output, through any tensor
	layers []*model.Layer
	names  map[string]bool
	src    *source
	batch  int64 // the input's fixed batch size; 0 when free
}

// maxNodes bounds the graph, and maxValues what a layer outputs per
// sample: a hostile file can claim any size.
const (
	maxNodes  = 100_000
	maxValues = 1 << 26
)

// convert turns a model's graph into the network's layers, in order, and
// keeps where their weights are stored.
func convert(mp *pb.ModelProto) ([]*model.Layer, *source, error) {
	if err := checkOpsets(mp); err != nil {
		return nil, nil, err
	}
	g := mp.GetGraph()
	if len(g.GetNode()) > maxNodes {
		return nil, nil, fmt.Errorf("%d nodes: more than badprune reads (%d)", len(g.GetNode()), maxNodes)
	}
	c := &converter{graph: g, inits: map[string]*pb.TensorProto{}, vals: map[string]*value{},
		uses: map[string]int{}, refs: map[*model.Layer]int{}, names: map[string]bool{},
		src: &source{weights: map[string][]weightRef{}}}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			c.uses[in]++
		}
	}
	if len(g.GetOutput()) != 1 {
		return nil, nil, fmt.Errorf("the graph has %d outputs: only single-output models are supported", len(g.GetOutput()))
	}
	out := g.GetOutput()[0].GetName()
	c.uses[out]++
	for _, t := range g.GetInitializer() {
		tc, err := decode(t, t.GetName())
		if err != nil {
			return nil, nil, fmt.Errorf("initializer %q: %w", t.GetName(), err)
		}
		c.inits[t.GetName()] = t
		c.vals[t.GetName()] = &value{c: tc}
	}
	if err := c.input(); err != nil {
		return nil, nil, err
	}
	for _, n := range g.GetNode() {
		if err := c.node(n); err != nil {
			return nil, nil, err
		}
	}
	v := c.vals[out]
	switch {
	case v == nil:
		return nil, nil, fmt.Errorf("the graph output %q is computed by no node", out)
	case v.c != nil:
		return nil, nil, fmt.Errorf("the graph output %q is a constant", out)
	case v.image() || v.perm != nil:
		return nil, nil, fmt.Errorf("the graph output %q has shape %v: want class scores", out, v.dims)
	}
	layers := c.reaching(v.layer)
	aliases(layers)
	return layers, c.src.of(layers), nil
}

// of is s for the layers kept: weights of layers that feed nothing are
// no one's to write or share.
func (s *source) of(layers []*model.Layer) *source {
	out := &source{weights: map[string][]weightRef{}, users: map[string][]string{}}
	for _, l := range layers {
		for _, r := range s.weights[l.Name] {
			out.weights[l.Name] = append(out.weights[l.Name], r)
			out.users[r.tensor] = append(out.users[r.tensor], l.Name)
		}
	}
	return out
}

// checkOpsets accepts the standard operator set at the versions whose
// semantics the converter knows.
func checkOpsets(mp *pb.ModelProto) error {
	found := false
	for _, o := range mp.GetOpsetImport() {
		if d := o.GetDomain(); d != "" && d != "ai.onnx" {
			continue // nodes of other domains fail by name
		}
		found = true
		if v := o.GetVersion(); v < 7 || v > 21 {
			return fmt.Errorf("operator set version %d: supported are 7 to 21", v)
		}
	}
	if !found {
		return errors.New("no standard operator set imported (opset_import)")
	}
	return nil
}

// input makes the Input layer of the graph's one image input, NCHW with
// a free or fixed batch size.
func (c *converter) input() error {
	var ins []*pb.ValueInfoProto
	for _, in := range c.graph.GetInput() {
		// Old exports list the initializers among the inputs.
		if _, ok := c.inits[in.GetName()]; !ok {
			ins = append(ins, in)
		}
	}
	if len(ins) != 1 {
		return fmt.Errorf("the graph has %d inputs: only single-input models are supported", len(ins))
	}
	in := ins[0]
	tt := in.GetType().GetTensorType()
	if tt == nil {
		return fmt.Errorf("input %q is not a tensor", in.GetName())
	}
	if et := pb.TensorProto_DataType(tt.GetElemType()); et != pb.TensorProto_FLOAT {
		return fmt.Errorf("input %q holds %s: want FLOAT", in.GetName(), et)
	}
	d := tt.GetShape().GetDim()
	if len(d) != 4 {
		return fmt.Errorf("input %q has %d dimensions: want images (N, C, H, W)", in.GetName(), len(d))
	}
	shape := make([]int, 3)
	for k, dim := range d[1:] {
		v := dim.GetDimValue()
		if _, ok := dim.GetValue().(*pb.TensorShapeProto_Dimension_DimValue); !ok || v < 1 || v > 1<<16 {
			return fmt.Errorf("input %q: dimension %d is not a fixed size: want (N, C, H, W) with C, H and W fixed", in.GetName(), k+1)
		}
		shape[k] = int(v)
	}
	if product(shape) > maxValues {
		return fmt.Errorf("input %q of %dx%dx%d values per image: more than badprune reads", in.GetName(), shape[0], shape[1], shape[2])
	}
	if b, ok := d[0].GetValue().(*pb.TensorShapeProto_Dimension_DimValue); ok {
		c.batch = b.DimValue
	}
	l := &model.Layer{Name: in.GetName(), Kind: model.Input, Shape: []int{shape[1], shape[2], shape[0]}}
	if l.Name == "" {
		return errors.New("the graph input has no name")
	}
	c.names[l.Name] = true
	c.layers = append(c.layers, l)
	c.set(l.Name, &value{layer: l, dims: shape, axes: nchw})
	return nil
}

// set makes name stand for v.
func (c *converter) set(name string, v *value) {
	c.vals[name] = v
	if v.c == nil {
		c.refs[v.layer] += c.uses[name]
	}
}

// pass makes a node's output stand for the layer of its input, seen as
// v: the node computes nothing in the network (Identity, Dropout, a
// reshape the layout absorbs). Its names become the layer's aliases.
func (c *converter) pass(n *pb.NodeProto, v *value) {
	c.refs[v.layer]-- // the node is no consumer of its own
	v.layer.Aliases = append(v.layer.Aliases, n.GetName(), n.GetOutput()[0])
	c.set(n.GetOutput()[0], v)
}

// fuse reports whether the activation node n may become the activation of
// the layer of its input v: a layer that computes one (a convolution or a
// dense layer), whose output only n reads.
func (c *converter) fuse(n *pb.NodeProto, v *value) bool {
	l := v.layer
	switch l.Kind {
	case model.Conv2D, model.DepthwiseConv2D, model.Dense:
	default:
		return false
	}
	if l.Act != "linear" || c.refs[l] != 1 {
		return false
	}
	l.Aliases = append(l.Aliases, n.GetName(), n.GetOutput()[0])
	c.refs[l]--
	return true
}

// add appends layer l fed by the layers of ins, names it after the node
// (or the PyTorch module its weight belongs to), and makes the node's
// first output stand for it, seen as out (whose layer it sets). A layer
// too large to compute is an error.
func (c *converter) add(n *pb.NodeProto, l *model.Layer, weight string, out *value, ins ...*value) error {
	if product(out.dims) > maxValues {
		return c.errorf(n, "outputs (N, %s): more than %d values per sample", dimsString(out.dims), maxValues)
	}
	// PyTorch names weights after their module: conv2.weight.
	module, ok := strings.CutSuffix(weight, ".weight")
	if !ok {
		module = ""
	}
	l.Name = c.name(module, n.GetName(), n.GetOutput()[0])
	l.Aliases = append(l.Aliases, n.GetName(), n.GetOutput()[0], weight, module)
	for _, v := range ins {
		l.Inputs = append(l.Inputs, v.layer.Name)
	}
	if l.Act == "" && (l.Kind == model.Conv2D || l.Kind == model.DepthwiseConv2D || l.Kind == model.Dense) {
		l.Act = "linear" // as Keras's files say it, and what fuse looks for
	}
	c.layers = append(c.layers, l)
	out.layer = l
	c.set(n.GetOutput()[0], out)
	return nil
}

// name is the first of the candidates not yet a layer's name. Output
// names are unique in a valid graph; a numbered one makes do otherwise.
func (c *converter) name(cands ...string) string {
	for _, s := range cands {
		if s != "" && !c.names[s] {
			c.names[s] = true
			return s
		}
	}
	base := cands[len(cands)-1]
	for k := 2; ; k++ {
		if s := fmt.Sprintf("%s_%d", base, k); !c.names[s] {
			c.names[s] = true
			return s
		}
	}
}

// weight records that layer l's field is stored in t, input k of node n.
func (c *converter) weight(l *model.Layer, f field, t *tensor, lay layout, rows []int, n *pb.NodeProto, k int) {
	if t.name == "" {
		return // computed in the graph: nothing to write back to
	}
	c.src.weights[l.Name] = append(c.src.weights[l.Name], weightRef{tensor: t.name, field: f, layout: lay, rows: rows, dims: t.dims,
		node: n.GetOutput()[0], input: k})
}

// reaching returns the layers the output layer depends on, in order:
// nodes that feed nothing (a Shape of the input, say) leave layers behind
// that the network must not hold.
func (c *converter) reaching(out *model.Layer) []*model.Layer {
	byName := map[string]*model.Layer{}
	for _, l := range c.layers {
		byName[l.Name] = l
	}
	need := map[*model.Layer]bool{}
	var mark func(l *model.Layer)
	mark = func(l *model.Layer) {
		if need[l] {
			return
		}
		need[l] = true
		for _, in := range l.Inputs {
			mark(byName[in])
		}
	}
	mark(out)
	var keep []*model.Layer
	for _, l := range c.layers {
		if need[l] {
			keep = append(keep, l)
		}
	}
	return keep
}

// aliases drops the aliases that are empty, a layer's name, or claimed by
// more than one layer: an alias names one layer or none.
func aliases(layers []*model.Layer) {
	count := map[string]int{}
	for _, l := range layers {
		count[l.Name] += 2
		seen := map[string]bool{l.Name: true}
		for _, a := range l.Aliases {
			if a != "" && !seen[a] {
				seen[a] = true
				count[a]++
			}
		}
	}
	for _, l := range layers {
		var keep []string
		for _, a := range l.Aliases {
			if a != "" && a != l.Name && count[a] == 1 && !slices.Contains(keep, a) {
				keep = append(keep, a)
			}
		}
		l.Aliases = keep
	}
}

// node converts one node: constants are computed; the rest become layers
// or change how a layer's output is seen.
func (c *converter) node(n *pb.NodeProto) error {
	if len(n.GetOutput()) == 0 {
		return &NodeError{Node: n.GetName(), Op: n.GetOpType(), Problem: "has no output"}
	}
	if d := n.GetDomain(); d != "" && d != "ai.onnx" {
		return c.errorf(n, "operator domain %q: not supported", d)
	}
	for k, out := range n.GetOutput()[1:] {
		if out != "" && c.uses[out] > 0 {
			return c.errorf(n, "output %d (%q) is used: not supported", k+1, out)
		}
	}
	if allConst(c, n) {
		if f, ok := folds[n.GetOpType()]; ok {
			t, err := f(c, n)
			if err != nil {
				return c.errorf(n, "%v", err)
			}
			c.vals[n.GetOutput()[0]] = &value{c: t}
			return nil
		}
	}
	h, ok := ops[n.GetOpType()]
	if !ok {
		return c.errorf(n, "not supported")
	}
	return h(c, n)
}

// allConst reports whether every input of n is a constant.
func allConst(c *converter, n *pb.NodeProto) bool {
	for _, in := range n.GetInput() {
		if v := c.vals[in]; in != "" && (v == nil || v.c == nil) {
			return false
		}
	}
	return true
}

func (c *converter) errorf(n *pb.NodeProto, format string, a ...any) error {
	return &NodeError{Node: n.GetName(), Output: n.GetOutput()[0], Op: n.GetOpType(), Problem: fmt.Sprintf(format, a...)}
}

// arg returns the k-th input of n, nil when absent (an optional input).
func (c *converter) arg(n *pb.NodeProto, k int) (*value, error) {
	ins := n.GetInput()
	if k >= len(ins) || ins[k] == "" {
		return nil, nil
	}
	v := c.vals[ins[k]]
	if v == nil {
		return nil, c.errorf(n, "input %q is computed by no earlier node", ins[k])
	}
	return v, nil
}

// present returns the k-th input of n, which must not be absent.
func (c *converter) present(n *pb.NodeProto, k int) (*value, error) {
	v, err := c.arg(n, k)
	if err == nil && v == nil {
		err = c.errorf(n, "input %d is missing", k)
	}
	return v, err
}

// net returns the k-th input of n, which must be a network tensor.
func (c *converter) net(n *pb.NodeProto, k int) (*value, error) {
	v, err := c.present(n, k)
	switch {
	case err != nil:
		return nil, err
	case v.c != nil:
		return nil, c.errorf(n, "input %d is a constant where the network's data is expected: not supported", k)
	case v.final:
		return nil, c.errorf(n, "reads the output of the model's softmax: a softmax is supported only at the end")
	}
	return v, nil
}

// img returns the k-th input of n, which must be an image in ONNX's NCHW
// layout.
func (c *converter) img(n *pb.NodeProto, k int) (*value, error) {
	v, err := c.net(n, k)
	if err != nil {
		return nil, err
	}
	if !v.image() {
		return nil, c.errorf(n, "input of shape %v is not an image (N, C, H, W)", v.dims)
	}
	if !slices.Equal(v.axes, nchw) {
		return nil, c.errorf(n, "input is a transposed image (axes %v of NHWC): not supported", v.axes)
	}
	return v, nil
}

// vec returns the k-th input of n, which must be a (N, D) tensor.
func (c *converter) vec(n *pb.NodeProto, k int) (*value, error) {
	v, err := c.net(n, k)
	if err != nil {
		return nil, err
	}
	if v.image() || v.units() > 0 {
		return nil, c.errorf(n, "input of shape (N, %s) is not a (N, D) matrix", dimsString(v.dims))
	}
	return v, nil
}

// cst returns the k-th input of n, which must be a constant.
func (c *converter) cst(n *pb.NodeProto, k int) (*tensor, error) {
	v, err := c.present(n, k)
	if err == nil && v.c == nil {
		err = c.errorf(n, "input %d is computed from the network's data where a constant is expected: not supported", k)
	}
	if err != nil {
		return nil, err
	}
	return v.c, nil
}

// inputs2 returns the first two inputs of n, read by first and second.
func inputs2[A, B any](n *pb.NodeProto, first func(*pb.NodeProto, int) (A, error), second func(*pb.NodeProto, int) (B, error)) (a A, b B, err error) {
	if a, err = first(n, 0); err != nil {
		return a, b, err
	}
	b, err = second(n, 1)
	return a, b, err
}

// param returns the k-th input of n as weights: finite floating-point
// constants of the given shape.
func (c *converter) param(n *pb.NodeProto, k int, what string, dims ...int) (*tensor, error) {
	t, err := c.cst(n, k)
	if err != nil {
		return nil, err
	}
	if !t.float {
		return nil, c.errorf(n, "%s %q holds integers, want floating-point weights", what, t.name)
	}
	if dims != nil && !slices.Equal(t.dims, dims) {
		return nil, c.errorf(n, "%s %q has shape %v, want %v", what, t.name, t.dims, dims)
	}
	for i, x := range t.f {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, c.errorf(n, "%s %q: non-finite value at index %d", what, t.name, i)
		}
	}
	return t, nil
}

func dimsString(d []int) string {
	s := make([]string, len(d))
	for k, v := range d {
		s[k] = fmt.Sprint(v)
	}
	return strings.Join(s, ", ")
}

// attrs are a node's attributes by name.
type attrs map[string]*pb.AttributeProto

func attrsOf(n *pb.NodeProto) attrs {
	a := attrs{}
	for _, at := range n.GetAttribute() {
		a[at.GetName()] = at
	}
	return a
}

func (a attrs) int(name string, def int64) int64 {
	if at, ok := a[name]; ok {
		return at.GetI()
	}
	return def
}

func (a attrs) float(name string, def float32) float32 {
	if at, ok := a[name]; ok {
		return at.GetF()
	}
	return def
}

func (a attrs) ints(name string) []int64 {
	if at, ok := a[name]; ok {
		return at.GetInts()
	}
	return nil
}

func (a attrs) str(name, def string) string {
	if at, ok := a[name]; ok {
		return string(at.GetS())
	}
	return def
}
