package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"badprune/internal/h5data"
	"badprune/internal/imageio"
	"badprune/internal/model"
	"badprune/internal/report"
	"badprune/internal/testsupport/oracle"
	"badprune/internal/testsupport/testfile"
	pb "badprune/internal/third_party/onnxpb"
)

const (
	labDir  = "../../testdata/lab/"
	onnxDir = "../../testdata/onnx/"
)

func evalJSON(t *testing.T, args ...string) report.Eval {
	t.Helper()
	out, stderr, code := badprune(t, append([]string{"eval", "--json", "-q"}, args...)...)
	if code != 0 {
		t.Fatalf("eval %v: exit %d: %s", args, code, stderr)
	}
	var ev report.Eval
	if err := json.Unmarshal([]byte(out), &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func repairLog(t *testing.T, out string, args ...string) report.PruneLog {
	t.Helper()
	_, stderr, code := badprune(t, append([]string{"repair", "-q", "--out", out}, args...)...)
	if code != 0 {
		t.Fatalf("repair %v: exit %d: %s", args, code, stderr)
	}
	var log report.PruneLog
	if err := report.Read(filepath.Join(out, report.PruneLogJSON), &log); err != nil {
		t.Fatal(err)
	}
	return log
}

// TestLabBadNetInONNX is the check: the lab's BadNet exported from
// PyTorch to ONNX gives its Keras file's eval numbers, ranking, curve and
// saved steps; each repaired_<X>.onnx differs from B only in the pruned
// channels of the pruned layer; and B, B' may come in different formats.
func TestLabBadNetInONNX(t *testing.T) {
	sets := []string{"--test", labDir + "data/cl/test.h5", "--bd-test", labDir + "data/bd/bd_test.h5"}
	k := evalJSON(t, append([]string{"--model", labDir + "models/bd_net.h5"}, sets...)...)
	o := evalJSON(t, append([]string{"--model", labDir + "models/bd_net.onnx"}, sets...)...)
	if k.Results[0].CleanAcc != o.Results[0].CleanAcc || *k.Results[0].ASR != *o.Results[0].ASR {
		t.Errorf("eval: ONNX %v/%v, Keras %v/%v", o.Results[0].CleanAcc, *o.Results[0].ASR, k.Results[0].CleanAcc, *k.Results[0].ASR)
	}

	valid := []string{"--valid", labDir + "data/cl/valid.h5", "--bd-valid", labDir + "data/bd/bd_valid.h5"}
	kd, od := t.TempDir(), t.TempDir()
	kl := repairLog(t, kd, append([]string{"--model", labDir + "models/bd_net.h5"}, valid...)...)
	ol := repairLog(t, od, append([]string{"--model", labDir + "models/bd_net.onnx"}, valid...)...)
	if ol.Layer != "conv_3" || ol.BaseAcc != kl.BaseAcc || *ol.BaseASR != *kl.BaseASR || !slices.Equal(ol.Order, kl.Order) ||
		!slices.Equal(ol.MeanActivation, kl.MeanActivation) || jsonOf(t, ol.Steps) != jsonOf(t, kl.Steps) {
		t.Fatalf("the ONNX model's curve differs from the Keras file's: order %v, Keras %v", ol.Order, kl.Order)
	}
	if len(ol.Saved) != len(kl.Saved) {
		t.Fatalf("saved %v, Keras %v", ol.Saved, kl.Saved)
	}
	b := testfile.ReadONNX(t, labDir+"models/bd_net.onnx")
	for x, ks := range kl.Saved {
		os := ol.Saved[x]
		if filepath.Ext(os.File) != ".onnx" {
			t.Errorf("saved %s as %s", x, os.File)
		}
		onlyPruned(t, b, testfile.ReadONNX(t, os.File), "conv_3", os.Pruned)
		os.File, ks.File = "", ""
		if jsonOf(t, os) != jsonOf(t, ks) {
			t.Errorf("saved %s: %s, Keras %s", x, jsonOf(t, os), jsonOf(t, ks))
		}
	}

	// G(B, B') with B in Keras and B' in ONNX is G with both in Keras.
	mixed := evalJSON(t, append([]string{"--model", labDir + "models/bd_net.h5", "--goodnet", "--repaired", filepath.Join(od, "repaired_4.onnx")}, sets...)...)
	same := evalJSON(t, append([]string{"--model", labDir + "models/bd_net.h5", "--goodnet", "--repaired", filepath.Join(kd, "repaired_4.h5")}, sets...)...)
	for i := range same.Results {
		m, s := mixed.Results[i], same.Results[i]
		m.File, m.Repaired, s.File, s.Repaired = "", "", "", ""
		if !slices.Equal([]float64{m.CleanAcc, *m.ASR}, []float64{s.CleanAcc, *s.ASR}) ||
			(m.CleanFlagged == nil) != (s.CleanFlagged == nil) || m.CleanFlagged != nil && *m.CleanFlagged != *s.CleanFlagged {
			t.Errorf("G row %d: %+v, all-Keras %+v", i, m, s)
		}
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// onlyPruned checks that r is b but for the given output channels of the
// module's weight and bias, which are zero.
func onlyPruned(t *testing.T, b, r *pb.ModelProto, module string, channels []int) {
	t.Helper()
	r = proto.Clone(r).(*pb.ModelProto)
	for i, rt := range r.Graph.Initializer {
		bt := b.Graph.Initializer[i]
		if rt.GetName() != module+".weight" && rt.GetName() != module+".bias" {
			continue
		}
		per := len(bt.RawData) / int(bt.Dims[0])
		for j := range bt.RawData {
			pruned := slices.Contains(channels, j/per)
			if pruned && rt.RawData[j] != 0 || !pruned && rt.RawData[j] != bt.RawData[j] {
				t.Fatalf("%s: byte %d (channel %d, pruned %v) is %d, B's %d", rt.GetName(), j, j/per, pruned, rt.RawData[j], bt.RawData[j])
			}
		}
		rt.RawData = bt.RawData
	}
	if !proto.Equal(r, b) {
		t.Error("B' differs from B outside the pruned layer")
	}
}

// TestONNXLayerNames: --layer and --rank-layer take a Conv node's output
// (an old export's number), its weight's name with or without .weight,
// and the log names the layers as badprune does.
func TestONNXLayerNames(t *testing.T) {
	valid := []string{"--model", onnxDir + "deepid_tiny_old.onnx", "--valid", tiny + "clean_u8_nchw.h5", "--bd-valid", tiny + "bd_u8_nchw.h5", "--threshold", "50"}
	want := repairLog(t, t.TempDir(), valid...)
	if want.Layer != "conv_3" || want.RankLayer != "8" {
		t.Fatalf("defaults: layer %q, rank layer %q; want conv_3 and its pool's output, 8", want.Layer, want.RankLayer)
	}
	for _, names := range [][2]string{{"6", "8"}, {"conv_3.weight", "8"}, {"conv_3", "7"}} {
		got := repairLog(t, t.TempDir(), append(valid, "--layer", names[0], "--rank-layer", names[1])...)
		if got.Layer != "conv_3" || !slices.Equal(got.Order, want.Order) && names[1] == "8" {
			t.Errorf("--layer %s --rank-layer %s: layer %q, order %v; want conv_3, %v", names[0], names[1], got.Layer, got.Order, want.Order)
		}
	}
	_, stderr, code := badprune(t, append([]string{"repair", "-q", "--out", t.TempDir(), "--layer", "conv_9"}, valid...)...)
	if code != exitError || !strings.Contains(stderr, "--layer conv_9: no such layer") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

// TestONNXFinetune: fine-tuning an ONNX B' writes ONNX: the same graph,
// new weights, the pruned channels still zero. (The lab's fc_1 and fc_2
// biases, which the exporter stored once, get equal gradients through
// their Add and stay one tensor.)
func TestONNXFinetune(t *testing.T) {
	out := t.TempDir()
	valid := []string{"--valid", labDir + "data/cl/valid.h5", "--bd-valid", labDir + "data/bd/bd_valid.h5"}
	log := repairLog(t, out, append([]string{"--model", labDir + "models/bd_net.onnx", "--threshold", "10", "--finetune", "--ft-epochs", "2", "--ft-lr", "1e-3"}, valid...)...)
	s, ok := log.Saved["10"]
	if !ok || s.Finetune == nil || filepath.Ext(s.Finetune.File) != ".onnx" || s.Finetune.Best == 0 {
		t.Fatalf("saved %+v: want a fine-tuned ONNX B' from an epoch after the first", log.Saved)
	}
	ft := filepath.Join(out, "ft.onnx")
	_, stderr, code := badprune(t, append([]string{"finetune", "-q", "--model", s.File, "--out", ft, "--epochs", "1", "--lr", "1e-3"}, valid...)...)
	if code != 0 {
		t.Fatalf("finetune: exit %d: %s", code, stderr)
	}
	bp, err := model.Read(s.File)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{s.Finetune.File, ft} {
		m, err := model.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		if m.Format() != "onnx" || !slices.Equal(m.Layer("conv_3").ZeroChannels(), s.Pruned) {
			t.Errorf("%s: format %s, zero channels %v; want onnx, %v", f, m.Format(), m.Layer("conv_3").ZeroChannels(), s.Pruned)
		}
		if f == s.Finetune.File && slices.Equal(m.Layer("fc_1").Kernel, bp.Layer("fc_1").Kernel) {
			t.Errorf("%s: fc_1 did not change", f)
		}
		b, g := testfile.ReadONNX(t, s.File).Graph, testfile.ReadONNX(t, f).Graph
		var ops, ops2 []string
		for _, n := range b.Node {
			ops = append(ops, n.GetOpType())
		}
		for _, n := range g.Node {
			ops2 = append(ops2, n.GetOpType())
		}
		// The deduplicated bias's Identity may give way to an initializer.
		ops = slices.DeleteFunc(ops, func(s string) bool { return s == "Identity" })
		ops2 = slices.DeleteFunc(ops2, func(s string) bool { return s == "Identity" })
		if !slices.Equal(ops, ops2) {
			t.Errorf("%s: the graph changed: %v, B' %v", f, ops2, ops)
		}
	}
}

// TestONNXUnsupported: a model with an op badprune cannot compute is one
// line naming the file, the node and its op.
func TestONNXUnsupported(t *testing.T) {
	mp := testfile.ReadONNX(t, onnxDir+"deepid_tiny.onnx")
	for _, n := range mp.Graph.Node {
		if n.GetName() == "/Relu_2" {
			n.OpType = proto.String("LRN")
		}
	}
	data, _ := proto.Marshal(mp)
	p := filepath.Join(t.TempDir(), "bd.onnx")
	os.WriteFile(p, data, 0o644)
	_, stderr, code := badprune(t, "eval", "--model", p, "--test", tiny+"clean_u8_nchw.h5", "-q")
	if want := "badprune: " + p + ": node \"/Relu_2\" (op LRN): not supported\n"; code != exitError || stderr != want {
		t.Errorf("exit %d, %q; want %q", code, stderr, want)
	}
}

// TestMeanStd: --mean and --std give what normalizing the images first
// gives, are recorded in the JSON, and a mismatch names the flag.
func TestMeanStd(t *testing.T) {
	mean, std := []float32{120, 110, 100}, []float32{60, 50, 70}
	norm := []string{"--mean", "120,110,100", "--std", "60,50,70"}
	// The same images normalized here, by a plain loop, stored as floats.
	dir := t.TempDir()
	normalized := map[string]string{}
	for _, f := range []string{"clean_u8_nchw.h5", "bd_u8_nchw.h5"} {
		s, err := h5data.Open(tiny+f, h5data.Options{H: 55, W: 47, C: 3})
		if err != nil {
			t.Fatal(err)
		}
		x, err := s.ReadAll(context.Background())
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := range x {
			x[i] = (x[i] - mean[i%3]) / std[i%3]
		}
		p := filepath.Join(dir, f)
		w, err := h5data.Create(p, s.N, 55, 47, 3, h5data.Storage{Data: "float32", Label: "float32"}, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(0, x, s.Labels); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		normalized[f] = p
	}
	for _, m := range []string{tiny + "model_full.h5", onnxDir + "deepid_tiny.onnx"} {
		got := evalJSON(t, append([]string{"--model", m, "--test", tiny + "clean_u8_nchw.h5", "--bd-test", tiny + "bd_u8_nchw.h5"}, norm...)...)
		want := evalJSON(t, "--model", m, "--test", normalized["clean_u8_nchw.h5"], "--bd-test", normalized["bd_u8_nchw.h5"])
		plain := evalJSON(t, "--model", m, "--test", tiny+"clean_u8_nchw.h5", "--bd-test", tiny+"bd_u8_nchw.h5")
		g, w, p := got.Results[0], want.Results[0], plain.Results[0]
		if g.CleanAcc != w.CleanAcc || *g.ASR != *w.ASR {
			t.Errorf("%s: normalized by --mean/--std %v/%v, beforehand %v/%v", m, g.CleanAcc, *g.ASR, w.CleanAcc, *w.ASR)
		}
		if g.CleanAcc == p.CleanAcc && *g.ASR == *p.ASR {
			t.Errorf("%s: --mean/--std changed nothing (%v/%v)", m, g.CleanAcc, *g.ASR)
		}
		if !slices.Equal(got.Mean, []float64{120, 110, 100}) || !slices.Equal(got.Std, []float64{60, 50, 70}) || want.Mean != nil {
			t.Errorf("eval --json records mean %v std %v (and %v without)", got.Mean, got.Std, want.Mean)
		}
	}
	log := repairLog(t, t.TempDir(), "--model", tiny+"model_full.h5", "--valid", tiny+"clean_u8_nchw.h5", "--threshold", "50", "--mean", "0.5", "--std", "2")
	if !slices.Equal(log.Mean, []float64{0.5}) || !slices.Equal(log.Std, []float64{2}) {
		t.Errorf("prune_log.json records mean %v std %v", log.Mean, log.Std)
	}

	// predict: the label of the image normalized here.
	b, err := model.Read(onnxDir + "deepid_tiny.onnx")
	if err != nil {
		t.Fatal(err)
	}
	img := "../../testdata/images/face.png"
	x := make([]float32, 55*47*3)
	if err := imageio.Load(img, 55, 47, 3, 1, x); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		x[i] = (x[i] - mean[i%3]) / std[i%3]
	}
	out, stderr, code := badprune(t, append([]string{"predict", "--model", onnxDir + "deepid_tiny.onnx", img}, norm...)...)
	if want := img + "\t" + strconv.Itoa(oracle.Argmax(oracle.Logits(b, x, oracle.Options{}))) + "\n"; code != 0 || out != want {
		t.Errorf("predict: exit %d, %q (%s); want %q", code, out, stderr, want)
	}

	for _, c := range []struct{ args, want []string }{
		{[]string{"--mean", "1,2"}, []string{"--mean [1 2]: 2 values for images of 3 channels; want 1 or 3"}},
		{[]string{"--std", "0"}, []string{"--std [0]: want positive numbers"}},
	} {
		_, stderr, code := badprune(t, append([]string{"eval", "-q", "--model", tiny + "model_full.h5", "--test", tiny + "clean_u8_nchw.h5"}, c.args...)...)
		if code != exitError || !strings.Contains(stderr, c.want[0]) {
			t.Errorf("%v: exit %d, %q", c.args, code, stderr)
		}
	}
}
