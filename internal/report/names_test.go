package report

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

func TestRepairedFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"repaired_10.h5", "repaired_2.h5", "prune_log.json", "repaired_4.keras"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	got, err := RepairedFiles([]string{dir, "b.h5", filepath.Join(dir, "repaired_1*")})
	want := []string{filepath.Join(dir, "repaired_2.h5"), filepath.Join(dir, "repaired_4.keras"), filepath.Join(dir, "repaired_10.h5"),
		"b.h5", filepath.Join(dir, "repaired_10.h5")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	var nr *NoRepairedError
	for _, empty := range []string{t.TempDir(), filepath.Join(dir, "missing") + "/"} {
		if _, err := RepairedFiles([]string{empty}); !errors.As(err, &nr) || nr.Dir != empty {
			t.Errorf("%s: %v", empty, err)
		}
	}
	if _, err := RepairedFiles([]string{filepath.Join(dir, "nothing_*")}); err == nil || !strings.Contains(err.Error(), "no file matches") {
		t.Errorf("glob without matches: %v", err)
	}
}
