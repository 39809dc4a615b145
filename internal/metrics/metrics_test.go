package metrics

import "testing"

func TestRates(t *testing.T) {
	for _, c := range []struct {
		name         string
		pred, labels []int
		acc, flagged float64
	}{
		{"empty", nil, nil, 0, 0},
		{"all right", []int{1, 2, 3}, []int{1, 2, 3}, 100, 0},
		{"one of four", []int{0, 5, 5, 1}, []int{0, 1, 2, 3}, 25, 50},
		{"two of three", []int{5, 2, 3}, []int{1, 2, 3}, 200.0 / 3, 100.0 / 3},
	} {
		if got := Accuracy(c.pred, c.labels); got != c.acc {
			t.Errorf("%s: Accuracy = %v, want %v", c.name, got, c.acc)
		}
		if got := Flagged(c.pred, 5); got != c.flagged {
			t.Errorf("%s: Flagged = %v, want %v", c.name, got, c.flagged)
		}
	}
	if Percent(3, 0) != 0 || Percent(1, 8) != 12.5 {
		t.Error("Percent")
	}
}
