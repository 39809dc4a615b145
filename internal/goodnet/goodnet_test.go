package goodnet

import (
	"slices"
	"testing"
)

func TestCombine(t *testing.T) {
	const n = 5
	b := []int{0, 1, 2, 3, 4, 0}
	bp := []int{0, 2, 2, 3, 1, 4}
	want := []int{0, n, 2, 3, n, n}
	if got := Combine(b, bp, n); !slices.Equal(got, want) {
		t.Fatalf("Combine = %v, want %v", got, want)
	}
}

func TestMetrics(t *testing.T) {
	cases := []struct {
		pred, labels []int
		acc, flagged float64
	}{
		{[]int{1, 2, 3, 4}, []int{1, 2, 0, 0}, 50, 0},
		{[]int{5, 5, 1, 1}, []int{1, 1, 1, 1}, 50, 50},
		{[]int{5}, []int{5}, 100, 100}, // a label equal to N never occurs in real sets
		{nil, nil, 0, 0},
	}
	for _, tc := range cases {
		if got := Accuracy(tc.pred, tc.labels); got != tc.acc {
			t.Errorf("Accuracy(%v, %v) = %v, want %v", tc.pred, tc.labels, got, tc.acc)
		}
		if got := Flagged(tc.pred, 5); got != tc.flagged {
			t.Errorf("Flagged(%v) = %v, want %v", tc.pred, got, tc.flagged)
		}
	}
	// Percentages of a set of 3 are not rounded.
	if got := Accuracy([]int{1, 0, 0}, []int{1, 1, 1}); got != 100.0/3 {
		t.Errorf("1/3: %v", got)
	}
}
