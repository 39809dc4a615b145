package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"badprune/internal/model"
	"badprune/internal/report"
	"badprune/internal/testsupport/fixture"
)

// TestNewLayerCommands runs the commands on networks with the new layers:
// a Keras 3 archive with BatchNormalization, depthwise and separable
// convolutions; a merge that leaves the layer to prune ambiguous; a
// weights-only file with --architecture; and a refused --layer.
func TestNewLayerCommands(t *testing.T) {
	layers, set := tiny+fixture.LayerFiles.Layers, tiny+fixture.LayerFiles.LayersSet
	merge, mergeSet := tiny+fixture.LayerFiles.Merge, tiny+fixture.LayerFiles.MergeSet

	out := t.TempDir()
	if _, stderr, code := badprune(t, "repair", "--model", layers, "--valid", set, "--out", out, "-q", "--threshold", "1"); code != 0 {
		t.Fatalf("repair %s: exit %d: %s", layers, code, stderr)
	}
	var log report.PruneLog
	if err := report.Read(filepath.Join(out, report.PruneLogJSON), &log); err != nil {
		t.Fatal(err)
	}
	s, ok := log.Saved["1"]
	if log.Layer != "sep" || log.RankLayer != "drop" || !ok || filepath.Ext(s.File) != ".keras" {
		t.Fatalf("pruned %s ranked by %s, saved %+v", log.Layer, log.RankLayer, s)
	}
	if _, stderr, code := badprune(t, "eval", "--goodnet", "--model", layers, "--repaired", out, "--test", set, "--out", out, "-q"); code != 0 {
		t.Fatalf("eval: exit %d: %s", code, stderr)
	}

	_, stderr, code := badprune(t, "repair", "--model", merge, "--valid", mergeSet, "--out", t.TempDir(), "-q")
	if want := "badprune: " + merge + ": no single last convolution: sum merges the outputs of mix, short; choose one with --layer\n"; code != 1 || stderr != want {
		t.Errorf("merge without --layer: exit %d, %q; want 1, %q", code, stderr, want)
	}
	if _, stderr, code := badprune(t, "repair", "--model", merge, "--valid", mergeSet, "--layer", "mix", "--out", t.TempDir(), "-q", "--threshold", "1"); code != 0 {
		t.Errorf("merge with --layer mix: exit %d: %s", code, stderr)
	}

	// A weights-only file of any architecture, with --architecture.
	dir := t.TempDir()
	m, err := model.Load(layers)
	if err != nil {
		t.Fatal(err)
	}
	weights, arch := filepath.Join(dir, "w.h5"), filepath.Join(dir, "arch.json")
	cfg, _ := m.KerasConfig()
	if err := m.Create(weights, model.WeightsOnlyFile, false); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(arch, cfg, 0o644)
	eval := func(args ...string) report.Eval {
		t.Helper()
		return evalJSON(t, append([]string{"--test", set}, args...)...)
	}
	a, b := eval("--model", layers), eval("--model", weights, "--architecture", arch)
	if a.Results[0].CleanAcc != b.Results[0].CleanAcc {
		t.Errorf("weights-only with --architecture: accuracy %v, the archive's %v", b.Results[0].CleanAcc, a.Results[0].CleanAcc)
	}
	if _, stderr, code := badprune(t, "repair", "--model", weights, "--architecture", arch, "--valid", set, "--out", t.TempDir(), "-q", "--threshold", "1"); code != 0 {
		t.Errorf("repair with --architecture: exit %d: %s", code, stderr)
	}

	// A layer whose pruned channels a later layer would turn into a
	// constant is refused, naming both.
	acts, err := fixture.Activations(1)
	if err != nil {
		t.Fatal(err)
	}
	actsPath := filepath.Join(dir, "acts.h5")
	if err := acts.Create(actsPath, model.FullModelFile, false); err != nil {
		t.Fatal(err)
	}
	clean, _, err := fixture.TinySets(acts, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	actsSet := filepath.Join(dir, "acts_set.h5")
	h, w, c := acts.InputShape()
	if err := fixture.WriteSet(actsSet, clean, h, w, c, fixture.TinyFiles.Sets["clean_f32_nhwc.h5"]); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = badprune(t, "repair", "--model", actsPath, "--valid", actsSet, "--layer", "c_gelu", "--out", t.TempDir(), "-q")
	want := `--layer c_gelu: layer "shifted_relu" (ReLU) after it maps a zero channel to -0.02: its pruned channels would not be removed`
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("refused layer: exit %d, %q; want 1 and %q", code, stderr, want)
	}
}
