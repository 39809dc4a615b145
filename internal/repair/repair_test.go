package repair_test

import (
	"cmp"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"badprune/internal/dataset"
	"badprune/internal/finetune"
	"badprune/internal/goodnet"
	"badprune/internal/metrics"
	"badprune/internal/model"
	"badprune/internal/progress"
	"badprune/internal/repair"
	"badprune/internal/report"
	"badprune/internal/testsupport/oracle"
)

const tiny = "../../testdata/tiny/"

var data = dataset.Options{DataKey: "data", LabelKey: "label", Scale: 1, Batch: dataset.DefaultBatch}

// runTiny repairs the tiny fixture model into out and returns its log.
func runTiny(t *testing.T, out string, thresholds ...float64) report.PruneLog {
	t.Helper()
	res, err := repair.Run(context.Background(), repair.Config{Model: tiny + "model_full.h5", Valid: tiny + "clean_u8_nchw.h5",
		BDValid: tiny + "bd_u8_nchw.h5", Data: data, Thresholds: thresholds, Out: out}, progress.New(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	var log report.PruneLog
	if err := report.Read(filepath.Join(out, report.PruneLogJSON), &log); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(log.Order, res.Log.Order) || log.BaseAcc != res.Log.BaseAcc {
		t.Fatal("the written log is not the returned one")
	}
	return log
}

// tinySet reads a tiny fixture set whole.
func tinySet(t *testing.T, name string) ([]float32, []int) {
	t.Helper()
	m, err := model.Load(tiny + "model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	d, err := data.Load(context.Background(), tiny+name, m)
	if err != nil {
		t.Fatal(err)
	}
	return d.Values(), d.Labels
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

func TestRepairAgainstOracle(t *testing.T) {
	out := t.TempDir()
	log := runTiny(t, out, 2, 4, 10, 30, 95)
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
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(mean[a], mean[b]) })
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
		acc, asr := metrics.Accuracy(p, labels), metrics.Accuracy(bp, blabels)
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
		name := report.ThresholdName(x)
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
			if _, err := os.Stat(file); err == nil {
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

// TestEvaluateAgainstOracle: the B', G rows of Evaluate equal the masked
// plain-loop oracle's predictions combined by the GoodNet rule.
func TestEvaluateAgainstOracle(t *testing.T) {
	out := t.TempDir()
	log := runTiny(t, out, 4, 30)
	var files []string
	for _, x := range []float64{4, 30} {
		if s, ok := log.Saved[report.ThresholdName(x)]; ok {
			files = append(files, s.File)
		}
	}
	res, err := repair.Evaluate(context.Background(), repair.EvalConfig{Model: tiny + "model_full.h5", Repaired: files,
		Test: tiny + "clean_u8_nchw.h5", BDTest: tiny + "bd_u8_nchw.h5", Data: data}, progress.New(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	ev := res.Doc
	if len(files) == 0 || len(ev.Results) != 1+2*len(files) {
		t.Fatalf("%d rows for %d repaired networks", len(ev.Results), len(files))
	}
	m, _ := model.Load(tiny + "model_full.h5")
	x, labels := tinySet(t, "clean_u8_nchw.h5")
	bx, blabels := tinySet(t, "bd_u8_nchw.h5")
	b, _ := oraclePreds(m, x, nil)
	bb, _ := oraclePreds(m, bx, nil)
	for i := 1; i < len(ev.Results); i += 2 {
		bpRow, gRow := ev.Results[i], ev.Results[i+1]
		if bpRow.Model != report.RoleBPrime || gRow.Model != report.RoleGoodNet || bpRow.Repaired != gRow.Repaired || gRow.CleanFlagged == nil || gRow.BDFlagged == nil {
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
		want := []float64{metrics.Accuracy(p, labels), metrics.Accuracy(bp, blabels), metrics.Accuracy(g, labels),
			metrics.Accuracy(gb, blabels), metrics.Flagged(g, m.Classes), metrics.Flagged(gb, m.Classes)}
		got := []float64{bpRow.CleanAcc, *bpRow.ASR, gRow.CleanAcc, *gRow.ASR, *gRow.CleanFlagged, *gRow.BDFlagged}
		if !slices.Equal(got, want) {
			t.Errorf("%s: B' and G %v, oracle %v", gRow.Repaired, got, want)
		}
	}
}

// TestFinetuneChangesNetwork: repair with fine-tuning trains B' (the kept
// epoch is not the input's, weights move) while every pruned channel stays
// exactly zero, and the fine-tuned file differs from B' only in weight
// bytes.
func TestFinetuneChangesNetwork(t *testing.T) {
	out := t.TempDir()
	// The demo lab's B'_10 has room to improve; the tiny fixture has not.
	const lab = "../../testdata/lab/"
	ft := finetune.Options{Optimizer: "adam", Epochs: 2, LR: 1e-3, L2: 1e-3, Batch: 64, Holdout: 0.2, Seed: 1, Cosine: true}
	epochs := 0
	res, err := repair.Run(context.Background(), repair.Config{Model: lab + "models/bd_net.h5", Valid: lab + "data/cl/valid.h5",
		BDValid: lab + "data/bd/bd_valid.h5", Data: data, Thresholds: []float64{10}, Out: out, Finetune: &ft,
		OnEpoch: func(string, finetune.Epoch) { epochs++ }}, progress.New(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := res.Log.Saved["10"]
	if !ok || s.Finetune == nil {
		t.Fatalf("saved %+v", s)
	}
	if s.Finetune.Best == 0 || epochs != 2 || len(s.Finetune.Epochs) != 3 {
		t.Fatalf("kept epoch %d of %d epochs (%d reported): fine-tuning did nothing to check", s.Finetune.Best, len(s.Finetune.Epochs)-1, epochs)
	}
	bp, err := model.Load(filepath.Join(out, report.RepairedName(10, ".h5")))
	if err != nil {
		t.Fatal(err)
	}
	fm, err := model.Load(s.Finetune.File)
	if err != nil {
		t.Fatal(err)
	}
	if got := fm.Layer("conv_3").ZeroChannels(); !slices.Equal(got, s.Pruned) {
		t.Errorf("fine-tuned zero channels %v, want exactly the pruned %v", got, s.Pruned)
	}
	moved := 0
	for i, l := range bp.Layers {
		for j, v := range l.Kernel {
			if fm.Layers[i].Kernel[j] != v {
				moved++
			}
		}
	}
	if moved == 0 {
		t.Fatal("no weight changed")
	}
	a, _ := os.ReadFile(filepath.Join(out, report.RepairedName(10, ".h5")))
	b, _ := os.ReadFile(s.Finetune.File)
	weights := 0
	for _, l := range bp.Layers {
		weights += 4 * (len(l.Kernel) + len(l.Bias))
	}
	changed := 0
	for i := range a {
		if i < len(b) && a[i] != b[i] {
			changed++
		}
	}
	if len(a) != len(b) || changed == 0 || changed > weights {
		t.Errorf("sizes %d, %d; %d bytes changed, at most %d weight bytes may", len(a), len(b), changed, weights)
	}
}
