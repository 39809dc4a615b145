package train

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"

	"badprune/internal/infer"
	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
	"badprune/internal/testsupport/must"
	"badprune/internal/testsupport/oracle"
)

// normals returns a maker of n weights drawn from r, normal with the given
// standard deviation.
func normals(r *rand.Rand) func(n int, std float64) []float32 {
	return func(n int, std float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * std)
		}
		return v
	}
}

// toy is a small convnet over 12x10 RGB images of k classes.
func toy(t *testing.T, k int, seed uint64) *model.Model {
	t.Helper()
	w := normals(rand.New(rand.NewPCG(seed, 1)))
	in := &model.Layer{Name: "in", Kind: model.Input, Shape: []int{12, 10, 3}}
	c1 := &model.Layer{Name: "c1", Kind: model.Conv2D, Inputs: []string{"in"}, Act: "relu", SH: 1, SW: 1,
		KernelShape: []int{3, 3, 3, 6}, Kernel: w(162, 0.3), Bias: w(6, 0.05)}
	p1 := &model.Layer{Name: "p1", Kind: model.MaxPool, Inputs: []string{"c1"}, KH: 2, KW: 2, SH: 2, SW: 2}
	f := &model.Layer{Name: "f", Kind: model.Flatten, Inputs: []string{"p1"}}
	d := &model.Layer{Name: "d", Kind: model.Dense, Inputs: []string{"f"}, Act: "relu", KernelShape: []int{5 * 4 * 6, 8}, Kernel: w(960, 0.15), Bias: w(8, 0.05)}
	o := &model.Layer{Name: "out", Kind: model.Dense, Inputs: []string{"d"}, Act: "softmax", KernelShape: []int{8, k}, Kernel: w(8*k, 0.4), Bias: w(k, 0.05)}
	m, err := model.New("toy", []*model.Layer{in, c1, p1, f, d, o})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// toyOdd is toy over 11x9 images with a "same"-padded first convolution:
// its 11x9 output leaves a row and a column no pooling window covers.
func toyOdd(t *testing.T, k int, seed uint64) *model.Model {
	t.Helper()
	w := normals(rand.New(rand.NewPCG(seed, 2)))
	in := &model.Layer{Name: "in", Kind: model.Input, Shape: []int{11, 9, 3}}
	c1 := &model.Layer{Name: "c1", Kind: model.Conv2D, Inputs: []string{"in"}, Act: "relu", SH: 1, SW: 1, Same: true,
		KernelShape: []int{3, 3, 3, 6}, Kernel: w(162, 0.3), Bias: w(6, 0.05)}
	p1 := &model.Layer{Name: "p1", Kind: model.MaxPool, Inputs: []string{"c1"}, KH: 2, KW: 2, SH: 2, SW: 2}
	f := &model.Layer{Name: "f", Kind: model.Flatten, Inputs: []string{"p1"}}
	o := &model.Layer{Name: "out", Kind: model.Dense, Inputs: []string{"f"}, Act: "softmax", KernelShape: []int{5 * 4 * 6, k}, Kernel: w(120*k, 0.2), Bias: w(k, 0.05)}
	m, err := model.New("toy-odd", []*model.Layer{in, c1, p1, f, o})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// quadrants: class = which quadrant of the image is bright.
func quadrants(r *rand.Rand, n int) Data {
	d := Data{X: make([]float32, n*12*10*3), Labels: make([]int, n)}
	for i := 0; i < n; i++ {
		c := r.IntN(4)
		d.Labels[i] = c
		for y := 0; y < 12; y++ {
			for x := 0; x < 10; x++ {
				v := 0.2 * r.Float64()
				if (y >= 6) == (c/2 == 1) && (x >= 5) == (c%2 == 1) {
					v += 0.8
				}
				for ch := 0; ch < 3; ch++ {
					d.X[((i*12+y)*10+x)*3+ch] = float32(v)
				}
			}
		}
	}
	return d
}

func accuracy(t *testing.T, m *model.Model, d Data) float64 {
	cl, err := infer.NewClassifier(m, d.N())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p := make([]int, d.N())
	if err := cl.Predict(d.X, d.N(), p); err != nil {
		t.Fatal(err)
	}
	hit := 0
	for i := range p {
		if p[i] == d.Labels[i] {
			hit++
		}
	}
	return float64(hit) / float64(d.N())
}

func TestFitLearns(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	trainSet, testSet := quadrants(r, 256), quadrants(r, 128)
	for _, optName := range []string{"adam", "momentum"} {
		m := toy(t, 4, 7)
		lr := 0.01
		if optName == "momentum" {
			lr = 0.05
		}
		tr, err := New(m, Options{Epochs: 15, Batch: 32, LR: lr, Optimizer: optName, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		losses, err := tr.Fit(context.Background(), trainSet)
		tr.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !(losses[len(losses)-1] < losses[0]/4) {
			t.Errorf("%s: loss %v -> %v, want it to fall by 4x", optName, losses[0], losses[len(losses)-1])
		}
		if acc := accuracy(t, m, testSet); acc < 0.95 {
			t.Errorf("%s: held-out accuracy %.3f, want >= 0.95", optName, acc)
		}
	}
}

// xent is the oracle's mean softmax cross-entropy of the model on d, in
// float64.
func xent(m *model.Model, d Data) float64 {
	h, w, c := m.InputShape()
	sz := h * w * c
	total := 0.0
	for i := 0; i < d.N(); i++ {
		z := oracle.Logits(m, d.X[i*sz:(i+1)*sz], oracle.Options{})
		mx := math.Inf(-1)
		for _, v := range z {
			mx = math.Max(mx, v)
		}
		s := 0.0
		for _, v := range z {
			s += math.Exp(v - mx)
		}
		total += mx + math.Log(s) - z[d.Labels[i]]
	}
	return total / float64(d.N())
}

// TestGradients checks the graph's gradients of every parameter of models
// using every layer type against central differences of the oracle's loss.
// BatchNormalization is frozen (its weights are constants) but passes the
// gradient through.
func TestGradients(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(uint64) (*model.Model, error)
	}{
		{"toy", func(seed uint64) (*model.Model, error) { return toy(t, 5, seed), nil }},
		{"toy-odd", func(seed uint64) (*model.Model, error) { return toyOdd(t, 5, seed), nil }},
		{"general", fixture.General},
		{"layers", fixture.Layers},
		{"merge", fixture.Merge},
		{"activations", fixture.Activations},
	} {
		m, err := tc.make(5)
		if err != nil {
			t.Fatal(err)
		}
		checkGradients(t, tc.name, m)
	}
}

func checkGradients(t *testing.T, name string, m *model.Model) {
	h, w, c := m.InputShape()
	r := rand.New(rand.NewPCG(8, 8))
	const n = 4
	d := Data{X: fixture.RandomImages(r, n, h, w, c), Labels: []int{0, 3, 1, 4}}
	tr, err := New(m, Options{Epochs: 1, Batch: n, LR: 1e-9})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	copy(tr.gr.X.Value().Data().([]float32), d.X)
	for i, l := range d.Labels {
		tr.yBuf[i*m.Classes+l] = 1
	}
	if err := tr.vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, p := range tr.params {
		g, err := p.Grad()
		if err != nil {
			t.Fatal(err)
		}
		grad := slices.Clone(g.Data().([]float32))
		vals := p.Value().Data().([]float32)
		for _, i := range r.Perm(len(vals))[:min(6, len(vals))] {
			old := vals[i]
			const eps = 1e-5
			// Small steps stay clear of ReLU and max-pool switches; divide by
			// the steps float32 can actually take.
			vals[i] = old + eps
			hi := float64(vals[i])
			up := xent(m, d)
			vals[i] = old - eps
			lo := float64(vals[i])
			down := xent(m, d)
			vals[i] = old
			fd := (up - down) / (hi - lo)
			if d := math.Abs(fd - float64(grad[i])); !(d <= 2e-3*(1+math.Abs(fd))) {
				t.Errorf("%s: %s[%d]: gradient %g, finite difference %g", name, p.Name(), i, grad[i], fd)
			}
			checked++
		}
	}
	if checked < 5*len(tr.params) {
		t.Fatalf("%s: checked only %d entries", name, checked)
	}
}

func TestMasksAndDeterminism(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	d := quadrants(r, 96)
	run := func() *model.Model {
		m := toy(t, 4, 9)
		tr, err := New(m, Options{Epochs: 3, Batch: 16, LR: 0.01, Seed: 5, Masks: map[string][]int{"c1": {1, 4}}})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if _, err := tr.Fit(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := run(), run()
	c1 := a.Layer("c1")
	if got := c1.ZeroChannels(); !slices.Equal(got, []int{1, 4}) {
		t.Errorf("held channels: zero channels %v, want [1 4]", got)
	}
	before := toy(t, 4, 9)
	if slices.Equal(before.Layer("d").Kernel, a.Layer("d").Kernel) {
		t.Errorf("training changed nothing")
	}
	for i, l := range a.Layers {
		if !slices.Equal(l.Kernel, b.Layers[i].Kernel) || !slices.Equal(l.Bias, b.Layers[i].Bias) {
			t.Errorf("layer %s: two runs with one seed differ", l.Name)
		}
	}
}

// TestFusedGradients: in the training graph a Conv2D with a ReLU under a
// 2x2 max pool is one op that keeps its windows' arg-max, and its gradient
// routes through them (toy); a ReLU under another pool has its gradient
// applied inside the pool's (general); neither has a separate 4-D ReLU or
// ReLU-gradient pass. TestGradients checks both against finite
// differences.
func TestFusedGradients(t *testing.T) {
	for _, tc := range []struct {
		name      string
		m         *model.Model
		op, grads string
	}{
		{"toy", toy(t, 5, 3), "ConvPoolTrain", "GradPoolCodes"},
		{"toy-odd", toyOdd(t, 5, 3), "ConvPoolTrain", "GradPoolCodes"},
		{"general", must.Get(t, fixture.General, 5), "Conv", "GradMaxPool"},
	} {
		tr, err := New(tc.m, Options{Epochs: 1, Batch: 4, LR: 1e-3})
		if err != nil {
			t.Fatal(err)
		}
		ops, grads := 0, 0
		for _, n := range tr.run.AllNodes() {
			if n.Op() == nil {
				continue
			}
			name := n.Op().String()
			if strings.HasPrefix(name, tc.op+"{") {
				ops++
			}
			if strings.HasPrefix(name, tc.grads) && (tc.grads == "GradPoolCodes" || strings.HasSuffix(name, "{relu}")) {
				grads++
			}
			if strings.HasPrefix(name, "ReLU4") || strings.HasPrefix(name, "GradReLU4") {
				t.Errorf("%s: training graph has %s", tc.name, name)
			}
		}
		tr.Close()
		if ops == 0 || grads == 0 {
			t.Errorf("%s: %d %s ops, %d of their fused gradients", tc.name, ops, tc.op, grads)
		}
	}
}

// asBytes is d's images as bytes and a per-channel table: each value of
// quadrants is quantized to one of 256 levels, and the table holds, per
// channel, that level's value with a channel's own offset, so that a
// mixed-up channel or byte shows.
func asBytes(d Data, c int) (values, bytes Data) {
	lut := make([]float32, 256*c)
	for ch := range c {
		for b := range 256 {
			lut[ch*256+b] = float32(b)/255 + float32(ch)*0.01
		}
	}
	bytes = Data{X8: make([]uint8, len(d.X)), LUT: lut, Labels: d.Labels}
	values = Data{X: make([]float32, len(d.X)), Labels: d.Labels}
	for i, v := range d.X {
		b := uint8(math.Round(float64(v) * 255))
		bytes.X8[i], values.X[i] = b, lut[(i%c)*256+int(b)]
	}
	return values, bytes
}

// TestBytes: a set kept as bytes and a table trains to the same weights,
// bit for bit, and scores the same accuracy, as the same set kept as
// values; Values and Image expand them (1, 3 and 4 channels).
func TestBytes(t *testing.T) {
	values, bytes := asBytes(quadrants(rand.New(rand.NewPCG(9, 9)), 64), 3)
	var weights [2][][]float32
	var m *model.Model
	for k, d := range []Data{values, bytes} {
		m = toy(t, 4, 9)
		tr, err := New(m, Options{Epochs: 2, Batch: 16, LR: 0.01, Seed: 5})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Fit(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		tr.Close()
		for _, l := range m.Layers {
			weights[k] = append(weights[k], l.Kernel, l.Bias)
		}
		if k == 0 {
			continue
		}
		for i := range weights[0] {
			if !slices.EqualFunc(weights[0][i], weights[1][i], func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
				t.Fatalf("weights %d: trained on bytes differ from trained on values", i)
			}
		}
	}
	// The trained network scores the same on both.
	a, err := values.Accuracy(m)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := bytes.Accuracy(m); err != nil || a != b {
		t.Errorf("accuracy on bytes %v (%v), on values %v", b, err, a)
	}
	if !slices.Equal(bytes.Values(), values.X) {
		t.Error("Values of bytes differ from the values")
	}
	for _, c := range []int{1, 3, 4} {
		v, b := asBytes(quadrants(rand.New(rand.NewPCG(2, 2)), 2), c)
		sz := len(v.X) / 2
		got := make([]float32, sz)
		b.Image(1, sz, got)
		if !slices.Equal(got, v.X[sz:]) {
			t.Errorf("%d channels: Image of bytes differs from the values", c)
		}
	}
}

// TestNoInputGradient: the machine runs the loss and the weights'
// gradients, not the gradient with respect to the images G.Grad derives as
// well (a seventh of a training step on the lab's B).
func TestNoInputGradient(t *testing.T) {
	m := toy(t, 4, 9)
	tr, err := New(m, Options{Epochs: 1, Batch: 4, LR: 1e-3})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	x := tr.gr.X.Shape()
	found := false
	for _, n := range tr.gr.G.AllNodes() {
		if n.Op() != nil && strings.HasPrefix(n.Op().String(), "ConvGradInput") && n.Shape().Eq(x) {
			found = true
			if slices.Contains(tr.run.AllNodes(), n) {
				t.Errorf("the machine computes %v, the images' gradient", n.Op())
			}
		}
	}
	if !found {
		t.Fatal("the graph has no gradient of the images to leave out: the test checks nothing")
	}
	if !slices.Contains(tr.run.AllNodes(), tr.loss) {
		t.Error("the machine leaves out the loss")
	}
}

// TestBiasGradients: every bias gradient the machine computes (summed on
// its own, or on the way by a pooled convolution's routed gradient)
// equals the channel sums of the gradient it is the bias gradient of
// (finite differences in TestGradients are too coarse for a bias gradient
// this small to be wrong): toy's pooled convolutions, general's
// convolutions under a 3x2 pool and alone, dense layers.
func TestBiasGradients(t *testing.T) {
	for _, tc := range []struct {
		name         string
		m            *model.Model
		biases, kept int // bias gradients in its training graph, of them summed on the way
	}{
		{"toy", toy(t, 4, 9), 3, 1},
		{"toy-odd", toyOdd(t, 4, 9), 2, 1},
		{"general", must.Get(t, fixture.General, 5), 5, 0},
	} {
		m := tc.m
		h, w, c := m.InputShape()
		const n = 8
		x := fixture.RandomImages(rand.New(rand.NewPCG(3, 3)), n, h, w, c)
		tr, err := New(m, Options{Epochs: 1, Batch: n, LR: 1e-3})
		if err != nil {
			t.Fatal(err)
		}
		copy(tr.input(), x)
		for i := range n {
			tr.yBuf[i*m.Classes+i%m.Classes] = 1
		}
		if err := tr.vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		checked, kept := 0, 0
		for _, nd := range tr.run.AllNodes() {
			if nd.Op() == nil || !strings.HasPrefix(nd.Op().String(), "BiasGrad") {
				continue
			}
			if strings.HasSuffix(nd.Op().String(), "{kept}") {
				kept++
			}
			ch := tr.run.From(nd.ID())
			if !ch.Next() {
				t.Fatalf("%s: %v has no input", tc.name, nd.Op())
			}
			in := ch.Node().(*G.Node).Value().Data().([]float32)
			got := nd.Value().Data().([]float32)
			want := make([]float64, len(got))
			for i, v := range in {
				want[i%len(got)] += float64(v)
			}
			nonzero := 0
			for j := range got {
				if d := math.Abs(float64(got[j]) - want[j]); !(d <= 1e-6*(1+math.Abs(want[j]))) {
					t.Errorf("%s: %v: channel %d: %g, the gradient sums to %g", tc.name, nd.Op(), j, got[j], want[j])
				}
				if want[j] != 0 {
					nonzero++
				}
			}
			if nonzero == 0 {
				t.Errorf("%s: %v: every channel sums to zero: checks nothing", tc.name, nd.Op())
			}
			checked++
		}
		tr.Close()
		if checked != tc.biases || kept != tc.kept {
			t.Errorf("%s: %d bias gradients checked, %d of them summed on the way; want %d, %d", tc.name, checked, kept, tc.biases, tc.kept)
		}
	}
}
