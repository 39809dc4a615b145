package model

import (
	"fmt"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

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
	// Params are the weight nodes of Conv2D and Dense layers, by layer name:
	// {kernel, bias}.
	Params map[string][2]*G.Node

	xBuf []float32
}

// GraphOptions choose what Build makes.
type GraphOptions struct {
	Batch int
	// Outputs are the layers whose outputs are wanted; none means the
	// model's logits. Only what they depend on is built.
	Outputs []string
	// Train builds every layer unfused with differentiable ops.
	Train bool
}

// Build makes the gorgonia graph of m. Unless Train is set, a Conv2D whose
// only consumer is a 2x2/2 max pool is fused with it (and with its ReLU), so
// the unpooled activations never reach memory.
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
	h, w, c := m.InputShape()
	gr := &Graph{Batch: opt.Batch, G: G.NewGraph(), Nodes: map[string]*G.Node{}, Params: map[string][2]*G.Node{}}
	gr.xBuf = make([]float32, opt.Batch*h*w*c)
	gr.X = G.NewTensor(gr.G, tensor.Float32, 4, G.WithShape(opt.Batch, h, w, c), G.WithName("input"),
		G.WithValue(tensor.New(tensor.WithShape(opt.Batch, h, w, c), tensor.WithBacking(gr.xBuf))))

	fused := map[string]bool{} // conv layers folded into their pool
	if !opt.Train {
		for _, l := range m.Layers {
			if l.Kind != Conv2D || !need[l.Name] || slices.Contains(outs, l.Name) {
				continue
			}
			cons := m.Consumers(l.Name)
			if len(cons) == 1 && isPool2x2(cons[0]) && need[cons[0].Name] {
				fused[l.Name] = true
			}
		}
	}
	for _, l := range m.Layers {
		if !need[l.Name] || fused[l.Name] {
			continue
		}
		n, err := gr.layer(m, l, fused, opt.Train)
		if err != nil {
			return nil, fmt.Errorf("layer %q: %w", l.Name, err)
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
	oc := l.KernelShape[len(l.KernelShape)-1]
	bias := l.Bias
	if bias == nil {
		bias = make([]float32, oc)
	}
	// The graph reads the layer's own slices: a change to the model's
	// weights is seen by the next run, and training writes them back.
	k = G.NewTensor(gr.G, tensor.Float32, len(l.KernelShape), G.WithShape(l.KernelShape...),
		G.WithName(l.Name+"/kernel"), G.WithValue(tensor.New(tensor.WithShape(l.KernelShape...), tensor.WithBacking(l.Kernel))))
	b = G.NewTensor(gr.G, tensor.Float32, 1, G.WithShape(oc), G.WithName(l.Name+"/bias"),
		G.WithValue(tensor.New(tensor.WithShape(oc), tensor.WithBacking(bias))))
	gr.Params[l.Name] = [2]*G.Node{k, b}
	return k, b
}

func (gr *Graph) in(l *Layer, i int) *G.Node {
	if l.Inputs[i] == "" {
		return gr.X
	}
	return gr.Nodes[l.Inputs[i]]
}

func (gr *Graph) layer(m *Model, l *Layer, fused map[string]bool, train bool) (*G.Node, error) {
	switch l.Kind {
	case Input:
		return gr.X, nil
	case Conv2D:
		return gr.conv(m, l, gr.in(l, 0), false, train)
	case MaxPool:
		src := m.Layer(l.Inputs[0])
		if fused[src.Name] {
			return gr.conv(m, src, gr.in(src, 0), true, false)
		}
		s := m.Layer(l.Inputs[0]).Shape
		p := kernels.Pool{PH: l.KH, PW: l.KW, SH: l.SH, SW: l.SW}
		if l.Same {
			p.PadT, _, p.PadL, _ = SamePad(s[0], s[1], l.KH, l.KW, l.SH, l.SW)
		}
		return nn.MaxPool(gr.in(l, 0), p, l.Shape[0], l.Shape[1])
	case Flatten:
		return G.Reshape(gr.in(l, 0), tensor.Shape{gr.Batch, l.Size()})
	case Dense:
		k, b := gr.params(l)
		relu := l.Act == "relu"
		d, err := nn.Dense(gr.in(l, 0), k, b, relu && !train)
		if err != nil || !relu || !train {
			return d, err
		}
		return nn.ReLU(d)
	case Add:
		sum := gr.in(l, 0)
		for i := 1; i < len(l.Inputs); i++ {
			var err error
			if sum, err = G.Add(sum, gr.in(l, i)); err != nil {
				return nil, err
			}
		}
		return sum, nil
	case Activation:
		if l.Act == "relu" {
			return nn.ReLU(gr.in(l, 0))
		}
		return gr.in(l, 0), nil // linear, or the final softmax: logits
	case Dropout:
		return gr.in(l, 0), nil
	}
	return nil, fmt.Errorf("unsupported layer type %q", l.Kind)
}

func (gr *Graph) conv(m *Model, l *Layer, x *G.Node, pool, train bool) (*G.Node, error) {
	k, b := gr.params(l)
	spec := nn.ConvSpec{SH: l.SH, SW: l.SW, Pool: pool}
	if l.Same {
		s := m.Layer(l.Inputs[0]).Shape
		spec.PadT, spec.PadB, spec.PadL, spec.PadR = SamePad(s[0], s[1], l.KH, l.KW, l.SH, l.SW)
	}
	relu := l.Act == "relu"
	spec.ReLU = relu && !train
	c, err := nn.Conv(x, k, b, spec)
	if err != nil || !relu || !train {
		return c, err
	}
	return nn.ReLU(c)
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
	r.vm = G.NewTapeMachine(gr.G)
	return r, nil
}

// Input is the batch buffer: Batch*H*W*C NHWC values to fill before Run.
func (r *Runner) Input() []float32 { return r.gr.xBuf }

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

// Close releases the machine.
func (r *Runner) Close() { r.vm.Close() }
