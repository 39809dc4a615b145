// Package infer runs models over image sets: batches stream from the file
// through each model's gorgonia graph to predicted classes.
package infer

import (
	"context"
	"fmt"

	"badprune/internal/h5data"
	"badprune/internal/model"
	"badprune/internal/progress"
)

// DefaultBatch is the number of images per graph run.
const DefaultBatch = 256

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

// Classifier predicts classes with a model's graph.
type Classifier struct {
	m *model.Model
	r *model.Runner
}

// NewClassifier builds m's graph for batches of up to batch images.
func NewClassifier(m *model.Model, batch int) (*Classifier, error) {
	gr, err := m.Build(model.GraphOptions{Batch: batch})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	r, err := gr.NewRunner(m.Output.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	return &Classifier{m: m, r: r}, nil
}

// Predict labels the n NHWC images in x (n at most the batch size).
func (c *Classifier) Predict(x []float32, n int, out []int) error {
	in := c.r.Input()
	if len(x) > len(in) {
		return fmt.Errorf("infer: %d values for a batch of %d", len(x), len(in))
	}
	copy(in, x)
	clear(in[len(x):])
	res, err := c.r.Run()
	if err != nil {
		return fmt.Errorf("%s: %w", c.m.Path, err)
	}
	Argmax(res[0], c.m.Classes, out[:n])
	return nil
}

// Close releases the graph's machine.
func (c *Classifier) Close() { c.r.Close() }

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
	if len(labels) == 0 {
		return 0, nil
	}
	cl, err := NewClassifier(m, min(DefaultBatch, len(labels)))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	h, w, c := m.InputShape()
	sz := h * w * c
	pred := make([]int, DefaultBatch)
	hit := 0
	for lo := 0; lo < len(labels); lo += DefaultBatch {
		n := min(DefaultBatch, len(labels)-lo)
		if err := cl.Predict(x[lo*sz:(lo+n)*sz], n, pred); err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			if pred[i] == labels[lo+i] {
				hit++
			}
		}
	}
	return 100 * float64(hit) / float64(len(labels)), nil
}
