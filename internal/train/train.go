// Package train fits a model's weights by minibatch gradient descent on the
// softmax cross-entropy, with gorgonia's symbolic differentiation over the
// same graph code inference uses. Channels can be held at zero (pruned
// channels stay pruned while fine-tuning).
//
// The weights trained are the kernels and biases of Conv2D, Dense and
// DepthwiseConv2D layers and SeparableConv2D's pointwise kernel and bias:
// those a repaired file carries. BatchNormalization is frozen, normalizing
// with its moving statistics as at inference, and its gamma and beta stay
// as they are: batch statistics of the few hundred clean images
// Fine-Pruning fine-tunes on would be noisy, and a pruned channel's zeroed
// gamma and beta keep its output zero. This is what Keras does for a
// BatchNormalization layer that is not trainable.
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"badprune/internal/infer"
	"badprune/internal/model"
	"badprune/internal/nn"
	"badprune/internal/workpool"
)

// Data is a labelled set in memory, NHWC: its values X, or its pixels X8
// and the value LUT[c*256+b] of pixel b in channel c (a quarter of the
// memory). With Idx it is the samples Idx of the images and Labels, in that
// order, without copying them (Fit only).
type Data struct {
	X      []float32
	X8     []uint8
	LUT    []float32
	Labels []int
	Idx    []int
}

// Accuracy is m's accuracy on d (without Idx), percent.
func (d Data) Accuracy(m *model.Model) (float64, error) {
	if d.Idx != nil {
		return 0, errors.New("train: accuracy of a set with Idx")
	}
	if d.X8 == nil {
		return infer.Accuracy(m, d.X, d.Labels)
	}
	h, w, c := m.InputShape()
	sz := h * w * c
	return infer.AccuracyOf(m, d.Labels, func(i int, dst []float32) { d.Image(i, sz, dst) })
}

// Values is every stored image's values: X, or X8 through the table.
func (d Data) Values() []float32 {
	if d.X8 == nil || len(d.Labels) == 0 {
		return d.X
	}
	sz := len(d.X8) / len(d.Labels)
	x := make([]float32, len(d.X8))
	for i := range d.Labels {
		d.Image(i, sz, x[i*sz:(i+1)*sz])
	}
	return x
}

// Image writes the values of stored sample i (not through Idx), sz of
// them, into dst.
func (d Data) Image(i, sz int, dst []float32) {
	if d.X8 == nil {
		copy(dst[:sz], d.X[i*sz:(i+1)*sz])
		return
	}
	src, lut, c := d.X8[i*sz:(i+1)*sz], d.LUT, len(d.LUT)/256
	dst = dst[:sz]
	if c == 3 { // RGB, the usual case, without the inner loop
		lut = lut[:3*256]
		for k := 0; k+2 < sz; k += 3 {
			dst[k] = lut[src[k]]
			dst[k+1] = lut[256+int(src[k+1])]
			dst[k+2] = lut[512+int(src[k+2])]
		}
		return
	}
	for k := 0; k < sz; k += c {
		for j := range c {
			dst[k+j] = lut[j<<8|int(src[k+j])]
		}
	}
}

// N is the number of samples.
func (d Data) N() int {
	if d.Idx != nil {
		return len(d.Idx)
	}
	return len(d.Labels)
}

// Options configure Fit.
type Options struct {
	Epochs    int
	Batch     int
	LR        float64
	Optimizer string // "adam" (default) or "momentum" (SGD, momentum 0.9)
	// L2 is weight decay: Adam adds L2·w to every gradient; momentum, as
	// gorgonia's Momentum does, adds L2 times the velocity (0: none).
	L2 float64
	// Cosine lowers the learning rate along a half cosine from LR in the
	// first epoch towards zero in the last (a fresh optimizer each epoch).
	Cosine bool
	Seed   uint64 // shuffling order
	// Masks holds output channels of Conv2D or Dense layers whose weights
	// stay zero: their gradients are dropped and the weights re-zeroed
	// after every step.
	Masks map[string][]int
	// OnEpoch, if set, is called after each epoch with its mean training
	// loss; returning Stop ends training, another error aborts it.
	OnEpoch func(epoch int, loss float64) error
}

// Stop ends training early when OnEpoch returns it.
var Stop = errors.New("stop training")

// Trainer holds a model's training graph.
type Trainer struct {
	m      *model.Model
	opt    Options
	gr     *model.Graph
	run    *G.ExprGraph // the part of gr.G the machine runs
	y      *G.Node
	yBuf   []float32
	loss   *G.Node
	params G.Nodes
	vm     G.VM
	solver solver
	ps     []param // the weights and gradients of params, for solver
	masks  []mask
}

type mask struct {
	kernel, bias []float32 // the layer's weights (the graph reads them)
	oc           int
	channels     []int
}

// New builds the training graph of m; Fit then changes m's weights in
// place.
func New(m *model.Model, opt Options) (*Trainer, error) {
	if opt.Batch < 1 || opt.Epochs < 0 || !(opt.LR > 0) {
		return nil, fmt.Errorf("train: batch %d, epochs %d, learning rate %v", opt.Batch, opt.Epochs, opt.LR)
	}
	gr, err := m.Build(model.GraphOptions{Batch: opt.Batch, Train: true})
	if err != nil {
		return nil, err
	}
	t := &Trainer{m: m, opt: opt, gr: gr}
	k := m.Classes
	t.yBuf = make([]float32, opt.Batch*k)
	t.y = G.NewTensor(gr.G, tensor.Float32, 2, G.WithShape(opt.Batch, k), G.WithName("targets"),
		G.WithValue(tensor.New(tensor.WithShape(opt.Batch, k), tensor.WithBacking(t.yBuf))))
	logits := gr.Nodes[m.Output.Name]
	if t.loss, err = nn.SoftmaxCrossEntropy(logits, t.y); err != nil {
		return nil, err
	}
	for _, l := range m.Layers {
		if p, ok := gr.Params[l.Name]; ok {
			t.params = append(t.params, p[0])
			if l.Bias != nil { // a layer without bias (use_bias false) keeps none
				t.params = append(t.params, p[1])
			}
		}
	}
	grads, err := G.Grad(t.loss, t.params...)
	if err != nil {
		return nil, fmt.Errorf("train: no gradient through the network: %w", err)
	}
	nn.KeepOutputs(gr.G)
	for name, chans := range opt.Masks {
		l := m.Layer(name)
		if l == nil || (l.Kind != model.Conv2D && l.Kind != model.SeparableConv2D && l.Kind != model.Dense) {
			return nil, fmt.Errorf("train: cannot hold channels of %q", name)
		}
		oc := l.KernelShape[len(l.KernelShape)-1]
		p := gr.Params[name]
		mk := mask{kernel: p[0].Value().Data().([]float32), bias: p[1].Value().Data().([]float32), oc: oc, channels: chans}
		for _, c := range chans {
			if c < 0 || c >= oc {
				return nil, fmt.Errorf("train: %q has no channel %d", name, c)
			}
		}
		t.masks = append(t.masks, mk)
	}
	// The machine runs only what the loss and the weights' gradients need:
	// G.Grad also derives the gradient of every op's every input, the
	// images' included, a seventh of a step on the lab's B.
	t.run = gr.G.ExactSubgraphRoots(append(G.Nodes{t.loss}, grads...)...)
	t.vm = G.NewTapeMachine(t.run, G.BindDualValues(t.params...))
	if t.solver, err = newSolver(opt, opt.LR); err != nil {
		return nil, err
	}
	t.zeroMasked()
	return t, nil
}

// newSolver returns the optimizer opt names, with learning rate lr: a fresh
// one, without moments.
func newSolver(opt Options, lr float64) (solver, error) {
	switch opt.Optimizer {
	case "", "adam":
		return newAdam(lr, opt.L2), nil
	case "momentum":
		return newMomentum(lr, opt.L2, 0.9), nil
	}
	return nil, fmt.Errorf("train: unknown optimizer %q", opt.Optimizer)
}

// Close releases the machine.
func (t *Trainer) Close() { t.vm.Close() }

func (t *Trainer) zeroMasked() {
	for _, mk := range t.masks {
		for _, c := range mk.channels {
			for i := c; i < len(mk.kernel); i += mk.oc {
				mk.kernel[i] = 0
			}
			mk.bias[c] = 0
		}
	}
}

// dropMaskedGrads zeroes the gradients of held channels.
func (t *Trainer) dropMaskedGrads() error {
	for _, mk := range t.masks {
		for _, p := range t.params {
			v := p.Value().Data().([]float32)
			if &v[0] != &mk.kernel[0] && &v[0] != &mk.bias[0] {
				continue
			}
			g, err := p.Grad()
			if err != nil {
				return err
			}
			gd := g.Data().([]float32)
			oc := mk.oc
			for _, c := range mk.channels {
				for i := c; i < len(gd); i += oc {
					gd[i] = 0
				}
			}
		}
	}
	return nil
}

// input is the graph's input batch.
func (t *Trainer) input() []float32 { return t.gr.X.Value().Data().([]float32) }

// Step trains on one batch (exactly Batch samples of x, NHWC, and labels)
// and returns its loss.
func (t *Trainer) Step(x []float32, labels []int) (float64, error) {
	if in := t.input(); &in[0] != &x[0] {
		copy(in, x)
	}
	clear(t.yBuf)
	k := t.m.Classes
	for i, l := range labels {
		t.yBuf[i*k+l] = 1
	}
	if err := t.vm.RunAll(); err != nil {
		return 0, err
	}
	defer t.vm.Reset()
	loss := float64(t.loss.Value().Data().(float32))
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, errors.New("train: the loss diverged (lower the learning rate)")
	}
	if err := t.dropMaskedGrads(); err != nil {
		return 0, err
	}
	var err error
	if t.ps, err = params(t.ps, t.params); err != nil {
		return 0, err
	}
	t.solver.step(t.ps)
	t.zeroMasked()
	return loss, nil
}

// Fit trains for the configured epochs, each a pass over a fresh shuffle
// of d in full batches, and returns the mean loss of each epoch.
func (t *Trainer) Fit(ctx context.Context, d Data) ([]float64, error) {
	b := t.opt.Batch
	if d.N() < b {
		return nil, fmt.Errorf("train: %d samples for a batch of %d", d.N(), b)
	}
	h, w, c := t.m.InputShape()
	sz := h * w * c
	r := rand.New(rand.NewPCG(t.opt.Seed, 0x7a11))
	x := t.input() // batches are gathered where the graph reads them
	labels := make([]int, b)
	var losses []float64
	for e := 1; e <= t.opt.Epochs; e++ {
		if t.opt.Cosine && t.opt.Epochs > 1 {
			lr := t.opt.LR * 0.5 * (1 + math.Cos(math.Pi*float64(e-1)/float64(t.opt.Epochs)))
			var err error
			if t.solver, err = newSolver(t.opt, lr); err != nil {
				return losses, err
			}
		}
		perm := r.Perm(d.N())
		sum, batches := 0.0, 0
		for lo := 0; lo+b <= len(perm); lo += b {
			if err := ctx.Err(); err != nil {
				return losses, err
			}
			// Gathered on both cores: widening a batch's pixels took a
			// twentieth of the epoch on one.
			idx := perm[lo : lo+b]
			workpool.Split(b, 8, func(l, h int) {
				for i := l; i < h; i++ {
					j := idx[i]
					if d.Idx != nil {
						j = d.Idx[j]
					}
					d.Image(j, sz, x[i*sz:(i+1)*sz])
					labels[i] = d.Labels[j]
				}
			})
			loss, err := t.Step(x, labels)
			if err != nil {
				return losses, err
			}
			sum += loss
			batches++
		}
		losses = append(losses, sum/float64(batches))
		if t.opt.OnEpoch != nil {
			if err := t.opt.OnEpoch(e, losses[len(losses)-1]); err != nil {
				if errors.Is(err, Stop) {
					return losses, nil
				}
				return losses, err
			}
		}
	}
	return losses, nil
}
