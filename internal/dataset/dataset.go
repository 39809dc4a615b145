// Package dataset opens the image sets of a run for the network that will
// read them, with the options every command shares: which datasets hold
// the images and labels, how pixels are scaled, how many images a batch
// holds.
package dataset

import (
	"context"

	"badprune/internal/h5data"
	"badprune/internal/infer"
	"badprune/internal/model"
	"badprune/internal/train"
)

// DefaultBatch is the number of images per batch unless chosen.
const DefaultBatch = infer.DefaultBatch

// Options say how to read a set.
type Options struct {
	DataKey, LabelKey string  // dataset names of the images and labels
	Scale             float64 // multiplies every pixel
	Batch             int     // images per batch
}

// Open opens the set at path, checking that it fits m: its image shape
// and its labels among m's classes.
func (o Options) Open(path string, m *model.Model) (*h5data.Set, error) {
	h, w, c := m.InputShape()
	return h5data.Open(path, h5data.Options{DataKey: o.DataKey, LabelKey: o.LabelKey,
		H: h, W: w, C: c, Classes: m.Classes, Scale: float32(o.Scale)})
}

// Load reads the whole set at path into memory, for training.
func (o Options) Load(ctx context.Context, path string, m *model.Model) (train.Data, error) {
	s, err := o.Open(path, m)
	if err != nil {
		return train.Data{}, err
	}
	defer s.Close()
	x, err := s.ReadAll(ctx)
	if err != nil {
		return train.Data{}, err
	}
	return train.Data{X: x, Labels: s.Labels}, nil
}
