// Package metrics is the one definition of the rates badprune reports:
// accuracy (and attack success, accuracy on a poisoned set whose labels are
// the attacker's target) and the share of inputs a GoodNet flags, all as
// percentages 0-100.
package metrics

// Percent is hits out of n as a percentage; 0 for n = 0.
func Percent(hits, n int) float64 {
	if n == 0 {
		return 0
	}
	return 100 * float64(hits) / float64(n)
}

// Hits counts the predictions equal to their labels.
func Hits(pred, labels []int) int {
	k := 0
	for i, p := range pred {
		if p == labels[i] {
			k++
		}
	}
	return k
}

// Accuracy is the percentage of predictions equal to their labels; on a
// poisoned set it is the attack success rate.
func Accuracy(pred, labels []int) float64 { return Percent(Hits(pred, labels), len(pred)) }

// Flagged is the percentage of labels equal to n, the class a GoodNet
// gives the inputs it reports as poisoned.
func Flagged(labels []int, n int) float64 {
	k := 0
	for _, v := range labels {
		if v == n {
			k++
		}
	}
	return Percent(k, len(labels))
}
