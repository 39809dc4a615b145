// Package dataset opens the image sets of a run for the network that will
// read them, with the options every command shares: which datasets hold
// the images and labels, how pixels are scaled and normalized, how many
// images a batch holds.
package dataset

import (
	"context"

	"badprune/internal/h5data"
	"badprune/internal/imageio"
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
	// Mean and Std normalize the scaled pixels as PyTorch's loaders do,
	// (x*Scale - Mean) / Std: one value, or one per channel; nil for none.
	Mean, Std []float64
	Batch     int // images per batch
}

// Norm is the normalization o asks for.
func (o Options) Norm() h5data.Normalization {
	f32 := func(v []float64) []float32 {
		if v == nil {
			return nil
		}
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = float32(x)
		}
		return out
	}
	return h5data.Normalization{Mean: f32(o.Mean), Std: f32(o.Std)}
}

// Open opens the set at path, checking that it fits m: its image shape
// and its labels among m's classes.
func (o Options) Open(path string, m *model.Model) (*h5data.Set, error) {
	h, w, c := m.InputShape()
	return h5data.Open(path, h5data.Options{DataKey: o.DataKey, LabelKey: o.LabelKey,
		H: h, W: w, C: c, Classes: m.Classes, Scale: float32(o.Scale), Norm: o.Norm()})
}

// Image reads a PNG or JPEG image for m into dst (its input size, NHWC),
// scaled and normalized as the sets are.
func (o Options) Image(path string, m *model.Model, dst []float32) error {
	h, w, c := m.InputShape()
	n := o.Norm()
	if err := n.Check(c); err != nil {
		return err
	}
	if err := imageio.Load(path, h, w, c, float32(o.Scale), dst); err != nil {
		return err
	}
	n.Apply(dst[:h*w*c], c)
	return nil
}

// Load reads the whole set at path into memory, for training: as bytes
// when its pixels are integers 0..255, else as values.
func (o Options) Load(ctx context.Context, path string, m *model.Model) (train.Data, error) {
	s, err := o.Open(path, m)
	if err != nil {
		return train.Data{}, err
	}
	defer s.Close()
	px, lut, ok, err := s.ReadBytes(ctx)
	if err != nil {
		return train.Data{}, err
	}
	if ok {
		return train.Data{X8: px, LUT: lut, Labels: s.Labels}, nil
	}
	x, err := s.ReadAll(ctx)
	if err != nil {
		return train.Data{}, err
	}
	return train.Data{X: x, Labels: s.Labels}, nil
}
