package repair_test

import (
	"cmp"
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"badprune/internal/finetune"
	"badprune/internal/goodnet"
	"badprune/internal/h5data"
	"badprune/internal/metrics"
	"badprune/internal/model"
	"badprune/internal/progress"
	"badprune/internal/repair"
	"badprune/internal/report"
	"badprune/internal/testsupport/fixture"
	"badprune/internal/testsupport/must"
	"badprune/internal/testsupport/oracle"
)

// realKeras3 is a real Keras 3.15 archive (MNIST CNN, inputs 0..1) beside
// the repository; tests using it skip without it.
const realKeras3 = "../../../shared/real/keras3/mnist_cnn.keras"

// labelled is a set in memory, NHWC, as the model reads it.
type labelled struct {
	x      []float32
	labels []int
}

// oracleRun is the plain-loop oracle of m on every image of s: the
// predictions, their margins (best logit less the second) and the
// outputs of the named layer.
func oracleRun(m *model.Model, s labelled, layer string) (preds []int, margins []float64, outs [][]float64) {
	h, w, c := m.InputShape()
	sz := h * w * c
	for i := range s.labels {
		all := oracle.Forward(m, s.x[i*sz:(i+1)*sz], oracle.Options{})
		z := all[m.Output.Name]
		p := oracle.Argmax(z)
		second := math.Inf(-1)
		for j, v := range z {
			if j != p {
				second = math.Max(second, v)
			}
		}
		preds, margins, outs = append(preds, p), append(margins, z[p]-second), append(outs, all[layer])
	}
	return preds, margins, outs
}

// writeSets writes a clean set (labels mostly the model's own
// predictions) and a poisoned one (label 0) of n images for m into dir.
func writeSets(t *testing.T, m *model.Model, dir string, n int, scale float32) (cleanPath, bdPath string, clean, bd labelled) {
	t.Helper()
	r := rand.New(rand.NewPCG(21, 22))
	h, w, c := m.InputShape()
	mk := func(name string, target bool) (string, labelled) {
		x := fixture.RandomImages(r, n, h, w, c)
		for i := range x {
			x[i] *= scale
		}
		s := labelled{x: x, labels: make([]int, n)}
		if !target {
			preds, _, _ := oracleRun(m, s, m.Output.Name)
			for i, p := range preds {
				s.labels[i] = p
				if r.IntN(4) == 0 {
					s.labels[i] = r.IntN(m.Classes)
				}
			}
		}
		path := filepath.Join(dir, name)
		if err := fixture.WriteSet(path, fixture.Set{X: x, Labels: s.labels}, h, w, c, h5data.Storage{Data: "float32"}); err != nil {
			t.Fatal(err)
		}
		return path, s
	}
	cleanPath, clean = mk("clean.h5", false)
	bdPath, bd = mk("bd.h5", true)
	return cleanPath, bdPath, clean, bd
}

// checkRepair repairs the model file src (prune layer, "" for the
// default) and checks the log against the plain-loop oracle: the mean of
// the rank layer's channels, the order, the accuracy and attack success of
// every stride-th step from the pruned network itself (PruneChannels),
// and each saved
// B': in src's format, holding exactly the pruned weights, and computing
// what the log says.
func checkRepair(t *testing.T, src, arch, layer string, n int, scale float32, stride int) *repair.Result {
	t.Helper()
	m, err := repair.ReadModel(src, arch)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cleanPath, bdPath, clean, bd := writeSets(t, m, dir, n, scale)
	out := filepath.Join(dir, "out")
	res, err := repair.Run(context.Background(), repair.Config{Model: src, Architecture: arch, Valid: cleanPath, BDValid: bdPath,
		Data: data, Thresholds: []float64{2, 10, 30}, Layer: layer, Out: out}, progress.New(nil, false))
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	log := res.Log
	rank := m.Layer(log.RankLayer)
	rc := rank.Channels()

	// The ranking: the mean of each channel of the rank layer.
	_, _, outs := oracleRun(m, clean, log.RankLayer)
	mean := make([]float64, rc)
	for _, o := range outs {
		for j, v := range o {
			mean[j%rc] += v
		}
	}
	for c := range mean {
		mean[c] /= float64(n * rank.Size() / rc)
		if math.Abs(mean[c]-log.MeanActivation[c]) > 1e-4*(1+math.Abs(mean[c])) {
			t.Errorf("%s: mean activation of channel %d = %g, oracle %g", src, c, log.MeanActivation[c], mean[c])
		}
	}
	order := make([]int, rc)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(mean[a], mean[b]) })
	if !slices.Equal(order, log.Order) {
		t.Fatalf("%s: order %v, oracle %v", src, log.Order, order)
	}

	// Every stride-th step and the last, from the pruned network.
	for k := 0; k <= rc; k++ {
		if k%stride != 0 && k != rc {
			continue
		}
		p := m.Clone()
		if err := p.PruneChannels(log.Layer, order[:k]); err != nil {
			t.Fatal(err)
		}
		pc, mc, _ := oracleRun(p, clean, p.Output.Name)
		pb, mb, _ := oracleRun(p, bd, p.Output.Name)
		acc, asr := metrics.Accuracy(pc, clean.labels), metrics.Accuracy(pb, bd.labels)
		got, gotASR := log.BaseAcc, *log.BaseASR
		if k > 0 {
			s := log.Steps[k-1]
			got, gotASR = s.ValidAcc, *s.ValidASR
		}
		if got != acc || gotASR != asr {
			// Only a near-tie may differ, by one sample.
			near := slices.ContainsFunc(append(mc, mb...), func(v float64) bool { return v < 1e-4 })
			if !near || math.Abs(got-acc) > 100.0/float64(n)+1e-9 || math.Abs(gotASR-asr) > 100.0/float64(n)+1e-9 {
				t.Errorf("%s: step %d: acc %v asr %v, oracle %v %v", src, k, got, gotASR, acc, asr)
			}
		}
	}

	// The saved B' files.
	for name, s := range log.Saved {
		bp, err := repair.ReadModel(s.File, arch)
		if err != nil {
			t.Fatal(err)
		}
		if bp.Format() != m.Format() {
			t.Errorf("%s: B' %s is %s, B %s", src, name, bp.Format(), m.Format())
		}
		want := m.Clone()
		if err := want.PruneChannels(log.Layer, s.Pruned); err != nil {
			t.Fatal(err)
		}
		for i, l := range bp.Layers {
			w := want.Layers[i]
			if !slices.Equal(l.Kernel, w.Kernel) || !slices.Equal(l.Bias, w.Bias) || !slices.Equal(l.Mean, w.Mean) || !slices.Equal(l.Var, w.Var) {
				t.Errorf("%s: B' %s: layer %s is not B's pruned", src, name, l.Name)
			}
		}
		pc, mc, _ := oracleRun(bp, clean, bp.Output.Name)
		if acc := metrics.Accuracy(pc, clean.labels); acc != s.ValidAcc && !slices.ContainsFunc(mc, func(v float64) bool { return v < 1e-4 }) {
			t.Errorf("%s: B' %s: oracle accuracy %v, the log says %v", src, name, acc, s.ValidAcc)
		}
	}
	if len(log.Saved) == 0 {
		t.Errorf("%s: no B' saved", src)
	}

	// Evaluate: B, each B' and G on the same sets, against the oracle.
	var files []string
	for _, s := range log.Saved {
		files = append(files, s.File)
	}
	slices.Sort(files)
	ev, err := repair.Evaluate(context.Background(), repair.EvalConfig{Model: src, Architecture: arch, Repaired: files,
		Test: cleanPath, BDTest: bdPath, Data: data}, progress.New(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	b, mb, _ := oracleRun(m, clean, m.Output.Name)
	bb, mbb, _ := oracleRun(m, bd, m.Output.Name)
	for i, f := range files {
		bp, err := repair.ReadModel(f, arch)
		if err != nil {
			t.Fatal(err)
		}
		p, mp, _ := oracleRun(bp, clean, bp.Output.Name)
		pb, mpb, _ := oracleRun(bp, bd, bp.Output.Name)
		g, gb := goodnet.Combine(b, p, m.Classes), goodnet.Combine(bb, pb, m.Classes)
		want := []float64{metrics.Accuracy(p, clean.labels), metrics.Accuracy(pb, bd.labels), metrics.Accuracy(g, clean.labels), metrics.Accuracy(gb, bd.labels)}
		row, grow := ev.Doc.Results[1+2*i], ev.Doc.Results[2+2*i]
		got := []float64{row.CleanAcc, *row.ASR, grow.CleanAcc, *grow.ASR}
		near := slices.ContainsFunc(slices.Concat(mb, mbb, mp, mpb), func(v float64) bool { return v < 1e-4 })
		if row.File != f || !slices.Equal(got, want) && !near {
			t.Errorf("%s: evaluation of %s: %v, oracle %v", src, f, got, want)
		}
	}
	return res
}

// TestRepairNewLayersAgainstOracle repairs networks with the new layers,
// in Keras 2 HDF5 and Keras 3 archives, pruning through
// BatchNormalization (with and without gamma) and before a merge.
func TestRepairNewLayersAgainstOracle(t *testing.T) {
	layers := must.Get(t, fixture.Layers, 31)
	merge := must.Get(t, fixture.Merge, 31)
	dir := t.TempDir()
	write := func(m *model.Model, name string) string {
		path := filepath.Join(dir, name)
		var err error
		if filepath.Ext(name) == ".keras" {
			err = fixture.WriteKeras3Archive(m, path)
		} else {
			err = m.Create(path, model.FullModelFile, false)
		}
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	weights := filepath.Join(dir, "layers_weights.h5")
	arch := filepath.Join(dir, "layers.json")
	cfg, _ := layers.KerasConfig()
	if err := layers.Create(weights, model.WeightsOnlyFile, false); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(arch, cfg, 0o644)
	for _, tc := range []struct {
		src, arch, layer, wantLayer, wantRank string
	}{
		{write(layers, "layers.h5"), "", "", "sep", "drop"},
		{write(layers, "layers.keras"), "", "conv", "conv", "avg"},
		{weights, arch, "", "sep", "drop"},
		{write(merge, "merge.keras"), "", "mix", "mix", "mix_bn"},
		{write(merge, "merge.h5"), "", "branch_3x3", "branch_3x3", "branch_3x3"},
	} {
		res := checkRepair(t, tc.src, tc.arch, tc.layer, 40, 1, 1)
		if res.Log.Layer != tc.wantLayer || res.Log.RankLayer != tc.wantRank {
			t.Errorf("%s: pruned %s ranked by %s, want %s by %s", tc.src, res.Log.Layer, res.Log.RankLayer, tc.wantLayer, tc.wantRank)
		}
	}
}

// TestRealKeras3ArchiveRepair repairs the real Keras 3 archive on images
// in its 0..1 range.
func TestRealKeras3ArchiveRepair(t *testing.T) {
	if _, err := os.Stat(realKeras3); err != nil {
		t.Skipf("%s absent", realKeras3)
	}
	res := checkRepair(t, realKeras3, "", "", 24, 1.0/255, 8)
	if res.Log.Layer != "conv2d_1" || res.Log.RankLayer != "max_pooling2d_1" || res.Ext != ".keras" {
		t.Errorf("pruned %s ranked by %s, B' %s", res.Log.Layer, res.Log.RankLayer, res.Ext)
	}
}

// TestFinetuneNewLayers fine-tunes a B' pruned through BatchNormalization:
// the pruned channels (the convolution's, and their zeroed gamma and beta)
// stay zero, BatchNormalization stays frozen, and the file written differs
// from B' only in the trained layers' weights.
func TestFinetuneNewLayers(t *testing.T) {
	m := must.Get(t, fixture.Layers, 31)
	dir := t.TempDir()
	src := filepath.Join(dir, "bp.keras")
	pruned := []int{1, 6}
	bp := m.Clone()
	if err := bp.PruneChannels("sep", pruned); err != nil {
		t.Fatal(err)
	}
	if err := fixture.WriteKeras3Archive(bp, src); err != nil {
		t.Fatal(err)
	}
	cleanPath, _, _, _ := writeSets(t, bp, dir, 64, 1)
	out := filepath.Join(dir, "ft.keras")
	ft := finetune.Options{Optimizer: "adam", Epochs: 2, LR: 1e-2, Batch: 16, Holdout: 0.25, Seed: 1}
	res, err := repair.Finetune(context.Background(), repair.FinetuneConfig{Model: src, Valid: cleanPath, Out: out, Data: data, Options: ft})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Masks["sep"], pruned) {
		t.Errorf("held channels %v, want sep's %v", res.Masks, pruned)
	}
	got, err := model.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if z := got.Layer("sep").ZeroChannels(); !slices.Equal(z, pruned) {
		t.Errorf("fine-tuned zero channels %v, want %v", z, pruned)
	}
	moved := false
	for i, l := range got.Layers {
		o := bp.Layers[i]
		if l.Kind == model.BatchNorm && (!slices.Equal(l.Kernel, o.Kernel) || !slices.Equal(l.Bias, o.Bias) || !slices.Equal(l.Var, o.Var)) {
			t.Errorf("BatchNormalization %s changed", l.Name)
		}
		moved = moved || !slices.Equal(l.Kernel, o.Kernel)
	}
	if res.Best > 0 && !moved {
		t.Error("fine-tuning kept a later epoch but no weight moved")
	}
	if len(res.Epochs) != 3 || math.IsNaN(res.Epochs[2].Loss) || !(res.Epochs[2].Loss < res.Epochs[1].Loss) {
		t.Errorf("epochs %+v: want two with a falling loss", res.Epochs)
	}
	if _, err := os.Stat(filepath.Join(dir, report.PruneLogJSON)); err == nil {
		t.Error("fine-tuning wrote a prune log")
	}
}

// TestRepairFinetuneThroughBatchNorm: repair --finetune of a network
// pruned through BatchNormalization writes a fine-tuned B' whose pruned
// channels are zero after the BatchNormalization too: its gamma and beta
// zeroed in B' reach the fine-tuned copy of B's file.
func TestRepairFinetuneThroughBatchNorm(t *testing.T) {
	m := must.Get(t, fixture.Layers, 31)
	dir := t.TempDir()
	src := filepath.Join(dir, "layers.h5")
	if err := m.Create(src, model.FullModelFile, false); err != nil {
		t.Fatal(err)
	}
	cleanPath, _, clean, _ := writeSets(t, m, dir, 64, 1)
	ft := finetune.Options{Optimizer: "adam", Epochs: 1, LR: 1e-3, Batch: 16, Holdout: 0.25, Seed: 1}
	res, err := repair.Run(context.Background(), repair.Config{Model: src, Valid: cleanPath, Data: data, Thresholds: []float64{30},
		Layer: "conv", Out: filepath.Join(dir, "out"), Finetune: &ft}, progress.New(nil, false))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := res.Log.Saved["30"]
	if !ok || s.Finetune == nil {
		t.Fatalf("saved %+v", res.Log.Saved)
	}
	fm, err := model.Load(s.Finetune.File)
	if err != nil {
		t.Fatal(err)
	}
	_, _, outs := oracleRun(fm, labelled{x: clean.x[:4*14*12*3], labels: clean.labels[:4]}, "conv_bn")
	for _, o := range outs {
		for i, v := range o {
			if slices.Contains(s.Pruned, i%6) && v != 0 {
				t.Fatalf("fine-tuned B': pruned channel %d of conv_bn is %g", i%6, v)
			}
		}
	}
}
