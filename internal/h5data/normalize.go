package h5data

import (
	"fmt"
	"math"
)

// Normalization is what PyTorch's data loaders do to pixels once they are
// scaled (torchvision's Normalize): (x - Mean) / Std, with one value, or
// one per channel, of each. The zero value leaves pixels as they are.
type Normalization struct{ Mean, Std []float32 }

// IsZero reports whether n changes nothing.
func (n Normalization) IsZero() bool { return n.Mean == nil && n.Std == nil }

// NormError is a normalization that does not fit the images or is none.
type NormError struct {
	Std     bool // about the standard deviations, else the means
	Values  []float32
	Problem string
}

func (e *NormError) Error() string {
	what := "mean"
	if e.Std {
		what = "std"
	}
	return fmt.Sprintf("%s %v: %s", what, e.Values, e.Problem)
}

// Check reports an error unless n fits images of c channels: one value, or
// c, of each; finite means; positive, finite standard deviations.
func (n Normalization) Check(c int) error {
	for _, p := range []struct {
		std bool
		v   []float32
	}{{false, n.Mean}, {true, n.Std}} {
		if p.v == nil {
			continue
		}
		if len(p.v) != 1 && len(p.v) != c {
			return &NormError{Std: p.std, Values: p.v, Problem: fmt.Sprintf("%d values for images of %d channels; want 1 or %d", len(p.v), c, c)}
		}
		for _, x := range p.v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || p.std && x <= 0 {
				want := "finite numbers"
				if p.std {
					want = "positive numbers"
				}
				return &NormError{Std: p.std, Values: p.v, Problem: "want " + want}
			}
		}
	}
	return nil
}

// Apply normalizes NHWC values of c channels in place, as PyTorch does in
// float32: subtract, then divide.
func (n Normalization) Apply(x []float32, c int) {
	if n.IsZero() {
		return
	}
	mean, std := make([]float32, c), make([]float32, c)
	for ch := range c {
		mean[ch], std[ch] = 0, 1
		if n.Mean != nil {
			mean[ch] = n.Mean[ch%len(n.Mean)]
		}
		if n.Std != nil {
			std[ch] = n.Std[ch%len(n.Std)]
		}
	}
	for i := 0; i+c <= len(x); i += c {
		px := x[i : i+c]
		for ch := range px {
			px[ch] = (px[ch] - mean[ch]) / std[ch]
		}
	}
}
