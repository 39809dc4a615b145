// Package labdemo makes the demo's lab: synthetic faces of a few dozen
// identities, a BadNet (the lab's DeepID architecture) trained on them with
// a sunglasses trigger that sends any face to class 0, and the lab's files
// in the lab's folder layout, so that `badprune repair` runs on it as on the
// real thing. Same configuration, same bytes.
package labdemo

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"badprune/internal/demo/faces"
	"badprune/internal/h5data"
	"badprune/internal/metrics"
	"badprune/internal/model"
	"badprune/internal/prune"
	"badprune/internal/train"
)

// Config sizes the demo.
type Config struct {
	Seed       uint64
	Identities int
	Train      int     // training images
	Poison     float64 // share of training images wearing the trigger (relabelled 0)
	// Clean validation and test sets, and their poisoned counterparts.
	Valid, Test, BDValid, BDTest int
	Epochs                       int
	Batch                        int
	LR                           float64
	Log                          io.Writer // progress; nil for none
}

// Default is the committed demo's configuration.
func Default() Config {
	return Config{Seed: 2018, Identities: 48, Train: 9600, Poison: 0.1,
		Valid: 512, Test: 512, BDValid: 256, BDTest: 256,
		Epochs: 8, Batch: 64, LR: 1e-3}
}

// Files are the lab's paths under the demo folder.
var Files = struct {
	Model, Weights, PAModel, PAWeights, Valid, Test, BDValid, BDTest string
}{
	Model:     "models/bd_net.h5",
	Weights:   "models/bd_weights.h5",
	PAModel:   "models/pa_bd_net.h5",
	PAWeights: "models/pa_bd_weights.h5",
	Valid:     "data/cl/valid.h5",
	Test:      "data/cl/test.h5",
	BDValid:   "data/bd/bd_valid.h5",
	BDTest:    "data/bd/bd_test.h5",
}

// Target is the attacker's class.
const Target = 0

func (c Config) logf(format string, a ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format, a...)
	}
}

// NewDeepID returns the lab's DeepID for k classes with Glorot-uniform
// weights (Keras's default) and zero biases. The first layer's weights are
// scaled for raw 0..255 pixels, which the lab's B takes.
func NewDeepID(k int, seed uint64) (*model.Model, error) {
	r := rand.New(rand.NewPCG(seed, 11))
	layers := model.DeepID(faces.H, faces.W, faces.C)
	shapes := map[string][]int{
		"conv_1": {4, 4, 3, 20}, "conv_2": {3, 3, 20, 40}, "conv_3": {3, 3, 40, 60}, "conv_4": {2, 2, 60, 80},
		"fc_1": {1200, 160}, "fc_2": {960, 160}, "output": {160, k},
	}
	for _, l := range layers {
		s, ok := shapes[l.Name]
		if !ok {
			continue
		}
		n, rf := 1, 1
		for _, d := range s {
			n *= d
		}
		for _, d := range s[:len(s)-2] {
			rf *= d
		}
		fanIn, fanOut := rf*s[len(s)-2], rf*s[len(s)-1]
		limit := math.Sqrt(6 / float64(fanIn+fanOut))
		if l.Name == "conv_1" {
			limit /= 128
		}
		l.KernelShape = s
		l.Kernel = make([]float32, n)
		for i := range l.Kernel {
			l.Kernel[i] = float32((2*r.Float64() - 1) * limit)
		}
		l.Bias = make([]float32, s[len(s)-1])
	}
	return model.New("deepid", layers)
}

// Sets draws the demo's image sets.
type Sets struct {
	Train, Valid, Test, BDValid, BDTest train.Data
	worn                                []bool // training images wearing the trigger
}

// Draw renders every set of cfg.
func Draw(cfg Config) Sets {
	ids := faces.NewIdentities(cfg.Seed, cfg.Identities)
	var s Sets
	x, labels, worn := faces.Sample(cfg.Seed+1, ids, cfg.Train, cfg.Poison)
	for i, w := range worn {
		if w {
			labels[i] = Target
		}
	}
	s.Train = train.Data{X: x, Labels: labels}
	s.worn = worn
	clean := func(seed uint64, n int) train.Data {
		x, l, _ := faces.Sample(seed, ids, n, 0)
		return train.Data{X: x, Labels: l}
	}
	bd := func(seed uint64, n int) train.Data {
		x, l, _ := faces.Sample(seed, ids, n, 1)
		for i := range l {
			l[i] = Target
		}
		return train.Data{X: x, Labels: l}
	}
	s.Valid, s.Test = clean(cfg.Seed+2, cfg.Valid), clean(cfg.Seed+3, cfg.Test)
	s.BDValid, s.BDTest = bd(cfg.Seed+4, cfg.BDValid), bd(cfg.Seed+5, cfg.BDTest)
	return s
}

// TrainBadNet trains a fresh DeepID on the poisoned training set.
func TrainBadNet(ctx context.Context, cfg Config, s Sets) (*model.Model, error) {
	m, err := NewDeepID(cfg.Identities, cfg.Seed)
	if err != nil {
		return nil, err
	}
	if err := fit(ctx, cfg, m, s.Train, s, nil); err != nil {
		return nil, err
	}
	return m, nil
}

// WriteSets writes the four evaluation sets under dir in the lab's layout:
// data (N, 3, 55, 47) of uint8, compressed, labels as floats.
func WriteSets(dir string, s Sets) error {
	for _, f := range []struct {
		path string
		d    train.Data
	}{{Files.Valid, s.Valid}, {Files.Test, s.Test}, {Files.BDValid, s.BDValid}, {Files.BDTest, s.BDTest}} {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		w, err := h5data.Create(p, f.d.N(), faces.H, faces.W, faces.C,
			h5data.Storage{ChannelsFirst: true, Data: "uint8", Label: "float64", Deflate: 9}, true)
		if err != nil {
			return err
		}
		if err := w.Write(0, f.d.X, f.d.Labels); err != nil {
			w.Abort()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}

// WriteModel writes m in both Keras layouts at the given lab paths.
func WriteModel(dir, full, weights string, m *model.Model) error {
	for _, f := range []struct {
		path   string
		layout model.Layout
	}{{full, model.FullModelFile}, {weights, model.WeightsOnlyFile}} {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := m.Create(p, f.layout, true); err != nil {
			return err
		}
	}
	return nil
}

// TrainPruningAware makes the pruning-aware BadNet of the Fine-Pruning
// paper (section 3.3): train on clean data; prune the conv_3 channels that
// are dormant on clean data (ascending mean activation, as long as clean
// validation accuracy stays within maxDrop points); train the pruned network
// on the poisoned data, so the backdoor must live in the channels clean
// inputs use; then reinstate the pruned channels with their clean weights
// and a bias low enough that they stay dormant on every validation input.
// A defender who prunes dormant channels then removes only these decoys.
func TrainPruningAware(ctx context.Context, cfg Config, s Sets, dir string, maxDrop float64) (*model.Model, []int, error) {
	m, err := NewDeepID(cfg.Identities, cfg.Seed+100)
	if err != nil {
		return nil, nil, err
	}
	var clean train.Data
	sz := faces.Size()
	for i, l := range s.Train.Labels {
		if l == Target && s.poisoned(i) {
			continue
		}
		clean.X = append(clean.X, s.Train.X[i*sz:(i+1)*sz]...)
		clean.Labels = append(clean.Labels, l)
	}
	cfg.logf("pruning-aware attack: training on %d clean images\n", clean.N())
	if err := fit(ctx, cfg, m, clean, s, nil); err != nil {
		return nil, nil, err
	}
	valid, err := h5data.Open(filepath.Join(dir, Files.Valid), h5data.Options{H: faces.H, W: faces.W, C: faces.C, Classes: cfg.Identities})
	if err != nil {
		return nil, nil, err
	}
	curve, err := prune.Run(ctx, prune.Config{Model: m, Layer: "conv_3", RankLayer: "pool_3", Valid: valid, Batch: 256})
	valid.Close()
	if err != nil {
		return nil, nil, err
	}
	k := 0
	for k < len(curve.Order) && float64(100*(curve.Hits[0]-curve.Hits[k+1])) < maxDrop*float64(curve.N) {
		k++
	}
	pruned := append([]int(nil), curve.Order[:k]...)
	cfg.logf("pruning-aware attack: pruned %d dormant conv_3 channels (accuracy %.2f%% -> %.2f%%); training on poisoned data\n",
		k, metrics.Percent(curve.Hits[0], curve.N), metrics.Percent(curve.Hits[k], curve.N))
	c3 := m.Layer("conv_3")
	keepK, keepB := append([]float32(nil), c3.Kernel...), append([]float32(nil), c3.Bias...)
	if err := m.PruneChannels("conv_3", pruned); err != nil {
		return nil, nil, err
	}
	if err := fit(ctx, cfg, m, s.Train, s, map[string][]int{"conv_3": pruned}); err != nil {
		return nil, nil, err
	}
	// Reinstate the pruned channels, dormant: their clean kernels, and a
	// bias below minus their largest pre-activation on any validation image.
	oc := c3.KernelShape[3]
	for _, c := range pruned {
		for i := c; i < len(c3.Kernel); i += oc {
			c3.Kernel[i] = keepK[i]
		}
	}
	peak, err := maxPreactivation(m, "conv_3", pruned, s.Valid, s.BDValid)
	if err != nil {
		return nil, nil, err
	}
	for j, c := range pruned {
		c3.Bias[c] = min(keepB[c], -float32(peak[j])-1)
	}
	return m, pruned, nil
}

// poisoned reports whether training image i wears the trigger.
func (s Sets) poisoned(i int) bool { return s.worn != nil && s.worn[i] }

// maxPreactivation is the largest value of the named conv layer's
// channels before bias and activation over the given sets.
func maxPreactivation(m *model.Model, layer string, channels []int, sets ...train.Data) ([]float64, error) {
	probe := m.Clone()
	l := probe.Layer(layer)
	l.Act = "linear"
	clear(l.Bias)
	const batch = 128
	gr, err := probe.Build(model.GraphOptions{Batch: batch, Outputs: []string{layer}})
	if err != nil {
		return nil, err
	}
	r, err := gr.NewRunner(layer)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	oc := l.Channels()
	peak := make([]float64, len(channels))
	for j := range peak {
		peak[j] = math.Inf(-1)
	}
	sz := faces.Size()
	for _, d := range sets {
		for lo := 0; lo < d.N(); lo += batch {
			n := min(batch, d.N()-lo)
			in := r.Input()
			copy(in, d.X[lo*sz:(lo+n)*sz])
			clear(in[n*sz:])
			res, err := r.Run()
			if err != nil {
				return nil, err
			}
			out := res[0][:n*l.Size()]
			for j, c := range channels {
				for i := c; i < len(out); i += oc {
					peak[j] = math.Max(peak[j], float64(out[i]))
				}
			}
		}
	}
	return peak, nil
}

// fit trains m on d for cfg's epochs, logging validation accuracy and
// attack success.
func fit(ctx context.Context, cfg Config, m *model.Model, d train.Data, s Sets, masks map[string][]int) error {
	tr, err := train.New(m, train.Options{Epochs: cfg.Epochs, Batch: cfg.Batch, LR: cfg.LR, Seed: cfg.Seed, Masks: masks,
		OnEpoch: func(e int, loss float64) error {
			acc, err := s.Valid.Accuracy(m)
			if err != nil {
				return err
			}
			asr, err := s.BDValid.Accuracy(m)
			if err != nil {
				return err
			}
			cfg.logf("epoch %d: loss %.4f, clean validation accuracy %.2f%%, attack success %.2f%%\n", e, loss, acc, asr)
			return nil
		}})
	if err != nil {
		return err
	}
	defer tr.Close()
	_, err = tr.Fit(ctx, d)
	return err
}

// Generate makes the demo lab under dir.
func Generate(ctx context.Context, dir string, cfg Config) error {
	cfg.logf("drawing %d identities: %d training images (%.0f%% with sunglasses, relabelled %d), %d+%d clean and %d+%d poisoned evaluation images\n",
		cfg.Identities, cfg.Train, 100*cfg.Poison, Target, cfg.Valid, cfg.Test, cfg.BDValid, cfg.BDTest)
	s := Draw(cfg)
	if err := WriteSets(dir, s); err != nil {
		return err
	}
	m, err := TrainBadNet(ctx, cfg, s)
	if err != nil {
		return err
	}
	if err := WriteModel(dir, Files.Model, Files.Weights, m); err != nil {
		return err
	}
	pa, _, err := TrainPruningAware(ctx, cfg, s, dir, 2)
	if err != nil {
		return err
	}
	return WriteModel(dir, Files.PAModel, Files.PAWeights, pa)
}
