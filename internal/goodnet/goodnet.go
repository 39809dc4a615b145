// Package goodnet is the repaired classifier G(B, B') of the pruning
// defense, G outputs the class B and B' agree on and flags the input (class
// N, one past the last class) when they disagree, and its evaluation beside
// B and B' on clean and poisoned sets.
package goodnet

import (
	"badprune/internal/infer"
	"badprune/internal/model"
)

// Combine returns G's labels for the predictions of B and B' on the same
// samples; n is the number of classes, the label of a flagged input.
func Combine(b, bPrime []int, n int) []int {
	g := make([]int, len(b))
	for i := range b {
		if b[i] == bPrime[i] {
			g[i] = b[i]
		} else {
			g[i] = n
		}
	}
	return g
}

// Labels returns B's class for each of the n NHWC images in x or, when r
// is not nil, G(B, r)'s.
func Labels(b, r *model.Model, x []float32, n int) ([]int, error) {
	pb, err := infer.Labels(b, x, n)
	if err != nil || r == nil {
		return pb, err
	}
	pr, err := infer.Labels(r, x, n)
	if err != nil {
		return nil, err
	}
	return Combine(pb, pr, b.Classes), nil
}
