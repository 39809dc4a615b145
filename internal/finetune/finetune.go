// Package finetune is the second half of Fine-Pruning: train a pruned
// network further on clean data, its pruned channels held at zero, keeping
// the epoch that does best on a held-out share of the data.
package finetune

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"badprune/internal/model"
	"badprune/internal/train"
)

// Options configure Run.
type Options struct {
	Optimizer string  // "adam" (default) or "momentum"
	L2        float64 // weight decay
	Cosine    bool    // cosine learning-rate decay over the epochs
	Epochs    int
	LR        float64
	Batch     int
	Holdout   float64 // share of the clean data kept out of training, 0 < h < 1
	Seed      uint64
	Patience  int // stop after this many epochs without a better holdout accuracy (0: never)
	// OnEpoch, if set, sees each epoch's record as it completes.
	OnEpoch func(Epoch)
}

// Epoch is one epoch's record.
type Epoch struct {
	Epoch      int
	Loss       float64 // mean training loss
	HoldoutAcc float64 // percent
	HoldoutASR float64 // percent on the poisoned data; NaN without it
	// Images and Seconds are the epoch's training (forward, backward and
	// update passes, not the holdout evaluation): its throughput. Timings
	// stay out of the logs, which are the same at every run.
	Images  int
	Seconds float64
}

// Result is a fine-tuning run.
type Result struct {
	Epochs []Epoch
	Best   int              // the epoch whose weights were kept (0: the input's)
	Masks  map[string][]int // channels held at zero, per layer
}

// Split divides n samples into a training part and a holdout of about
// share·n, by a seeded shuffle.
func Split(n int, share float64, seed uint64) (trainIdx, holdIdx []int) {
	perm := rand.New(rand.NewPCG(seed, 0x5b17)).Perm(n)
	k := int(float64(n)*share + 0.5)
	k = min(max(k, 1), n-1)
	hold := slices.Clone(perm[:k])
	tr := slices.Clone(perm[k:])
	slices.Sort(hold)
	slices.Sort(tr)
	return tr, hold
}

// Subset gathers samples idx of d, as values.
func Subset(d train.Data, idx []int, size int) train.Data {
	out := train.Data{X: make([]float32, len(idx)*size), Labels: make([]int, len(idx))}
	for i, j := range idx {
		d.Image(j, size, out.X[i*size:(i+1)*size])
		out.Labels[i] = d.Labels[j]
	}
	return out
}

// Masks lists, for every Conv2D and Dense layer, the output channels whose
// kernel slice and bias are all zero: the pruned ones.
func Masks(m *model.Model) map[string][]int {
	out := map[string][]int{}
	for _, l := range m.Layers {
		if z := l.ZeroChannels(); len(z) > 0 {
			out[l.Name] = z
		}
	}
	return out
}

// Run fine-tunes m in place on clean (all but the holdout) and leaves it
// with the weights of the epoch with the best holdout accuracy (ties to the
// later epoch; epoch 0 is m as given). bd, if not empty, is a poisoned
// set whose attack success is recorded per epoch; it is never trained on.
func Run(ctx context.Context, m *model.Model, clean, bd train.Data, opt Options) (*Result, error) {
	if !(opt.Holdout > 0 && opt.Holdout < 1) {
		return nil, fmt.Errorf("holdout %v: want a share between 0 and 1", opt.Holdout)
	}
	if clean.N() < 2 {
		return nil, errors.New("fine-tuning needs at least 2 clean samples")
	}
	h, w, c := m.InputShape()
	sz := h * w * c
	trIdx, hoIdx := Split(clean.N(), opt.Holdout, opt.Seed)
	// The training samples are a view (a copy would double the memory);
	// the small holdout is gathered for evaluation.
	trainSet, hold := clean, Subset(clean, hoIdx, sz)
	trainSet.Idx = trIdx
	if trainSet.N() < opt.Batch {
		return nil, fmt.Errorf("%d training samples after the holdout, fewer than a batch of %d", trainSet.N(), opt.Batch)
	}
	res := &Result{Masks: Masks(m)}
	record := func(e int, loss float64) (Epoch, error) {
		ep := Epoch{Epoch: e, Loss: loss, HoldoutASR: nan()}
		var err error
		if ep.HoldoutAcc, err = hold.Accuracy(m); err != nil {
			return ep, err
		}
		if bd.N() > 0 {
			if ep.HoldoutASR, err = bd.Accuracy(m); err != nil {
				return ep, err
			}
		}
		return ep, nil
	}
	start, err := record(0, nan())
	if err != nil {
		return nil, err
	}
	best, bestAcc := 0, start.HoldoutAcc
	bestW := snapshot(m)
	var began time.Time // of the epoch being trained
	tr, err := train.New(m, train.Options{Optimizer: opt.Optimizer, L2: opt.L2, Cosine: opt.Cosine, Epochs: opt.Epochs, Batch: opt.Batch, LR: opt.LR, Seed: opt.Seed, Masks: res.Masks,
		OnEpoch: func(e int, loss float64) error {
			took := time.Since(began)
			ep, err := record(e, loss)
			if err != nil {
				return err
			}
			ep.Images, ep.Seconds = trainSet.N()/opt.Batch*opt.Batch, took.Seconds()
			defer func() { began = time.Now() }()
			res.Epochs = append(res.Epochs, ep)
			if opt.OnEpoch != nil {
				opt.OnEpoch(ep)
			}
			// Ties go to the later epoch: at equal holdout accuracy, longer
			// fine-tuning has moved further from the attacker's weights.
			if ep.HoldoutAcc >= bestAcc {
				best, bestAcc, bestW = e, ep.HoldoutAcc, snapshot(m)
			}
			if opt.Patience > 0 && e-best >= opt.Patience {
				return train.Stop
			}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	began = time.Now()
	if _, err := tr.Fit(ctx, trainSet); err != nil {
		return nil, err
	}
	restore(m, bestW)
	res.Best = best
	res.Epochs = append([]Epoch{start}, res.Epochs...)
	return res, nil
}

func nan() float64 { var z float64; return z / z }

func snapshot(m *model.Model) [][2][]float32 {
	s := make([][2][]float32, len(m.Layers))
	for i, l := range m.Layers {
		s[i] = [2][]float32{slices.Clone(l.Kernel), slices.Clone(l.Bias)}
	}
	return s
}

func restore(m *model.Model, s [][2][]float32) {
	for i, l := range m.Layers {
		copy(l.Kernel, s[i][0])
		copy(l.Bias, s[i][1])
	}
}

// Trained names the layers fine-tuning changes (package train): every
// Conv2D, Dense, DepthwiseConv2D and SeparableConv2D.
func Trained(m *model.Model) []string {
	var out []string
	for _, l := range m.Layers {
		switch l.Kind {
		case model.Conv2D, model.Dense, model.DepthwiseConv2D, model.SeparableConv2D:
			out = append(out, l.Name)
		}
	}
	return out
}
