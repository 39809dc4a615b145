// Package infer runs networks over images: a Trunk runs a network's graph up
// to chosen layers, a Classifier up to its output, and Predict streams a set
// through several classifiers. It is the one place that feeds batches to a
// network's graph.
package infer

import (
	"context"
	"fmt"

	"badprune/internal/h5data"
	"badprune/internal/metrics"
	"badprune/internal/model"
	"badprune/internal/progress"
)

// DefaultBatch is the number of images per graph run: 128 keep the
// kernels as busy as 256, in half the memory (a repair's batches, graph
// outputs and copies were 40 MB more at 256, and fresh memory is dear).
const DefaultBatch = 128

// Argmax returns the index of the first largest value of each row of k values.
func Argmax(rows []float32, k int, out []int) {
	for i := range out {
		row := rows[i*k : (i+1)*k]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		out[i] = best
	}
}

// Trunk runs a network's graph on batches of images up to chosen layers.
type Trunk struct {
	m     *model.Model
	r     *model.Runner
	batch int
	size  int // values per image
}

// NewTrunk builds m's graph for batches of up to batch images, computing
// the outputs of the named layers.
func NewTrunk(m *model.Model, batch int, outputs ...string) (*Trunk, error) {
	gr, err := m.Build(model.GraphOptions{Batch: batch, Outputs: outputs})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	r, err := gr.NewRunner(outputs...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	h, w, c := m.InputShape()
	return &Trunk{m: m, r: r, batch: batch, size: h * w * c}, nil
}

// Run computes the outputs for the first n NHWC images of x: one slice per
// output layer holding Batch() rows, of which the first n are valid. The
// slices are reused by the next Run.
func (t *Trunk) Run(x []float32, n int) ([][]float32, error) {
	if n > t.batch || len(x) < n*t.size {
		return nil, fmt.Errorf("infer: %d images for a batch of %d", n, t.batch)
	}
	// A whole batch is read where it is; a partial one is copied into the
	// runner's own buffer and padded with zeros.
	full := n == t.batch
	in := x[:n*t.size]
	if !full {
		in = t.r.Input()
		copy(in, x[:n*t.size])
		clear(in[n*t.size:])
	}
	if err := t.r.Bind(in); err != nil {
		return nil, fmt.Errorf("%s: %w", t.m.Path, err)
	}
	res, err := t.r.Run()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.m.Path, err)
	}
	return res, nil
}

// SetSerial makes the next runs compute on the calling goroutine alone (on)
// or spread over the cores (off, the default).
func (t *Trunk) SetSerial(on bool) { t.r.SetSerial(on) }

// Close releases the graph's machine.
func (t *Trunk) Close() { t.r.Close() }

// Classifier predicts classes with a model's graph.
type Classifier struct {
	t *Trunk
}

// NewClassifier builds m's graph for batches of up to batch images.
func NewClassifier(m *model.Model, batch int) (*Classifier, error) {
	t, err := NewTrunk(m, batch, m.Output.Name)
	if err != nil {
		return nil, err
	}
	return &Classifier{t: t}, nil
}

// Predict labels the n NHWC images in x (n at most the batch size).
func (c *Classifier) Predict(x []float32, n int, out []int) error {
	res, err := c.t.Run(x, n)
	if err != nil {
		return err
	}
	Argmax(res[0], c.t.m.Classes, out[:n])
	return nil
}

// SetSerial makes the next predictions compute on the calling goroutine
// alone (on) or spread over the cores (off, the default).
func (c *Classifier) SetSerial(on bool) { c.t.SetSerial(on) }

// Close releases the graph's machine.
func (c *Classifier) Close() { c.t.Close() }

// Part runs the part of a network's graph after chosen layers, whose
// outputs are given (fed) instead of computed, up to its logits.
type Part struct {
	m     *model.Model
	r     *model.Runner
	batch int
	feeds [][]float32 // nil for a fed layer the logits do not need
	sizes []int
}

// NewPart builds m's graph from the outputs of the feeds layers to its
// logits, for batches of up to batch samples.
func NewPart(m *model.Model, batch int, feeds ...string) (*Part, error) {
	gr, err := m.Build(model.GraphOptions{Batch: batch, Feeds: feeds})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	r, err := gr.NewRunner(m.Output.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	p := &Part{m: m, r: r, batch: batch}
	for _, f := range feeds {
		p.feeds = append(p.feeds, r.Feed(f))
		p.sizes = append(p.sizes, m.Layer(f).Size())
	}
	return p, nil
}

// Predict labels n samples (at most the batch) from the outputs of the fed
// layers: in[i] holds n rows of the i-th.
func (p *Part) Predict(in [][]float32, n int, out []int) error {
	if n > p.batch {
		return fmt.Errorf("infer: %d samples for a batch of %d", n, p.batch)
	}
	for i, f := range p.feeds {
		if f != nil {
			copy(f, in[i][:n*p.sizes[i]])
			clear(f[n*p.sizes[i]:])
		}
	}
	res, err := p.r.Run()
	if err != nil {
		return fmt.Errorf("%s: %w", p.m.Path, err)
	}
	Argmax(res[0], p.m.Classes, out[:n])
	return nil
}

// Close releases the graph's machine.
func (p *Part) Close() { p.r.Close() }

// Labels returns m's class for each of the n NHWC images in x.
func Labels(m *model.Model, x []float32, n int) ([]int, error) {
	out := make([]int, n)
	if n == 0 {
		return out, nil
	}
	batch := min(DefaultBatch, n)
	cl, err := NewClassifier(m, batch)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	h, w, c := m.InputShape()
	sz := h * w * c
	for lo := 0; lo < n; lo += batch {
		k := min(batch, n-lo)
		if err := cl.Predict(x[lo*sz:(lo+k)*sz], k, out[lo:lo+k]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Predict returns, for each model, the predicted class of every sample of
// set. The models must take the set's image size.
func Predict(ctx context.Context, set *h5data.Set, models []*model.Model, batch int, rep *progress.Reporter) ([][]int, error) {
	cs := make([]*Classifier, len(models))
	for i, m := range models {
		c, err := NewClassifier(m, batch)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		cs[i] = c
	}
	preds := make([][]int, len(models))
	for i := range preds {
		preds[i] = make([]int, set.N)
	}
	rep.Start(set.Path, set.N, "images")
	err := set.Stream(ctx, batch, func(b h5data.Batch) error {
		for i, c := range cs {
			if err := c.Predict(b.X, b.N, preds[i][b.Start:b.Start+b.N]); err != nil {
				return err
			}
		}
		rep.Add(b.N)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return preds, nil
}

// Accuracy is the percentage of the NHWC images x that m labels as labels
// says (0 for no images).
func Accuracy(m *model.Model, x []float32, labels []int) (float64, error) {
	pred, err := Labels(m, x, len(labels))
	if err != nil {
		return 0, err
	}
	return metrics.Accuracy(pred, labels), nil
}

// AccuracyOf is Accuracy on the len(labels) images image writes: image(i,
// dst) puts image i (NHWC) into dst, a batch at a time, so that a set kept
// in another form is never held as float32 whole.
func AccuracyOf(m *model.Model, labels []int, image func(i int, dst []float32)) (float64, error) {
	n := len(labels)
	if n == 0 {
		return metrics.Accuracy(nil, labels), nil
	}
	batch := min(DefaultBatch, n)
	cl, err := NewClassifier(m, batch)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	h, w, c := m.InputShape()
	sz := h * w * c
	x := make([]float32, batch*sz)
	pred := make([]int, n)
	for lo := 0; lo < n; lo += batch {
		k := min(batch, n-lo)
		for i := range k {
			image(lo+i, x[i*sz:(i+1)*sz])
		}
		if err := cl.Predict(x[:k*sz], k, pred[lo:lo+k]); err != nil {
			return 0, err
		}
	}
	return metrics.Accuracy(pred, labels), nil
}
