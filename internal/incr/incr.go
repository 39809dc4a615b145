// Package incr predicts the classes a network gives when chosen output
// channels of one of its layers are zeroed (pruned), starting from the
// unpruned network's activations, with work in proportion to what the
// zeroing changes.
//
// The network is split at the mask point: the pruned layer's output, or a
// per-channel layer right after it (a max pool of a zero channel is zero).
// Everything downstream of it is the head. A State holds, for a batch of
// samples, the head's pre-activations and outputs. Zeroing a channel
// changes the mask point only where that channel was non-zero; samples
// where it was zero everywhere are skipped, and for the others the change
// is pushed through the head as sparse updates (a pruned channel's
// contribution is subtracted from the next layers' pre-activations). The
// final logits are recomputed only when a bound on the change of the
// classifier's input cannot rule out a change of the predicted class.
//
// A State's work runs on the goroutine that calls it (its kernels are
// Serial): callers spread states over the cores, as the pruning steps and
// the GoodNet's evaluation do.
//
// A head with layers the sparse updates do not cover (BatchNormalization,
// average or global pooling, Concatenate, activations other than ReLU, a
// classifier that is not a plain Dense layer) takes the general path:
// changed samples rerun the head as the model's own graph, fed from the
// mask point and the head's external inputs, so predictions stay exact.
package incr

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"badprune/internal/hugemem"
	"badprune/internal/infer"
	"badprune/internal/kernels"
	"badprune/internal/model"
)

// Head is the part of a model downstream of the mask point.
type Head struct {
	Model *model.Model
	// Pruned is the layer whose channels are zeroed; Mask is the layer
	// whose output the trunk yields and the state masks.
	Pruned, Mask *model.Layer
	C            int // channels of the mask point
	maskSize     int

	nodes []*node
	cls   classifier
	// External are layers upstream of the mask point that head layers
	// read (skip connections); pruning does not change them.
	External []*model.Layer
	// Incremental is false when the head has a layer the sparse updates do
	// not cover (a max pool); changed samples then rerun the whole head.
	Incremental bool
	// General is set when the head has layers the engine's own nodes do
	// not compute: changed samples then rerun the head's graph.
	General bool
	parts   chan *infer.Part // idle graphs of the general path
}

type node struct {
	l     *model.Layer
	in    []int // node indices; -1 is the mask point, -2-e external input e
	size  int
	k     int  // Dense: input size
	alias bool // output is its input (Flatten, Dropout, linear Activation)
	relu  bool
	conv  *kernels.Conv // Dense (as 1x1) and Conv2D, for full passes
	dconv *kernels.Conv // the same without bias, for dense changes
	geom  kernels.ConvGeom
	w     []float32 // Dense [in][out] or Conv HWIO, for sparse updates
	pool  *kernels.Pool
	// same padding of a Conv2D for full passes
	padT, padB, padL, padR int
}

type classifier struct {
	l       *model.Layer
	in      int // node index, -1: mask point
	k, hdim int
	dense   *kernels.Conv
	wt      []float32 // k × hdim: class j's weights, contiguous
	maxNorm float64   // largest |w_j|: bounds any logit's change per unit change of the input
	top     int       // logits tracked exactly per sample
	// settle finds the top logits exactly without every logit (nil: the
	// CPU lacks AVX-512 BF16).
	settle *kernels.TopLogits
}

// topK is how many of a sample's largest logits are updated exactly
// between recomputations; the others are bounded together.
const topK = 4

// MaskPoint returns the layer whose output masks the pruned layer's
// channels: the last of the layers that carry them one to one
// (model.PerChannel), or the pruned layer itself. Pruning that would not
// remove the channels (model.CheckPruning) is an error.
func MaskPoint(m *model.Model, pruned string) (*model.Layer, error) {
	l := m.Layer(pruned)
	if l == nil {
		return nil, fmt.Errorf("no layer %q", pruned)
	}
	if l.Kind != model.Conv2D && l.Kind != model.SeparableConv2D {
		return nil, fmt.Errorf("layer %q is a %s, not a Conv2D or SeparableConv2D layer", pruned, l.KerasClass())
	}
	if err := m.CheckPruning(pruned); err != nil {
		return nil, err
	}
	if pc := m.PerChannel(pruned); len(pc) > 0 {
		return pc[len(pc)-1], nil
	}
	return l, nil
}

// NewHead prepares the head of m downstream of the mask point of pruned.
func NewHead(m *model.Model, pruned string) (*Head, error) {
	mask, err := MaskPoint(m, pruned)
	if err != nil {
		return nil, err
	}
	h := &Head{Model: m, Pruned: m.Layer(pruned), Mask: mask, C: mask.Channels(), maskSize: mask.Size(), Incremental: true}
	if h.fast() != nil {
		*h = Head{Model: m, Pruned: h.Pruned, Mask: mask, C: h.C, maskSize: h.maskSize, General: true,
			External: externals(m, mask), parts: make(chan *infer.Part, 8)}
	}
	return h, nil
}

// externals are the layers upstream of the mask point that layers after it
// read.
func externals(m *model.Model, mask *model.Layer) []*model.Layer {
	after := map[string]bool{mask.Name: true}
	var out []*model.Layer
	downstream := false
	for _, l := range m.Layers {
		if l == mask {
			downstream = true
			continue
		}
		if !downstream {
			continue
		}
		after[l.Name] = true
		for _, name := range l.Inputs {
			if !after[name] && !slices.ContainsFunc(out, func(e *model.Layer) bool { return e.Name == name }) {
				out = append(out, m.Layer(name))
			}
		}
	}
	return out
}

// fast builds the engine's own nodes for the head, or says which layer
// they do not cover.
func (h *Head) fast() error {
	m, mask := h.Model, h.Mask
	idx := map[string]int{mask.Name: -1}
	clsLayer := m.Output
	if clsLayer.Kind == model.Activation || clsLayer.Kind == model.Softmax {
		// A separate softmax (or linear) activation: the logits are its input.
		clsLayer = m.Layer(clsLayer.Inputs[0])
	}
	if clsLayer.Kind != model.Dense || m.Applied(clsLayer) != "linear" {
		return fmt.Errorf("the model's classifier %q is not a plain Dense layer", clsLayer.Name)
	}
	downstream := false
	for _, l := range m.Layers {
		if l == mask {
			downstream = true
			continue
		}
		if !downstream || l == m.Output && l != clsLayer {
			continue
		}
		var in []int
		for _, name := range l.Inputs {
			i, ok := idx[name]
			if !ok {
				// Computed before the mask point: a fixed input of the head.
				i = -2 - len(h.External)
				idx[name] = i
				h.External = append(h.External, m.Layer(name))
			}
			in = append(in, i)
		}
		if l == clsLayer {
			h.cls = newClassifier(l, in[0])
			idx[l.Name] = len(h.nodes)
			break
		}
		nd, err := newNode(m, l, in)
		if err != nil {
			return err
		}
		if nd.pool != nil {
			h.Incremental = false
		}
		idx[l.Name] = len(h.nodes)
		h.nodes = append(h.nodes, nd)
	}
	if h.cls.l == nil {
		return errors.New("the classifier is not downstream of the mask point")
	}
	return nil
}

func newNode(m *model.Model, l *model.Layer, in []int) (*node, error) {
	act := m.Applied(l)
	if act != "linear" && (act != "relu" || l.Alpha != 0 || l.MaxValue != 0 || l.Threshold != 0) {
		return nil, fmt.Errorf("layer %q: activation %q", l.Name, l.Act)
	}
	nd := &node{l: l, in: in, size: l.Size(), relu: act == "relu"}
	bias := func() []float32 {
		if l.Bias != nil {
			return l.Bias
		}
		return make([]float32, l.KernelShape[len(l.KernelShape)-1])
	}
	switch l.Kind {
	case model.Flatten, model.Dropout, model.Identity:
		nd.alias = true
	case model.Activation, model.ReLU:
		nd.alias = !nd.relu
	case model.Dense:
		ks := l.KernelShape
		nd.conv = kernels.NewDense(l.Kernel, bias(), ks[0], ks[1])
		nd.conv.Serial = true
		nd.dconv = nd.conv.WithBias(nil)
		nd.w = l.Kernel
		nd.k = ks[0]
	case model.Conv2D:
		ks := l.KernelShape
		src := m.Layer(l.Inputs[0]).Shape
		nd.conv = kernels.NewConv(l.Kernel, bias(), ks[0], ks[1], ks[2], ks[3], l.SH, l.SW)
		nd.conv.Serial = true
		nd.w = l.Kernel
		if l.Same {
			nd.padT, nd.padB, nd.padL, nd.padR = model.SamePad(src[0], src[1], ks[0], ks[1], l.SH, l.SW)
		}
		nd.geom = kernels.ConvGeom{H: src[0], W: src[1], C: src[2], KH: ks[0], KW: ks[1], OC: ks[3],
			SH: l.SH, SW: l.SW, PadT: nd.padT, PadL: nd.padL, OH: l.Shape[0], OW: l.Shape[1]}
	case model.Add:
	case model.MaxPool:
		src := m.Layer(l.Inputs[0]).Shape
		p := kernels.Pool{PH: l.KH, PW: l.KW, SH: l.SH, SW: l.SW}
		if l.Same {
			p.PadT, _, p.PadL, _ = model.SamePad(src[0], src[1], l.KH, l.KW, l.SH, l.SW)
		}
		nd.pool = &p
		nd.geom = kernels.ConvGeom{H: src[0], W: src[1], C: src[2], OH: l.Shape[0], OW: l.Shape[1]}
	default:
		return nil, fmt.Errorf("layer %q: %s is not supported downstream of the pruned layer", l.Name, l.Kind)
	}
	return nd, nil
}

func newClassifier(l *model.Layer, in int) classifier {
	ks := l.KernelShape
	bias := l.Bias
	if bias == nil {
		bias = make([]float32, ks[1])
	}
	c := classifier{l: l, in: in, hdim: ks[0], k: ks[1], dense: kernels.NewDense(l.Kernel, bias, ks[0], ks[1]),
		top: min(topK, ks[1])}
	c.dense.Serial = true
	c.settle = kernels.NewTopLogits(l.Kernel, bias, c.hdim, c.k)
	c.wt = make([]float32, c.k*c.hdim)
	for j := 0; j < c.k; j++ {
		s := 0.0
		for i := 0; i < c.hdim; i++ {
			v := l.Kernel[i*c.k+j]
			c.wt[j*c.hdim+i] = v
			s += float64(v) * float64(v)
		}
		c.maxNorm = math.Max(c.maxNorm, math.Sqrt(s))
	}
	// A little slack covers float32 rounding in the bound itself.
	c.maxNorm *= 1 + 1e-5
	return c
}

// InputSizes are the per-sample sizes of the Inputs.
func (h *Head) InputSizes() []int {
	sizes := []int{h.maskSize}
	for _, l := range h.External {
		sizes = append(sizes, l.Size())
	}
	return sizes
}

// Inputs are the layers whose outputs NewState needs, in order: the mask
// point, then the external inputs.
func (h *Head) Inputs() []string {
	names := []string{h.Mask.Name}
	for _, l := range h.External {
		names = append(names, l.Name)
	}
	return names
}

// State is the head's activations for a batch of samples, as channels are
// zeroed.
type State struct {
	h   *Head
	N   int
	P   []float32   // N × mask size; zeroed channels are zero
	ext [][]float32 // external inputs, N × size each
	out [][]float32 // per node: N × size (aliases share their input's)
	pre [][]float32 // per Dense/Conv2D node: N × size
	// At each sample's last exact logits: the classifier input, the top
	// classes (best first, ties to the lower class) and their logits, and
	// the largest logit of the other classes.
	h0   []float32 // N × classifier input
	top  []int32   // N × top
	topL []float32 // N × top
	rest []float32 // N
	// Pred is each sample's predicted class (see RenewLabeled).
	Pred []int
	// With labels, each sample's label and its logit at the reference.
	labels []int
	zy     []float32

	// Stats counts the work done, for benchmarks.
	Stats Stats

	// live has bit c set while mask channel c is non-zero somewhere in the
	// sample (channels below 64), so a step finds its samples at once.
	live []uint64

	err error // of the general path

	// Scratch reused by every Zero: a run makes thousands of calls, and
	// garbage is fresh memory to fault in until the collector runs.
	rows    []int
	lx, lz  []float32 // logits' inputs and outputs
	dp      change
	changes []change
	scr     checkScratch
}

// checkScratch is the scratch of check and logits.
type checkScratch struct {
	tmp, moves, val []float32
	tracked, idx    []int32
	redo            []int
	// of settle
	sIdx           []int32
	sVal, sZy, sSc []float32
	sOK            []uint8
	sLab, left     []int
}

// Stats counts samples per kind of work.
type Stats struct {
	Skipped   int // sample-steps where the zeroed channels were zero
	Updated   int // sample-steps pushed through the head
	Recounted int // of those, logits recomputed
	Settled   int // of the recounted (and first passes), the top logits found without every logit
}

// Add adds b's counts to s.
func (s *Stats) Add(b Stats) {
	s.Skipped += b.Skipped
	s.Updated += b.Updated
	s.Recounted += b.Recounted
	s.Settled += b.Settled
}

// NewState computes the head's activations for n samples from the outputs
// of the layers named by Inputs (n rows each; copied).
func (h *Head) NewState(n int, in ...[]float32) *State { return h.Renew(nil, n, in...) }

// Renew is NewState in the memory of old, a state of h that is no longer
// needed (nil: new memory), for loops over chunks of samples: a repair
// made a hundred states of a few megabytes each.
func (h *Head) Renew(old *State, n int, in ...[]float32) *State { return h.renew(old, n, nil, in) }

// RenewLabeled is Renew for samples whose predictions need only say
// whether they are the samples' labels (a count of hits): a sample the
// network does not give its label may show, in Pred, a class the network
// ranks above the label rather than the one it predicts. Showing that a
// class beats the label seldom needs every logit: half of a lab repair's
// recomputations.
func (h *Head) RenewLabeled(old *State, labels []int, in ...[]float32) *State {
	return h.renew(old, len(labels), labels, in)
}

func (h *Head) renew(old *State, n int, labels []int, in [][]float32) *State {
	if old == nil || old.h != h {
		old = &State{}
	}
	if slices.ContainsFunc(labels, func(y int) bool { return y < 0 || y >= h.cls.k }) {
		labels = nil // a label no class matches: predictions in full
	}
	// Scratch carries over as it is (the mask point's change relies on
	// its values being zero but for the entries it lists).
	s := &State{h: h, N: n, rows: old.rows, lx: old.lx, lz: old.lz, dp: old.dp, changes: old.changes, scr: old.scr, labels: labels}
	s.P = hugemem.Grow(old.P, n*h.maskSize)
	copy(s.P, in[0][:n*h.maskSize])
	for e, l := range h.External {
		buf := hugemem.Grow(at(old.ext, e), n*l.Size())
		copy(buf, in[1+e][:n*l.Size()])
		s.ext = append(s.ext, buf)
	}
	s.live, s.Pred = old.live, hugemem.Grow(old.Pred, n)
	if h.General {
		s.setLive()
		clear(s.Pred) // a sample the graph fails on keeps class 0
		rows := make([]int, n)
		for i := range rows {
			rows[i] = i
		}
		s.err = h.predict(s, rows)
		return s
	}
	s.out = make([][]float32, len(h.nodes))
	s.pre = make([][]float32, len(h.nodes))
	for i, nd := range h.nodes {
		// forward writes every value: nothing needs clearing.
		if !nd.alias {
			s.out[i] = hugemem.Grow(at(old.out, i), n*nd.size)
		}
		if nd.conv != nil && nd.relu {
			s.pre[i] = hugemem.Grow(at(old.pre, i), n*nd.size)
		}
	}
	h.forward(s.P, s.ext, n, s.pre, s.out)
	s.setLive()
	s.h0 = hugemem.Grow(old.h0, n*h.cls.hdim) // logits writes these for every row
	s.top = hugemem.Grow(old.top, n*h.cls.top)
	s.topL = hugemem.Grow(old.topL, n*h.cls.top)
	s.rest = hugemem.Grow(old.rest, n)
	if labels != nil {
		s.zy = hugemem.Grow(old.zy, n)
	}
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
	}
	s.logits(rows)
	return s
}

// at is s[i], or nil past its end.
func at(s [][]float32, i int) []float32 {
	if i < len(s) {
		return s[i]
	}
	return nil
}

// setLive marks, per sample, the mask channels that are non-zero.
func (s *State) setLive() {
	h := s.h
	if h.C > 64 {
		s.live = nil
		return
	}
	s.live = hugemem.Grow(s.live, s.N)
	for row := 0; row < s.N; row++ {
		var live uint64
		p := s.P[row*h.maskSize : (row+1)*h.maskSize]
		for pos := 0; pos < len(p); pos += h.C { // a position's channels
			for c, v := range p[pos : pos+h.C] {
				if v != 0 {
					live |= 1 << c
				}
			}
		}
		s.live[row] = live
	}
}

// Err is the first error of the general path's graph, which leaves the
// predictions of the samples it failed on as they were.
func (s *State) Err() error { return s.err }

// headBatch is the batch of the general path's graph.
const headBatch = 64

// part returns an idle graph of the head, building one if none is.
func (h *Head) part() (*infer.Part, error) {
	select {
	case p := <-h.parts:
		return p, nil
	default:
	}
	return infer.NewPart(h.Model, headBatch, h.Inputs()...)
}

// predict reruns the head's graph on the samples rows and sets their
// predictions: the general path.
func (h *Head) predict(s *State, rows []int) error {
	p, err := h.part()
	if err != nil {
		return err
	}
	defer func() {
		select {
		case h.parts <- p:
		default:
			p.Close()
		}
	}()
	sizes := h.InputSizes()
	src := append([][]float32{s.P}, s.ext...)
	for lo := 0; lo < len(rows); lo += headBatch {
		part := rows[lo:min(lo+headBatch, len(rows))]
		in := make([][]float32, len(src))
		for i := range src {
			in[i] = gather(src[i], part, sizes[i])
		}
		pred := make([]int, len(part))
		if err := p.Predict(in, len(part), pred); err != nil {
			return err
		}
		for r, row := range part {
			s.Pred[row] = pred[r]
		}
	}
	return nil
}

// input returns the activations of node index i (-1: mask point).
func (s *State) input(i int) []float32 {
	for i >= 0 && s.h.nodes[i].alias {
		i = s.h.nodes[i].in[0]
	}
	switch {
	case i == -1:
		return s.P
	case i < -1:
		return s.ext[-2-i]
	}
	return s.out[i]
}

// forward runs the head on n samples with mask-point values p, filling the
// given pre-activations (for ReLU Dense/Conv2D) and outputs per node.
func (h *Head) forward(p []float32, ext [][]float32, n int, pre, out [][]float32) {
	get := func(i int) []float32 {
		for i >= 0 && h.nodes[i].alias {
			i = h.nodes[i].in[0]
		}
		switch {
		case i == -1:
			return p
		case i < -1:
			return ext[-2-i]
		}
		return out[i]
	}
	for i, nd := range h.nodes {
		switch {
		case nd.alias:
		case nd.conv != nil:
			dst := out[i]
			if nd.relu {
				dst = pre[i]
			}
			x := get(nd.in[0])
			if nd.l.Kind == model.Conv2D {
				x = pad(x, n, nd)
				nd.conv.Forward(x, n, nd.geom.H+nd.padT+nd.padB, nd.geom.W+nd.padL+nd.padR, false, dst)
			} else {
				nd.conv.Forward(x, n, 1, 1, false, dst)
			}
			if nd.relu {
				for j, v := range dst {
					out[i][j] = max(v, 0)
				}
			}
		case nd.pool != nil:
			g := nd.geom
			nd.pool.MaxPool(get(nd.in[0]), n, g.H, g.W, g.C, g.OH, g.OW, out[i])
		case nd.l.Kind == model.Add:
			o := out[i]
			copy(o, get(nd.in[0]))
			for _, k := range nd.in[1:] {
				for j, v := range get(k) {
					o[j] += v
				}
			}
		default: // ReLU activation
			for j, v := range get(nd.in[0]) {
				out[i][j] = max(v, 0)
			}
		}
	}
}

// pad returns x with a Conv2D node's "same" zero padding.
func pad(x []float32, n int, nd *node) []float32 {
	if nd.padT+nd.padB+nd.padL+nd.padR == 0 {
		return x
	}
	g := nd.geom
	ph, pw := g.H+nd.padT+nd.padB, g.W+nd.padL+nd.padR
	p := make([]float32, n*ph*pw*g.C)
	for i := 0; i < n; i++ {
		for y := 0; y < g.H; y++ {
			copy(p[((i*ph+y+nd.padT)*pw+nd.padL)*g.C:], x[((i*g.H+y)*g.W)*g.C:((i*g.H+y)*g.W+g.W)*g.C])
		}
	}
	return p
}

// logits recomputes the logits of the given samples exactly and sets their
// predictions and reference points.
func (s *State) logits(rows []int) {
	c := &s.h.cls
	if c.settle != nil {
		rows = s.settle(rows)
	}
	if len(rows) == 0 {
		return
	}
	x := s.gatherInputs(rows)
	s.lz = hugemem.Grow(s.lz, len(rows)*c.k)
	z := s.lz
	c.dense.Forward(x, len(rows), 1, 1, false, z)
	t := c.top
	s.scr.idx, s.scr.val = hugemem.Grow(s.scr.idx, t+1), hugemem.Grow(s.scr.val, t+1)
	idx, val := s.scr.idx, s.scr.val
	for r, row := range rows {
		n := kernels.TopN(z[r*c.k:(r+1)*c.k], idx, val)
		zy := float32(0)
		if s.labels != nil {
			zy = z[r*c.k+s.labels[row]]
		}
		s.setReference(row, x[r*c.hdim:(r+1)*c.hdim], idx[:n], val[:n], zy)
	}
}

// gatherInputs copies the classifier inputs of rows into s.lx.
func (s *State) gatherInputs(rows []int) []float32 {
	c := &s.h.cls
	hin := s.input(c.in)
	s.lx = hugemem.Grow(s.lx, len(rows)*c.hdim)
	x := s.lx
	for r, row := range rows {
		copy(x[r*c.hdim:(r+1)*c.hdim], hin[row*c.hdim:(row+1)*c.hdim])
	}
	return x
}

// setReference makes row's classifier input x its reference point, with
// its largest logits (classes idx, values val: top+1 of them, or all
// there are) and the label's logit zy, and predicts the best.
func (s *State) setReference(row int, x []float32, idx []int32, val []float32, zy float32) {
	c := &s.h.cls
	t := c.top
	copy(s.top[row*t:(row+1)*t], idx[:t])
	copy(s.topL[row*t:(row+1)*t], val[:t])
	s.rest[row] = float32(math.Inf(-1))
	if len(idx) > t {
		s.rest[row] = val[t]
	}
	s.Pred[row] = int(idx[0])
	if s.labels != nil {
		s.zy[row] = zy
	}
	copy(s.h0[row*c.hdim:(row+1)*c.hdim], x)
}

// settle sets the reference points of the rows the classifier's
// TopLogits can settle (most: the top logits exactly from a bfloat16
// first pass) and returns the others.
func (s *State) settle(rows []int) []int {
	c := &s.h.cls
	if len(rows) == 0 {
		return rows
	}
	n, m := len(rows), c.top+1
	x := s.gatherInputs(rows)
	sc := &s.scr
	sc.sIdx, sc.sVal = hugemem.Grow(sc.sIdx, n*m), hugemem.Grow(sc.sVal, n*m)
	sc.sOK, sc.sSc = hugemem.Grow(sc.sOK, n), hugemem.Grow(sc.sSc, c.settle.ScratchSize())
	var labels []int
	var zy []float32
	if s.labels != nil {
		sc.sLab, sc.sZy = hugemem.Grow(sc.sLab, n), hugemem.Grow(sc.sZy, n)
		labels, zy = sc.sLab, sc.sZy
		for r, row := range rows {
			labels[r] = s.labels[row]
		}
	}
	s.Stats.Settled += c.settle.Settle(x, n, labels, sc.sIdx, sc.sVal, zy, sc.sOK, sc.sSc)
	left := sc.left[:0]
	for r, row := range rows {
		if sc.sOK[r] == 0 {
			left = append(left, row)
			continue
		}
		y := float32(0)
		if zy != nil {
			y = zy[r]
		}
		s.setReference(row, x[r*c.hdim:(r+1)*c.hdim], sc.sIdx[r*m:(r+1)*m], sc.sVal[r*m:(r+1)*m], y)
	}
	sc.left = left
	return left
}

// Clone returns an independent copy of s.
func (s *State) Clone() *State {
	c := *s
	c.P = slices.Clone(s.P)
	c.out = make([][]float32, len(s.out))
	c.pre = make([][]float32, len(s.pre))
	for i := range s.out {
		c.out[i] = slices.Clone(s.out[i])
		c.pre[i] = slices.Clone(s.pre[i])
	}
	c.h0 = slices.Clone(s.h0)
	c.top = slices.Clone(s.top)
	c.topL = slices.Clone(s.topL)
	c.rest = slices.Clone(s.rest)
	c.zy = slices.Clone(s.zy)
	c.Pred = slices.Clone(s.Pred)
	c.live = slices.Clone(s.live)
	c.rows, c.dp, c.changes, c.lx, c.lz, c.scr = nil, change{}, nil, nil, nil, checkScratch{} // scratch is not shared
	return &c
}

// Zero zeroes the given channels at the mask point and updates the state
// and the predictions.
func (s *State) Zero(channels []int) {
	h := s.h
	ms, C := h.maskSize, h.C
	// The samples where a zeroed channel was non-zero, and its change.
	rows := s.rows[:0]
	var want uint64
	for _, c := range channels {
		if c < 64 {
			want |= 1 << c
		}
	}
	for row := 0; row < s.N; row++ {
		hit := false
		if s.live != nil && len(channels) > 0 && channels[len(channels)-1] < 64 && C <= 64 {
			hit = s.live[row]&want != 0
		} else {
			p := s.P[row*ms : (row+1)*ms]
			for _, c := range channels {
				for q := c; q < ms && !hit; q += C {
					hit = p[q] != 0
				}
			}
		}
		if hit {
			rows = append(rows, row)
		}
	}
	s.rows = rows
	s.Stats.Skipped += s.N - len(rows)
	s.Stats.Updated += len(rows)
	if len(rows) == 0 {
		return
	}
	s.dp.resetListed(len(rows), s.N, ms)
	n := int32(0)
	for r, row := range rows {
		p := s.P[row*ms : (row+1)*ms]
		d := s.dp.d[r*ms : (r+1)*ms]
		for _, c := range channels {
			for q := c; q < ms; q += C {
				if p[q] != 0 {
					d[q] = -p[q]
					p[q] = 0
					s.dp.idx[n] = int32(q)
					n++
				}
			}
		}
		s.dp.ptr[r+1] = n
		if s.live != nil {
			for _, c := range channels {
				if c < 64 {
					s.live[row] &^= 1 << c
				}
			}
		}
	}
	s.dp.ptr[0] = 0
	switch {
	case h.General:
		if err := h.predict(s, rows); err != nil && s.err == nil {
			s.err = err
		}
		return
	case h.Incremental:
		s.push(rows)
	default:
		s.rerun(rows)
	}
	s.check(rows)
}

// change is how a node's output moved for the samples being updated:
// values (zero where unchanged) and, per sample, which entries moved, so
// the next layer visits only those.
type change struct {
	d   []float32 // na × size
	ptr []int32   // na+1: sample r's entries are idx[ptr[r]:ptr[r+1]]
	idx []int32
}

// resetListed is reset for a change whose values are non-zero only at the
// entries it lists (the mask point's): it clears those of the last use
// instead of every value, most of a sample's entries being untouched.
func (c *change) resetListed(na, most, size int) {
	if cap(c.d) < na*size {
		c.reset(na, most, size)
		return
	}
	d := c.d[:cap(c.d)]
	for r := 0; r+1 < len(c.ptr); r++ {
		for _, q := range c.idx[c.ptr[r]:c.ptr[r+1]] {
			d[r*size+int(q)] = 0
		}
	}
	if cap(c.ptr) < na+1 {
		c.ptr = make([]int32, na+1)
	}
	c.d, c.idx, c.ptr = d[:na*size], c.idx[:na*size], c.ptr[:na+1]
}

// reset sizes c for na samples of size values, all zero, with room to
// list every entry. Memory is taken once for most samples, the state's
// count: the samples a step changes grow from step to step, and growing
// with them reallocated over a gigabyte per repair.
func (c *change) reset(na, most, size int) {
	c.resize(na, most, size)
	clear(c.d)
}

// resize is reset without clearing the values, for a change that is then
// written whole.
func (c *change) resize(na, most, size int) {
	if cap(c.d) < na*size {
		n := max(na, most) * size
		c.d = hugemem.Make[float32](n)
		c.idx = hugemem.Make[int32](n)
	}
	if cap(c.ptr) < na+1 {
		c.ptr = make([]int32, max(na, most)+1)
	}
	c.d, c.idx, c.ptr = c.d[:na*size], c.idx[:na*size], c.ptr[:na+1]
}

// push propagates the mask-point change (in s.dp) of the samples rows
// through the head as sparse updates.
func (s *State) push(rows []int) {
	h := s.h
	na := len(rows)
	if s.changes == nil {
		s.changes = make([]change, len(h.nodes))
	}
	// in is the change of node i's output; nil for an unchanged external input.
	in := func(i int) *change {
		for i >= 0 && h.nodes[i].alias {
			i = h.nodes[i].in[0]
		}
		switch {
		case i == -1:
			return &s.dp
		case i < -1:
			return nil
		}
		return &s.changes[i]
	}
	for i, nd := range h.nodes {
		if nd.alias {
			continue
		}
		c := &s.changes[i]
		c.resize(na, s.N, nd.size)
		d := c.d
		switch {
		case nd.conv != nil:
			switch x := in(nd.in[0]); {
			case nd.l.Kind == model.Dense && x != nil && int(x.ptr[na])*sparseCost > na*nd.k:
				nd.dconv.Forward(x.d, na, 1, 1, false, d) // writes every value
			case x == nil:
				clear(d)
			case nd.l.Kind == model.Dense:
				clear(d)
				kernels.CSRDense(na, x.ptr, x.idx, x.d, nd.k, nd.w, nd.size, d)
			default:
				clear(d)
				kernels.SparseConv(na, x.ptr, x.idx, x.d, nd.geom, nd.w, d)
			}
			if !nd.relu {
				// Linear: the output moves by the pre-activation change.
				kernels.AddIndex(rows, nd.size, d, s.out[i], c.idx, c.ptr)
				continue
			}
			kernels.ReLUApply(rows, nd.size, d, s.pre[i], s.out[i], c.idx, c.ptr)
		case nd.l.Kind == model.Add:
			clear(d)
			for _, k := range nd.in {
				if x := in(k); x != nil {
					kernels.AddRows(d, x.d)
				}
			}
			kernels.AddIndex(rows, nd.size, d, s.out[i], c.idx, c.ptr)
		default: // ReLU activation of its input's (already updated) output
			kernels.ReLUFrom(rows, nd.size, s.input(nd.in[0]), s.out[i], d, c.idx, c.ptr)
		}
	}
}

// sparseCost is how many times dearer a multiply-add is in the sparse
// update than in a dense matrix product (measured on the lab's fc_2): a
// change with more than 1/sparseCost of its entries moved goes dense.
const sparseCost = 3

// rerun recomputes the whole head for the samples rows.
func (s *State) rerun(rows []int) {
	h := s.h
	na := len(rows)
	p := gather(s.P, rows, h.maskSize)
	ext := make([][]float32, len(s.ext))
	for e, l := range h.External {
		ext[e] = gather(s.ext[e], rows, l.Size())
	}
	pre := make([][]float32, len(h.nodes))
	out := make([][]float32, len(h.nodes))
	for i, nd := range h.nodes {
		if !nd.alias {
			out[i] = make([]float32, na*nd.size)
		}
		if s.pre[i] != nil {
			pre[i] = make([]float32, na*nd.size)
		}
	}
	h.forward(p, ext, na, pre, out)
	for i, nd := range h.nodes {
		scatter(s.out[i], out[i], rows, nd.size)
		scatter(s.pre[i], pre[i], rows, nd.size)
	}
}

func gather(src []float32, rows []int, size int) []float32 {
	out := make([]float32, len(rows)*size)
	for r, row := range rows {
		copy(out[r*size:(r+1)*size], src[row*size:(row+1)*size])
	}
	return out
}

func scatter(dst, src []float32, rows []int, size int) {
	if dst == nil {
		return
	}
	for r, row := range rows {
		copy(dst[row*size:(row+1)*size], src[r*size:(r+1)*size])
	}
}

// check settles the predictions of the samples rows after their
// classifier input moved by d from its reference. The top classes' logits
// (and with labels, the label's) move by exactly w_j·d; the others by at
// most max|w_j|·|d|. When the best of the top classes still leads every
// bound by a margin, that is the prediction; with labels, a top class
// ahead of the label by a margin settles that the label is not predicted.
// Otherwise the logits are recomputed.
func (s *State) check(rows []int) {
	c := &s.h.cls
	hin := s.input(c.in)
	t := c.top
	sc := &s.scr
	sc.tmp, sc.tracked, sc.moves = hugemem.Grow(sc.tmp, c.hdim), hugemem.Grow(sc.tracked, t+1), hugemem.Grow(sc.moves, t+1)
	tmp, tracked, moves := sc.tmp, sc.tracked, sc.moves
	redo := sc.redo[:0]
	for _, row := range rows {
		a := hin[row*c.hdim : (row+1)*c.hdim]
		b := s.h0[row*c.hdim : (row+1)*c.hdim]
		top := s.top[row*t : (row+1)*t]
		n := copy(tracked, top)
		if s.labels != nil {
			tracked[n] = int32(s.labels[row])
			n++
		}
		d2 := kernels.TopMoves(a, b, c.wt, tracked[:n], moves[:n], tmp)
		if d2 == 0 {
			continue
		}
		best, bestV, second := -1, math.Inf(-1), math.Inf(-1)
		for k := 0; k < t; k++ {
			j := int(top[k])
			v := float64(s.topL[row*t+k]) + float64(moves[k])
			switch {
			case v > bestV || v == bestV && j < best:
				second = bestV
				best, bestV = j, v
			case v > second:
				second = v
			}
		}
		rest := float64(s.rest[row]) + c.maxNorm*math.Sqrt(d2)
		if bestV-math.Max(second, rest) > margin(bestV) {
			s.Pred[row] = best
			continue
		}
		if s.labels != nil {
			// The best of the top classes other than the label, against
			// the label's exact logit.
			y := s.labels[row]
			zy := float64(s.zy[row]) + float64(moves[t])
			other, otherV := -1, math.Inf(-1)
			for k := 0; k < t; k++ {
				if j := int(top[k]); j != y {
					if v := float64(s.topL[row*t+k]) + float64(moves[k]); v > otherV {
						other, otherV = j, v
					}
				}
			}
			if other >= 0 && otherV-zy > margin(zy) {
				s.Pred[row] = other
				continue
			}
		}
		redo = append(redo, row)
	}
	sc.redo = redo
	s.Stats.Recounted += len(redo)
	s.logits(redo)
}

// margin is the slack for float32 rounding in logits near v, moved in
// another order than the classifier sums them.
func margin(v float64) float64 { return 1e-4 * (1 + math.Abs(v)) }

// Variant reports whether r is b with some output channels of one Conv2D
// or SeparableConv2D layer pruned (model.Model.PruneChannels: the kernel
// slices and biases zeroed, and the channels' weights in the
// BatchNormalization layers after it) and every other weight equal, and
// which: such an r shares b's activations up to that layer.
func Variant(b, r *model.Model) (layer string, channels []int, ok bool) {
	if len(b.Layers) != len(r.Layers) {
		return "", nil, false
	}
	for i, lb := range b.Layers {
		lr := r.Layers[i]
		if lb.Name != lr.Name || lb.Kind != lr.Kind || !slices.Equal(lb.Inputs, lr.Inputs) || !slices.Equal(lb.Shape, lr.Shape) ||
			lb.Act != lr.Act || lb.KH != lr.KH || lb.KW != lr.KW || lb.SH != lr.SH || lb.SW != lr.SW || lb.Same != lr.Same ||
			!slices.Equal(lb.KernelShape, lr.KernelShape) || (lb.Bias == nil) != (lr.Bias == nil) {
			return "", nil, false
		}
		if layer == "" && !sameWeights(lb, lr) {
			if lb.Kind != model.Conv2D && lb.Kind != model.SeparableConv2D {
				return "", nil, false
			}
			layer = lb.Name
		}
	}
	if layer == "" {
		return "", nil, false
	}
	// The channels r zeroes that b does not; r must be b with exactly
	// those pruned.
	was := b.Layer(layer).ZeroChannels()
	for _, c := range r.Layer(layer).ZeroChannels() {
		if !slices.Contains(was, c) {
			channels = append(channels, c)
		}
	}
	want := b.Clone()
	if len(channels) == 0 || want.PruneChannels(layer, channels) != nil {
		return "", nil, false
	}
	for i, l := range want.Layers {
		if !sameWeights(l, r.Layers[i]) {
			return "", nil, false
		}
	}
	return layer, channels, true
}

// sameWeights reports whether two layers hold equal weights.
func sameWeights(a, b *model.Layer) bool {
	return slices.Equal(a.Kernel, b.Kernel) && slices.Equal(a.Bias, b.Bias) && slices.Equal(a.Depthwise, b.Depthwise) &&
		slices.Equal(a.Mean, b.Mean) && slices.Equal(a.Var, b.Var)
}

// Close releases the graphs of the general path.
func (h *Head) Close() {
	for {
		select {
		case p := <-h.parts:
			p.Close()
		default:
			return
		}
	}
}
