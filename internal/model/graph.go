package model

import (
	"errors"
	"fmt"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/hugemem"
	"badprune/internal/kernels"
	"badprune/internal/nn"
)

// Graph is a model built as a gorgonia expression graph for a fixed batch
// size. Inputs are NHWC float32 images; the model's last layer yields
// logits (softmax is monotone and left out).
type Graph struct {
	Batch int
	G     *G.ExprGraph
	X     *G.Node            // the input batch (Batch, H, W, C)
	Nodes map[string]*G.Node // layer outputs built in the graph
	// Params are the weight nodes of Conv2D, Dense, DepthwiseConv2D and
	// SeparableConv2D (its pointwise kernel) layers, by layer name:
	// {kernel, bias}.
	Params map[string][2]*G.Node

	xBuf  []float32
	feeds map[string][]float32
}

// GraphOptions choose what Build makes.
type GraphOptions struct {
	Batch int
	// Outputs are the layers whose outputs are wanted; none means the
	// model's logits. Only what they depend on is built.
	Outputs []string
	// Feeds are layers whose outputs are given instead of computed, so
	// that the graph computes what follows them (Runner.Feed); the model's
	// input is then needed only if an output depends on it otherwise.
	Feeds []string
	// Train builds every layer unfused with differentiable ops.
	// BatchNormalization is frozen: it normalizes with its moving
	// statistics, and its weights are constants.
	Train bool
}

// Build makes the gorgonia graph of m. A Conv2D whose only consumer is a
// 2x2/2 max pool is fused with it (and with its ReLU), so the unpooled
// activations never reach memory (with Train only a rectified one, which
// keeps its windows' arg-max for its gradient). Unless Train is set, a
// BatchNormalization that is the only consumer of a linear convolution is
// folded into its kernel and bias. Folded weights are computed here: a
// change to the model's weights needs a new graph.
func (m *Model) Build(opt GraphOptions) (*Graph, error) {
	if opt.Batch < 1 {
		return nil, fmt.Errorf("batch size %d", opt.Batch)
	}
	outs := opt.Outputs
	if len(outs) == 0 {
		outs = []string{m.Output.Name}
	}
	need := map[string]bool{}
	var mark func(name string) error
	mark = func(name string) error {
		l := m.Layer(name)
		if l == nil {
			return fmt.Errorf("no layer %q", name)
		}
		if need[name] {
			return nil
		}
		need[name] = true
		if slices.Contains(opt.Feeds, name) {
			return nil
		}
		for _, in := range l.Inputs {
			if err := mark(in); err != nil {
				return err
			}
		}
		return nil
	}
	for _, o := range outs {
		if err := mark(o); err != nil {
			return nil, err
		}
	}
	gr := &Graph{Batch: opt.Batch, G: G.NewGraph(), Nodes: map[string]*G.Node{}, Params: map[string][2]*G.Node{},
		feeds: map[string][]float32{}}
	for _, name := range opt.Feeds {
		l := m.Layer(name)
		if l == nil {
			return nil, fmt.Errorf("no layer %q", name)
		}
		if !need[name] {
			continue
		}
		shape := append([]int{opt.Batch}, l.Shape...)
		buf := hugemem.Make[float32](opt.Batch * l.Size())
		gr.feeds[name] = buf
		gr.Nodes[name] = gr.tensor("feed/"+name, buf, shape...)
	}
	if need[m.Input.Name] && gr.feeds[m.Input.Name] == nil {
		h, w, c := m.InputShape()
		gr.xBuf = hugemem.Make[float32](opt.Batch * h * w * c)
		gr.X = gr.tensor("input", gr.xBuf, opt.Batch, h, w, c)
	}

	fused := map[string]bool{}  // conv layers folded into their pool
	folded := map[string]bool{} // convolutions a BatchNormalization is folded into
	if opt.Train {
		// A rectified Conv2D under a 2x2 max pool trains as one op that
		// keeps its windows' arg-max (nn.ConvPoolTrain).
		for _, l := range m.Layers {
			if l.Kind != Conv2D || !need[l.Name] || gr.feeds[l.Name] != nil || slices.Contains(outs, l.Name) || !gr.plainReLU(m, l) {
				continue
			}
			if cons := m.Consumers(l.Name); len(cons) == 1 && need[cons[0].Name] && isPool2x2(cons[0]) {
				fused[l.Name] = true
			}
		}
	} else {
		for _, l := range m.Layers {
			if !l.convLike() || !need[l.Name] || gr.feeds[l.Name] != nil || slices.Contains(outs, l.Name) {
				continue
			}
			cons := m.Consumers(l.Name)
			switch {
			case len(cons) != 1 || !need[cons[0].Name]:
			case l.Kind == Conv2D && isPool2x2(cons[0]):
				fused[l.Name] = true
			case cons[0].Kind == BatchNorm && m.Applied(l) == "linear":
				folded[l.Name] = true
			}
		}
	}
	for _, l := range m.Layers {
		if !need[l.Name] || fused[l.Name] || folded[l.Name] || gr.feeds[l.Name] != nil {
			continue
		}
		n, err := gr.layer(m, l, fused, folded, opt.Train)
		if err != nil {
			return nil, fmt.Errorf("layer %q (%s): %w", l.Name, l.KerasClass(), err)
		}
		gr.Nodes[l.Name] = n
	}
	return gr, nil
}

func isPool2x2(l *Layer) bool {
	return l.Kind == MaxPool && l.KH == 2 && l.KW == 2 && l.SH == 2 && l.SW == 2 && !l.Same
}

func (gr *Graph) params(l *Layer) (k, b *G.Node) {
	if p, ok := gr.Params[l.Name]; ok {
		return p[0], p[1]
	}
	bias := l.Bias
	if bias == nil {
		bias = make([]float32, l.Channels())
	}
	// The graph reads the layer's own slices: a change to the model's
	// weights is seen by the next run, and training writes them back.
	k, b = gr.tensor(l.Name+"/kernel", l.Kernel, l.KernelShape...), gr.tensor(l.Name+"/bias", bias, len(bias))
	gr.Params[l.Name] = [2]*G.Node{k, b}
	return k, b
}

// tensor is a node holding v (not copied) in the given shape: a weight,
// a fed buffer, or a constant.
func (gr *Graph) tensor(name string, v []float32, shape ...int) *G.Node {
	return G.NewTensor(gr.G, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))))
}

// foldedParams are the kernel and bias of convolution l with the
// BatchNormalization bn that follows it folded in: bn(conv(x)) is
// conv(x) with each output channel's weights times a and its bias times a
// plus b (Layer.Affine).
func (gr *Graph) foldedParams(l, bn *Layer) (k, b *G.Node) {
	a, sh := bn.Affine()
	oc := len(a)
	kernel := make([]float32, len(l.Kernel))
	for i, v := range l.Kernel {
		kernel[i] = float32(float64(v) * a[i%oc])
	}
	bias := make([]float32, oc)
	for c := range bias {
		bias[c] = float32(sh[c])
		if l.Bias != nil {
			bias[c] = float32(float64(l.Bias[c])*a[c] + sh[c])
		}
	}
	return gr.tensor(l.Name+"/folded_kernel", kernel, l.KernelShape...), gr.tensor(l.Name+"/folded_bias", bias, oc)
}

func (gr *Graph) in(l *Layer, i int) *G.Node {
	if l.Inputs[i] == "" {
		return gr.X
	}
	return gr.Nodes[l.Inputs[i]]
}

func (gr *Graph) layer(m *Model, l *Layer, fused, folded map[string]bool, train bool) (*G.Node, error) {
	x := func() *G.Node { return gr.in(l, 0) }
	switch l.Kind {
	case Input:
		return gr.X, nil
	case Conv2D:
		k, b := gr.params(l)
		return gr.conv(m, l, x(), k, b, false)
	case SeparableConv2D, DepthwiseConv2D:
		return gr.depthwise(m, l, x(), false, train)
	case BatchNorm:
		src := m.Layer(l.Inputs[0])
		if !folded[src.Name] {
			return gr.affine(l, x())
		}
		k, b := gr.foldedParams(src, l)
		if src.Kind == Conv2D {
			return gr.conv(m, src, gr.in(src, 0), k, b, false)
		}
		return gr.depthwise(m, src, gr.in(src, 0), true, train, k, b)
	case Rescaling:
		return gr.affine(l, x())
	case MaxPool:
		src := m.Layer(l.Inputs[0])
		if fused[src.Name] {
			k, b := gr.params(src)
			if train {
				return nn.ConvPoolTrain(gr.in(src, 0), k, b, gr.spec(m, src))
			}
			return gr.conv(m, src, gr.in(src, 0), k, b, true)
		}
		return nn.MaxPool(x(), gr.window(m, l).Pool, l.Shape[0], l.Shape[1])
	case AvgPool:
		return nn.AvgPool(x(), gr.window(m, l))
	case GlobalAvgPool, GlobalMaxPool:
		p, err := nn.GlobalPool(x(), l.Kind == GlobalMaxPool)
		if err != nil || !l.KeepDims {
			return p, err
		}
		return G.Reshape(p, tensor.Shape{gr.Batch, 1, 1, l.Channels()})
	case ZeroPad:
		return nn.Pad(x(), l.Pad[0], l.Pad[1], l.Pad[2], l.Pad[3])
	case Flatten:
		return G.Reshape(x(), tensor.Shape{gr.Batch, l.Size()})
	case Dense:
		k, b := gr.params(l)
		fuse := gr.plainReLU(m, l) && !train
		var d *G.Node
		var err error
		if train {
			d, err = nn.DenseTrain(x(), k, b)
		} else {
			d, err = nn.Dense(x(), k, b, fuse)
		}
		if err != nil || fuse {
			return d, err
		}
		return gr.activate(m, l, d)
	case Add:
		sum := x()
		for i := 1; i < len(l.Inputs); i++ {
			var err error
			if sum, err = G.Add(sum, gr.in(l, i)); err != nil {
				return nil, err
			}
		}
		return sum, nil
	case Concat:
		var xs []*G.Node
		for i := range l.Inputs {
			xs = append(xs, gr.in(l, i))
		}
		return nn.Concat(xs...)
	case Activation, ReLU, LeakyReLU, ELU, Softmax:
		return gr.activate(m, l, x())
	case Dropout, Identity:
		return x(), nil
	}
	return nil, fmt.Errorf("unsupported layer type %q", l.Kind)
}

// plainReLU reports whether l's activation is Keras's relu without a
// slope, cap or threshold: what the conv and dense kernels fuse.
func (gr *Graph) plainReLU(m *Model, l *Layer) bool {
	return m.Applied(l) == "relu" && l.Alpha == 0 && l.MaxValue == 0 && l.Threshold == 0
}

// activate applies l's activation (Model.Applied) to n.
func (gr *Graph) activate(m *Model, l *Layer, n *G.Node) (*G.Node, error) {
	switch {
	case m.Applied(l) == "linear":
		return n, nil
	case gr.plainReLU(m, l):
		return nn.ReLU(n)
	}
	return nn.Apply(n, nn.Act{Name: m.Applied(l), Alpha: l.Alpha, MaxValue: l.MaxValue, Threshold: l.Threshold})
}

// affine applies a BatchNormalization or Rescaling layer as x·a + b.
func (gr *Graph) affine(l *Layer, x *G.Node) (*G.Node, error) {
	a, b := l.Affine()
	a32, b32 := make([]float32, len(a)), make([]float32, len(b))
	for i := range a {
		a32[i], b32[i] = float32(a[i]), float32(b[i])
	}
	return nn.Affine(x, gr.tensor(l.Name+"/scale", a32, len(a)), gr.tensor(l.Name+"/shift", b32, len(b)))
}

// window is a pooling layer's window, with TensorFlow's "same" padding.
func (gr *Graph) window(m *Model, l *Layer) nn.Window {
	s := m.Layer(l.Inputs[0]).Shape
	p := kernels.Pool{PH: l.KH, PW: l.KW, SH: l.SH, SW: l.SW}
	if l.Same {
		p.PadT, _, p.PadL, _ = SamePad(s[0], s[1], l.KH, l.KW, l.SH, l.SW)
	}
	return nn.Window{Pool: p, OH: l.Shape[0], OW: l.Shape[1]}
}

// spec is a convolution's geometry: strides and "same" padding.
func (gr *Graph) spec(m *Model, l *Layer) nn.ConvSpec {
	spec := nn.ConvSpec{SH: l.SH, SW: l.SW}
	if l.Same {
		s := m.Layer(l.Inputs[0]).Shape
		spec.PadT, spec.PadB, spec.PadL, spec.PadR = SamePad(s[0], s[1], l.KH, l.KW, l.SH, l.SW)
	}
	return spec
}

// conv applies Conv2D l with kernel k and bias b, fused with a plain ReLU
// and, when pool is set (inference), a 2x2 max pool.
func (gr *Graph) conv(m *Model, l *Layer, x, k, b *G.Node, pool bool) (*G.Node, error) {
	spec := gr.spec(m, l)
	spec.Pool = pool
	spec.ReLU = gr.plainReLU(m, l)
	c, err := nn.Conv(x, k, b, spec)
	if err != nil || spec.ReLU {
		return c, err
	}
	return gr.activate(m, l, c)
}

// depthwise applies a DepthwiseConv2D, or a SeparableConv2D (its
// depthwise kernel, then its pointwise one as a 1x1 Conv2D). folded uses
// the kernel and bias kb, a BatchNormalization folded in, in place of the
// layer's (the depthwise kernel's for DepthwiseConv2D, the pointwise
// one's for SeparableConv2D). SeparableConv2D's depthwise kernel is a
// constant: fine-tuning trains the weights B' files carry, the pointwise
// kernel and the bias.
func (gr *Graph) depthwise(m *Model, l *Layer, x *G.Node, folded, train bool, kb ...*G.Node) (*G.Node, error) {
	var k, b *G.Node
	if folded {
		k, b = kb[0], kb[1]
	} else {
		k, b = gr.params(l)
	}
	if l.Kind == DepthwiseConv2D {
		d, err := nn.Depthwise(x, k, b, gr.spec(m, l))
		if err != nil {
			return nil, err
		}
		return gr.activate(m, l, d)
	}
	ds := l.DepthwiseShape
	zero := make([]float32, ds[2]*ds[3])
	d, err := nn.Depthwise(x, gr.tensor(l.Name+"/depthwise_kernel", l.Depthwise, ds...), gr.tensor(l.Name+"/depthwise_bias", zero, len(zero)), gr.spec(m, l))
	if err != nil {
		return nil, err
	}
	spec := nn.ConvSpec{SH: 1, SW: 1, ReLU: gr.plainReLU(m, l) && !train}
	c, err := nn.Conv(d, k, b, spec)
	if err != nil || spec.ReLU {
		return c, err
	}
	return gr.activate(m, l, c)
}

// Runner executes a Graph on batches of images.
type Runner struct {
	gr   *Graph
	vm   G.VM
	outs []*G.Value
}

// NewRunner prepares gr to yield the outputs of the named layers; make one
// runner per graph.
func (gr *Graph) NewRunner(outputs ...string) (*Runner, error) {
	r := &Runner{gr: gr}
	for _, o := range outputs {
		n, ok := gr.Nodes[o]
		if !ok {
			return nil, fmt.Errorf("layer %q is not in the graph", o)
		}
		// The machine reuses a node's memory once its consumers have run;
		// a read copies the value out as soon as it is computed.
		v := new(G.Value)
		G.Read(n, v)
		r.outs = append(r.outs, v)
	}
	// Runs reuse the ops' outputs instead of allocating them anew (the
	// reads above copy what the caller gets).
	nn.KeepOutputs(gr.G)
	r.vm = G.NewTapeMachine(gr.G)
	return r, nil
}

// Input is the batch buffer: Batch*H*W*C NHWC values to fill before Run
// (nil when the graph does not read the model's input).
func (r *Runner) Input() []float32 { return r.gr.xBuf }

// Bind makes x (a whole batch of NHWC images) the input of the next runs
// in place of Input, which nil restores: a caller holding a batch in its
// own memory saves copying it. x must not change while a run reads it.
func (r *Runner) Bind(x []float32) error {
	if r.gr.X == nil {
		return errors.New("the graph does not read the model's input")
	}
	if x == nil {
		x = r.gr.xBuf
	}
	if len(x) != len(r.gr.xBuf) {
		return fmt.Errorf("input of %d values for a batch of %d", len(x), len(r.gr.xBuf))
	}
	return G.Let(r.gr.X, tensor.New(tensor.WithShape(r.gr.X.Shape()...), tensor.WithBacking(x)))
}

// Feed is the buffer of a layer given by GraphOptions.Feeds: Batch rows of
// the layer's output to fill before Run (nil when no output needs it).
func (r *Runner) Feed(layer string) []float32 { return r.gr.feeds[layer] }

// Run executes the graph on the images in Input and returns each wanted
// output as Batch rows; the slices are reused by the next Run.
func (r *Runner) Run() ([][]float32, error) {
	if err := r.vm.RunAll(); err != nil {
		return nil, err
	}
	res := make([][]float32, len(r.outs))
	for i, p := range r.outs {
		t, ok := (*p).(tensor.Tensor)
		if !ok {
			return nil, fmt.Errorf("output %d is not a tensor", i)
		}
		v, ok := t.Data().([]float32)
		if !ok {
			return nil, fmt.Errorf("output %d is not float32", i)
		}
		res[i] = v
	}
	r.vm.Reset()
	return res, nil
}

// SetSerial makes the next runs compute on the calling goroutine alone
// (on) or spread over the cores.
func (r *Runner) SetSerial(on bool) { nn.SetSerial(r.gr.G, on) }

// Close releases the machine.
func (r *Runner) Close() { r.vm.Close() }
