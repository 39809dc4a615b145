// Package goodnet is the repaired classifier G(B, B') of the pruning
// defense and the metrics badprune reports: G outputs the class B and B'
// agree on and flags the input (class N, one past the last class) when they
// disagree.
package goodnet

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

// Accuracy is the percentage (0-100) of predictions equal to their labels.
// On a poisoned set, whose labels are the attacker's target, it is the
// attack success rate. It is 0 for no samples.
func Accuracy(pred, labels []int) float64 {
	if len(pred) == 0 {
		return 0
	}
	hit := 0
	for i, p := range pred {
		if p == labels[i] {
			hit++
		}
	}
	return 100 * float64(hit) / float64(len(pred))
}

// Flagged is the percentage (0-100) of G's labels that are n: the inputs G
// reports as poisoned.
func Flagged(g []int, n int) float64 {
	if len(g) == 0 {
		return 0
	}
	k := 0
	for _, v := range g {
		if v == n {
			k++
		}
	}
	return 100 * float64(k) / float64(len(g))
}
