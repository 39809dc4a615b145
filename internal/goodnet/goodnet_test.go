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
