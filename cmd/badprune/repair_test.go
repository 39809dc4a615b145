package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"badprune/internal/goodnet"
	"badprune/internal/h5data"
	"badprune/internal/model"
	"badprune/internal/testsupport/oracle"
	"badprune/internal/report"
)

// tinySet reads a tiny fixture set whole.
func tinySet(t *testing.T, name string) ([]float32, []int) {
	t.Helper()
	s, err := h5data.Open(tiny+name, h5data.Options{H: 55, W: 47, C: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x, err := s.ReadAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return x, s.Labels
}

// oraclePreds labels every image of x with the plain-loop oracle, conv_3
// channels masked.
func oraclePreds(m *model.Model, x []float32, masked []int) ([]int, []float64) {
	sz := 55 * 47 * 3
	n := len(x) / sz
	preds := make([]int, n)
	margins := make([]float64, n)
	for i := 0; i < n; i++ {
		z := oracle.Logits(m, x[i*sz:(i+1)*sz], oracle.Options{MaskLayer: "conv_3", MaskChannels: masked})
		preds[i] = oracle.Argmax(z)
		second := math.Inf(-1)
		for j, v := range z {
			if j != preds[i] {
				second = math.Max(second, v)
			}
		}
		margins[i] = z[preds[i]] - second
	}
	return preds, margins
}

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

func TestRepairAgainstOracle(t *testing.T) {
	out := t.TempDir()
	log := runRepairTiny(t, out, "--threshold", "2,4", "--threshold", "10,30,95")
	m, err := model.Load(tiny + "model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	x, labels := tinySet(t, "clean_u8_nchw.h5")
	bx, blabels := tinySet(t, "bd_u8_nchw.h5")
	sz := 55 * 47 * 3
	n := len(labels)

	// Ranking: mean pool_3 activation per channel, plain loops.
	mean := make([]float64, 8)
	for i := 0; i < n; i++ {
		p := oracle.Forward(m, x[i*sz:(i+1)*sz], oracle.Options{})["pool_3"]
		for j, v := range p {
			mean[j%8] += v
		}
	}
	for c := range mean {
		mean[c] /= float64(n * 20)
		if math.Abs(mean[c]-log.MeanActivation[c]) > 1e-4*(1+math.Abs(mean[c])) {
			t.Errorf("mean activation of channel %d = %g, oracle %g", c, log.MeanActivation[c], mean[c])
		}
	}
	order := make([]int, 8)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return mean[order[a]] < mean[order[b]] })
	if !slices.Equal(order, log.Order) {
		t.Fatalf("order %v, oracle %v", log.Order, order)
	}
	if log.Layer != "conv_3" || log.RankLayer != "pool_3" || len(log.Steps) != 8 || log.BaseASR == nil {
		t.Fatalf("log %+v", log)
	}

	// Every step's accuracy and attack success, from the masked oracle.
	accs := make([]float64, 9)
	for k := 0; k <= 8; k++ {
		p, mg := oraclePreds(m, x, order[:k])
		bp, bmg := oraclePreds(m, bx, order[:k])
		acc, asr := goodnet.Accuracy(p, labels), goodnet.Accuracy(bp, blabels)
		accs[k] = acc
		got, gotASR := log.BaseAcc, *log.BaseASR
		if k > 0 {
			s := log.Steps[k-1]
			if s.Step != k || s.Channel != order[k-1] || s.Fraction != float64(k)/8 || s.ValidASR == nil {
				t.Fatalf("step %d: %+v", k, s)
			}
			got, gotASR = s.ValidAcc, *s.ValidASR
		}
		if got != acc || gotASR != asr {
			// Only a near-tie may differ, by one sample.
			near := slices.ContainsFunc(append(mg, bmg...), func(v float64) bool { return v < 1e-4 })
			if !near || math.Abs(got-acc) > 100.0/float64(n)+1e-9 {
				t.Errorf("step %d: acc %v asr %v, oracle %v %v", k, got, gotASR, acc, asr)
			}
		}
	}

	// The threshold rule and the saved files.
	for _, x := range []float64{2, 4, 10, 30, 95} {
		name := thresholdName(x)
		want := 0
		for k := 1; k <= 8; k++ {
			if accs[0]-accs[k] >= x {
				want = k
				break
			}
		}
		s, ok := log.Saved[name]
		if ok != (want > 0) || ok && s.Step != want {
			t.Errorf("threshold %v: saved %v at %d, want step %d", x, ok, s.Step, want)
			continue
		}
		file := filepath.Join(out, "repaired_"+name+".h5")
		if !ok {
			if exists(file) {
				t.Errorf("%s written for an unreached threshold", file)
			}
			continue
		}
		pruned := slices.Clone(order[:want])
		slices.Sort(pruned)
		if !slices.Equal(s.Pruned, pruned) || s.File != file {
			t.Errorf("threshold %v: %+v, want pruned %v in %s", x, s, pruned, file)
		}
		bp, err := model.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := bp.Layer("conv_3").ZeroChannels(); !slices.Equal(got, pruned) {
			t.Errorf("%s: zero channels %v, want %v", file, got, pruned)
		}
	}
	// The CSV holds the same curve, with step 0.
	csv, err := os.ReadFile(filepath.Join(out, "prune_log.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	if len(lines) != 10 || lines[0] != "step,channel,fraction,valid_acc,valid_asr" {
		t.Errorf("csv: %q", lines)
	}
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
	if code != 0 || !strings.Contains(stderr, "warning: threshold 100") || exists(filepath.Join(out3, "repaired_100.h5")) {
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
	m, _ := model.Load(tiny + "model_full.h5")
	x, labels := tinySet(t, "clean_u8_nchw.h5")
	bx, blabels := tinySet(t, "bd_u8_nchw.h5")
	b, _ := oraclePreds(m, x, nil)
	bb, _ := oraclePreds(m, bx, nil)
	for i := 1; i < len(ev.Results); i += 2 {
		bpRow, gRow := ev.Results[i], ev.Results[i+1]
		if bpRow.Model != "B'" || gRow.Model != "G" || bpRow.Repaired != gRow.Repaired || gRow.CleanFlagged == nil || gRow.BDFlagged == nil {
			t.Fatalf("rows %+v %+v", bpRow, gRow)
		}
		var saved report.Saved
		for _, s := range log.Saved {
			if s.File == gRow.Repaired {
				saved = s
			}
		}
		p, _ := oraclePreds(m, x, saved.Pruned)
		bp, _ := oraclePreds(m, bx, saved.Pruned)
		g, gb := goodnet.Combine(b, p, m.Classes), goodnet.Combine(bb, bp, m.Classes)
		want := []float64{goodnet.Accuracy(p, labels), goodnet.Accuracy(bp, blabels), goodnet.Accuracy(g, labels),
			goodnet.Accuracy(gb, blabels), goodnet.Flagged(g, m.Classes), goodnet.Flagged(gb, m.Classes)}
		got := []float64{bpRow.CleanAcc, *bpRow.ASR, gRow.CleanAcc, *gRow.ASR, *gRow.CleanFlagged, *gRow.BDFlagged}
		if !slices.Equal(got, want) {
			t.Errorf("%s: B' and G %v, oracle %v", gRow.Repaired, got, want)
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
	s := log.Saved["4"]
	if s.Finetune == nil || len(s.Finetune.Epochs) < 2 || s.Finetune.File != filepath.Join(out, "finetuned_4.h5") {
		t.Fatalf("history %+v", s.Finetune)
	}
	in := filepath.Join(out, "repaired_4.h5")
	ft := filepath.Join(out, "ft.h5")
	stdout, stderr, code := badprune(t, "finetune", "--model", in, "--valid", tiny+"clean_u8_nchw.h5", "--bd-valid", tiny+"bd_u8_nchw.h5",
		"--out", ft, "--epochs", "2", "--batch", "4", "--holdout", "0.25", "--patience", "0", "--lr", "0.01")
	if code != 0 {
		t.Fatalf("finetune: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "epoch 2: loss") || !strings.Contains(stderr, "attack success") {
		t.Errorf("no per-epoch progress: %q", stderr)
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
	kept0 := strings.Contains(stdout, "kept epoch 0")
	if len(a) != len(b) || (changed == 0) != kept0 || changed > weights {
		t.Errorf("sizes %d %d, %d bytes changed of %d weight bytes (%q)", len(a), len(b), changed, weights, stdout)
	}
	// Bad settings are one-line errors.
	for _, bad := range [][]string{{"--holdout", "1"}, {"--lr", "0"}, {"--epochs", "0"}, {"--optimizer", "sgd"}} {
		_, stderr, code := badprune(t, append([]string{"finetune", "--model", in, "--valid", tiny + "clean_u8_nchw.h5", "--out", filepath.Join(out, "x.h5")}, bad...)...)
		if code != exitError || !strings.Contains(stderr, bad[0]) || exists(filepath.Join(out, "x.h5")) {
			t.Errorf("%v: exit %d, %q", bad, code, stderr)
		}
	}
}
