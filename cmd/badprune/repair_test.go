package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"badprune/internal/model"
	"badprune/internal/report"
)

func runRepairTiny(t *testing.T, out string, extra ...string) report.PruneLog {
	t.Helper()
	args := append([]string{"repair", "--model", tiny + "model_full.h5", "--valid", tiny + "clean_u8_nchw.h5",
		"--bd-valid", tiny + "bd_u8_nchw.h5", "--out", out, "-q"}, extra...)
	stdout, stderr, code := badprune(t, args...)
	if code != 0 {
		t.Fatalf("repair: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "threshold") {
		t.Errorf("no summary table: %q", stdout)
	}
	var log report.PruneLog
	if err := report.Read(filepath.Join(out, "prune_log.json"), &log); err != nil {
		t.Fatal(err)
	}
	return log
}

func TestRepairJSONShape(t *testing.T) {
	out := t.TempDir()
	runRepairTiny(t, out, "--threshold", "4")
	b, _ := os.ReadFile(filepath.Join(out, "prune_log.json"))
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"model", "valid", "bd_valid", "layer", "rank_layer", "base_acc", "base_asr", "mean_activation", "order", "steps", "saved"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("prune_log.json: no %q", k)
		}
	}
	step := doc["steps"].([]any)[0].(map[string]any)
	for _, k := range []string{"step", "channel", "fraction", "valid_acc", "valid_asr"} {
		if _, ok := step[k]; !ok {
			t.Errorf("step: no %q", k)
		}
	}
	// Without a poisoned set there is no attack success anywhere.
	out2 := t.TempDir()
	_, stderr, code := badprune(t, "repair", "--model", tiny+"model_full.h5", "--valid", tiny+"clean_u8_nchw.h5", "--out", out2, "-q", "--threshold", "4")
	if code != 0 {
		t.Fatal(stderr)
	}
	b, _ = os.ReadFile(filepath.Join(out2, "prune_log.json"))
	if bytes.Contains(b, []byte("asr")) {
		t.Errorf("asr keys without --bd-valid")
	}
}

func TestRepairOutputs(t *testing.T) {
	out := t.TempDir()
	runRepairTiny(t, out, "--threshold", "4")
	before, _ := os.ReadFile(filepath.Join(out, "prune_log.json"))
	_, stderr, code := badprune(t, "repair", "--model", tiny+"model_full.h5", "--valid", tiny+"clean_u8_nchw.h5", "--out", out, "-q", "--threshold", "4")
	if code != exitError || !strings.Contains(stderr, "already exists (use --force to overwrite)") {
		t.Fatalf("second run: exit %d, %q", code, stderr)
	}
	after, _ := os.ReadFile(filepath.Join(out, "prune_log.json"))
	if !bytes.Equal(before, after) {
		t.Errorf("a refused run changed the log")
	}
	runRepairTiny(t, out, "--threshold", "4", "--force")

	// An output that is the input is refused, even with --force.
	dir := t.TempDir()
	in := filepath.Join(dir, "repaired_4.h5")
	src, _ := os.ReadFile(tiny + "model_full.h5")
	os.WriteFile(in, src, 0o644)
	_, stderr, code = badprune(t, "repair", "--model", in, "--valid", tiny+"clean_u8_nchw.h5", "--out", dir, "-q", "--threshold", "4", "--force")
	if code != exitError || !strings.Contains(stderr, "would overwrite the input") {
		t.Fatalf("out over input: exit %d, %q", code, stderr)
	}
	if got, _ := os.ReadFile(in); !bytes.Equal(got, src) {
		t.Fatal("the input model changed")
	}
	// Unreachable thresholds warn and are left out.
	out3 := t.TempDir()
	_, stderr, code = badprune(t, "repair", "--model", tiny+"model_full.h5", "--valid", tiny+"clean_u8_nchw.h5", "--out", out3, "-q", "--threshold", "100")
	if code != 0 || !strings.Contains(stderr, "warning: threshold 100") || fileExists(filepath.Join(out3, "repaired_100.h5")) {
		t.Fatalf("unreachable: exit %d, %q", code, stderr)
	}
	for _, bad := range [][]string{{"--threshold", "0"}, {"--threshold", "101"}, {"--threshold", "abc"}, {"--layer", "fc_1"}, {"--layer", "zz"}, {"--rank-layer", "conv_2"}} {
		_, stderr, code := badprune(t, append([]string{"repair", "--model", tiny + "model_full.h5", "--valid", tiny + "clean_u8_nchw.h5", "--out", t.TempDir(), "-q"}, bad...)...)
		if code != exitError || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, bad[0]) {
			t.Errorf("%v: exit %d, %q", bad, code, stderr)
		}
	}
}

func TestGoodnetEvalAndPlot(t *testing.T) {
	out := t.TempDir()
	log := runRepairTiny(t, out, "--threshold", "4,30")
	args := []string{"eval", "--goodnet", "--model", tiny + "model_full.h5", "--test", tiny + "clean_u8_nchw.h5",
		"--bd-test", tiny + "bd_u8_nchw.h5", "--repaired", out, "--out", out, "--json", "-q"}
	stdout, stderr, code := badprune(t, args...)
	if code != 0 {
		t.Fatalf("eval --goodnet: exit %d: %s", code, stderr)
	}
	var ev report.Eval
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
		t.Fatal(err)
	}
	var written report.Eval
	if err := report.Read(filepath.Join(out, "eval.json"), &written); err != nil {
		t.Fatal(err)
	}
	if len(ev.Results) != 1+2*len(log.Saved) || len(written.Results) != len(ev.Results) {
		t.Fatalf("%d rows for %d repaired networks", len(ev.Results), len(log.Saved))
	}
	for i := 1; i < len(ev.Results); i += 2 {
		bpRow, gRow := ev.Results[i], ev.Results[i+1]
		if bpRow.Model != report.RoleBPrime || gRow.Model != report.RoleGoodNet || bpRow.Repaired != gRow.Repaired || gRow.CleanFlagged == nil || gRow.BDFlagged == nil {
			t.Fatalf("rows %+v %+v", bpRow, gRow)
		}
	}
	// Gates check the G rows.
	_, stderr, code = badprune(t, append(args, "--force", "--min-acc", "99.9")...)
	if code != exitGate || !strings.Contains(stderr, "G row") {
		t.Errorf("gate: exit %d, %q", code, stderr)
	}
	_, stderr, code = badprune(t, append(args, "--force", "--max-asr", "100")...)
	if code != 0 {
		t.Errorf("passing gate: exit %d, %q", code, stderr)
	}
	// --goodnet needs a repaired network.
	_, stderr, code = badprune(t, "eval", "--goodnet", "--model", tiny+"model_full.h5", "--test", tiny+"clean_u8_nchw.h5", "--repaired", t.TempDir(), "-q")
	if code != exitError || !strings.Contains(stderr, "repaired") {
		t.Errorf("no repaired: exit %d, %q", code, stderr)
	}

	// plot draws both figures from the defaults' files.
	_, stderr, code = badprune(t, "plot", "--log", filepath.Join(out, "prune_log.json"), "--eval", filepath.Join(out, "eval.json"), "--out", out)
	if code != 0 {
		t.Fatalf("plot: exit %d: %s", code, stderr)
	}
	for _, name := range []string{"prune_curve", "goodnet"} {
		f, err := os.Open(filepath.Join(out, name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 600 {
			t.Errorf("%s.png: %v", name, err)
		}
		svg, _ := os.ReadFile(filepath.Join(out, name+".svg"))
		if !bytes.Contains(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("attack success")) {
			t.Errorf("%s.svg is not the figure", name)
		}
	}

}

// TestFinetuneCommand: the output is a copy of the input in which only
// weight data changed, the pruned channels are still zero, and repair
// --finetune records the history.
func TestFinetuneCommand(t *testing.T) {
	out := t.TempDir()
	log := runRepairTiny(t, out, "--threshold", "4", "--finetune", "--ft-epochs", "2", "--ft-batch", "4", "--ft-holdout", "0.25")
	if s := log.Saved["4"]; s.Finetune == nil || len(s.Finetune.Epochs) != 3 || s.Finetune.File != filepath.Join(out, "finetuned_4.h5") {
		t.Fatalf("history %+v", s.Finetune)
	}
	// The demo lab's B'_10 has room to improve: fine-tuning must move it.
	_, stderr, code := badprune(t, "repair", "-q", "--model", lab+"models/bd_net.h5", "--valid", lab+"data/cl/valid.h5", "--threshold", "10", "--out", out, "--force")
	if code != 0 {
		t.Fatalf("repair: exit %d: %s", code, stderr)
	}
	var labLog report.PruneLog
	if err := report.Read(filepath.Join(out, "prune_log.json"), &labLog); err != nil {
		t.Fatal(err)
	}
	s := labLog.Saved["10"]
	in := filepath.Join(out, "repaired_10.h5")
	ft := filepath.Join(out, "ft.h5")
	stdout, stderr, code := badprune(t, "finetune", "--model", in, "--valid", lab+"data/cl/valid.h5", "--bd-valid", lab+"data/bd/bd_valid.h5",
		"--out", ft, "--epochs", "2", "--patience", "0", "--lr", "1e-3", "--l2", "1e-3")
	if code != 0 {
		t.Fatalf("finetune: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "epoch 2: loss") || !strings.Contains(stderr, "attack success") {
		t.Errorf("no per-epoch progress: %q", stderr)
	}
	if strings.Contains(stdout, "kept epoch 0") || !strings.Contains(stdout, "wrote "+ft) {
		t.Fatalf("fine-tuning kept the input, nothing to check: %q", stdout)
	}
	m, err := model.Load(ft)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Layer("conv_3").ZeroChannels(); !slices.Equal(got, s.Pruned) {
		t.Errorf("zero channels %v, want the pruned %v", got, s.Pruned)
	}
	// Same size, and equal bytes outside the weights' data.
	a, _ := os.ReadFile(in)
	b, _ := os.ReadFile(ft)
	src, _ := model.Load(in)
	changed := 0
	for i := range a {
		if a[i] != b[i] {
			changed++
		}
	}
	weights := 0
	for _, l := range src.Layers {
		weights += 4 * (len(l.Kernel) + len(l.Bias))
	}
	if len(a) != len(b) || changed == 0 || changed > weights {
		t.Errorf("sizes %d %d, %d bytes changed of %d weight bytes (%q)", len(a), len(b), changed, weights, stdout)
	}
	// Bad settings are one-line errors.
	for _, bad := range [][]string{{"--holdout", "1"}, {"--lr", "0"}, {"--epochs", "0"}, {"--optimizer", "sgd"}} {
		_, stderr, code := badprune(t, append([]string{"finetune", "--model", in, "--valid", tiny + "clean_u8_nchw.h5", "--out", filepath.Join(out, "x.h5")}, bad...)...)
		if code != exitError || !strings.Contains(stderr, bad[0]) || fileExists(filepath.Join(out, "x.h5")) {
			t.Errorf("%v: exit %d, %q", bad, code, stderr)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
