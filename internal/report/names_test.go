package report

import (
	"slices"
	"testing"
)

func TestNamesRoundTrip(t *testing.T) {
	for _, x := range []float64{2, 4, 10, 30, 0.5, 12.25, 100} {
		for _, ext := range []string{".h5", ".keras", ".onnx"} {
			name := RepairedName(x, ext)
			got, ok := RepairedThreshold("some/dir/" + name)
			if !ok || got != x {
				t.Errorf("%s: threshold %v %v, want %v", name, got, ok, x)
			}
			if l := NetworkLabel(name); l != "B'_"+ThresholdName(x) {
				t.Errorf("%s: label %s", name, l)
			}
		}
	}
	for _, f := range []string{"finetuned_4.h5", "repaired_.h5", "repaired_x.h5", "bd_net.h5"} {
		if _, ok := RepairedThreshold(f); ok {
			t.Errorf("%s: taken for a repaired network", f)
		}
	}
	files := []string{"b.h5", "out/repaired_30.h5", "a.h5", "out/repaired_4.keras", "out/repaired_10.h5", "out/repaired_2.h5"}
	SortRepaired(files)
	want := []string{"out/repaired_2.h5", "out/repaired_4.keras", "out/repaired_10.h5", "out/repaired_30.h5", "a.h5", "b.h5"}
	if !slices.Equal(files, want) {
		t.Errorf("sorted %v, want %v", files, want)
	}
}
