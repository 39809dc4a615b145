package onnxmodel_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"badprune/internal/model"
	pb "badprune/internal/third_party/onnxpb"
)

func readProto(t *testing.T, path string) *pb.ModelProto {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		t.Fatal(err)
	}
	return mp
}

func writeProto(t *testing.T, path string, mp *pb.ModelProto) string {
	t.Helper()
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func initializer(mp *pb.ModelProto, name string) *pb.TensorProto {
	for _, t := range mp.GetGraph().GetInitializer() {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}

// sameWeights checks that every layer of got holds want's weights.
func sameWeights(t *testing.T, got, want *model.Model) {
	t.Helper()
	for _, w := range want.Layers {
		g := got.Layer(w.Name)
		if g == nil {
			t.Fatalf("no layer %s", w.Name)
		}
		for _, p := range [][2][]float32{{g.Kernel, w.Kernel}, {g.Bias, w.Bias}, {g.Mean, w.Mean}, {g.Var, w.Var}} {
			if !slices.Equal(p[0], p[1]) {
				t.Errorf("layer %s: weights differ from the written model's", w.Name)
				break
			}
		}
	}
}

// TestCopyUnchanged: a copy with no layer written is the file, byte for
// byte: decoding and encoding keep every field as it was.
func TestCopyUnchanged(t *testing.T) {
	for _, name := range fixtures {
		m := read(t, dir+name+".onnx")
		dst := filepath.Join(t.TempDir(), "copy.onnx")
		if err := m.WriteCopy(dst, false); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(dir + name + ".onnx")
		b, _ := os.ReadFile(dst)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: the copy differs from the file", name)
		}
	}
}

// TestPrunedCopy: B' is B with only the pruned channels of the pruned
// layer's weight and bias zeroed; read back, it is the pruned model.
func TestPrunedCopy(t *testing.T) {
	for _, name := range []string{"deepid_tiny", "deepid_tiny_old", "deepid_tiny_nhwc"} {
		b := read(t, dir+name+".onnx")
		bp := b.Clone()
		pruned := []int{0, 2, 7}
		if err := bp.PruneChannels("conv_3", pruned); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "repaired_4.onnx")
		if err := bp.WriteCopy(dst, false, "conv_3"); err != nil {
			t.Fatal(err)
		}
		sameWeights(t, read(t, dst), bp)

		src, out := readProto(t, dir+name+".onnx"), readProto(t, dst)
		w0, w1 := initializer(src, "conv_3.weight"), initializer(out, "conv_3.weight")
		v0, v1 := floats(w0), floats(w1)
		per := len(v0) / int(w0.Dims[0]) // OIHW: one output channel is a run
		for i := range v0 {
			if slices.Contains(pruned, i/per) {
				if v1[i] != 0 {
					t.Fatalf("%s: pruned channel %d not zero", name, i/per)
				}
			} else if v1[i] != v0[i] {
				t.Fatalf("%s: kept channel %d changed", name, i/per)
			}
		}
		// Everything else is as it was.
		initializer(out, "conv_3.weight").RawData = w0.RawData
		initializer(out, "conv_3.bias").RawData = initializer(src, "conv_3.bias").RawData
		if !proto.Equal(src, out) {
			t.Errorf("%s: B' differs from B outside conv_3", name)
		}
	}
}

func fixturePaths() []string {
	var out []string
	for _, name := range fixtures {
		out = append(out, dir+name+".onnx")
	}
	return out
}

// TestSharedWeights: a weight stored once for two layers stays shared
// while they agree on it, and is untied when they come apart: the lab's
// fc_2 then reads an initializer fc_2.bias instead of the exporter's
// Identity of fc_1.bias.
func TestSharedWeights(t *testing.T) {
	b := read(t, lab+"models/bd_net.onnx")
	if !slices.Equal(b.Layer("fc_1").Bias, b.Layer("fc_2").Bias) {
		t.Fatal("the lab's fc_1 and fc_2 biases differ: no shared weight to test")
	}
	dst := filepath.Join(t.TempDir(), "same.onnx")
	if err := b.WriteCopy(dst, false, "fc_1", "fc_2"); err != nil {
		t.Fatal(err)
	}
	x, _ := os.ReadFile(lab + "models/bd_net.onnx")
	y, _ := os.ReadFile(dst)
	if !bytes.Equal(x, y) {
		t.Error("writing unchanged shared weights changed the file")
	}
	// Changed alike, they stay one tensor.
	m := b.Clone()
	for _, l := range []string{"fc_1", "fc_2"} {
		m.Layer(l).Bias[0] += 1
	}
	dst = filepath.Join(t.TempDir(), "alike.onnx")
	if err := m.WriteCopy(dst, false, "fc_1", "fc_2"); err != nil {
		t.Fatal(err)
	}
	sameWeights(t, read(t, dst), m)
	if out := readProto(t, dst); len(out.Graph.Initializer) != len(readProto(t, lab+"models/bd_net.onnx").Graph.Initializer) {
		t.Error("biases changed alike no longer share their tensor")
	}
	// Changed apart, fc_2 gets its own.
	m.Layer("fc_2").Bias[0] += 1
	dst = filepath.Join(t.TempDir(), "untied.onnx")
	if err := m.WriteCopy(dst, false, "fc_1", "fc_2"); err != nil {
		t.Fatal(err)
	}
	sameWeights(t, read(t, dst), m)
	out := readProto(t, dst)
	if initializer(out, "fc_2.bias") == nil || initializer(out, "fc_1.bias") == nil {
		t.Error("no initializer fc_2.bias of its own beside fc_1.bias")
	}
}

func floats(tp *pb.TensorProto) []float32 {
	if tp.RawData == nil {
		return tp.FloatData
	}
	v := make([]float32, len(tp.RawData)/4)
	for i := range v {
		b := tp.RawData[4*i:]
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b))
	}
	return v
}

// TestTrainedCopy: every trained weight goes back to the file through the
// inverse of the layout changes (OIHW kernels, transposed and permuted
// dense rows, depthwise kernels, normalization vectors), so a copy read
// back is the model written. The lab's export stores fc_1's and fc_2's
// equal biases once; trained apart, each gets its own.
func TestTrainedCopy(t *testing.T) {
	for _, path := range append(fixturePaths(), lab+"models/bd_net.onnx") {
		m := read(t, path)
		var layers []string
		for k, l := range m.Layers {
			if l.Kernel == nil {
				continue
			}
			layers = append(layers, l.Name)
			for _, v := range [][]float32{l.Kernel, l.Bias, l.Mean} {
				for i := range v {
					v[i] = v[i]*1.5 + float32(k+i%7)*0.01
				}
			}
		}
		dst := filepath.Join(t.TempDir(), "finetuned.onnx")
		if err := m.WriteCopy(dst, false, layers...); err != nil {
			t.Fatal(err)
		}
		sameWeights(t, read(t, dst), m)
	}
}

// TestStoredAsBefore: weights stored in float_data and in a Constant node
// are read, and written back where and as they were.
func TestStoredAsBefore(t *testing.T) {
	mp := readProto(t, dir+"deepid_tiny.onnx")
	w := initializer(mp, "conv_3.weight")
	w.FloatData, w.RawData = floats(w), nil
	// fc_1's bias becomes a Constant node's value.
	g := mp.Graph
	fb := initializer(mp, "fc_1.bias")
	g.Initializer = slices.DeleteFunc(g.Initializer, func(t *pb.TensorProto) bool { return t == fb })
	fb.Name = nil
	g.Node = append([]*pb.NodeProto{{OpType: proto.String("Constant"), Output: []string{"fc_1.bias"},
		Attribute: []*pb.AttributeProto{{Name: proto.String("value"), Type: pb.AttributeProto_TENSOR.Enum(), T: fb}}}}, g.Node...)
	src := writeProto(t, filepath.Join(t.TempDir(), "b.onnx"), mp)

	m := read(t, src)
	k := read(t, dir+"deepid_tiny.onnx")
	sameWeights(t, m, k)
	bp := m.Clone()
	if err := bp.PruneChannels("conv_3", []int{3}); err != nil {
		t.Fatal(err)
	}
	for i := range bp.Layer("fc_1").Bias {
		bp.Layer("fc_1").Bias[i] += 1
	}
	dst := filepath.Join(t.TempDir(), "repaired.onnx")
	if err := bp.WriteCopy(dst, false, "conv_3", "fc_1"); err != nil {
		t.Fatal(err)
	}
	sameWeights(t, read(t, dst), bp)
	out := readProto(t, dst)
	if w := initializer(out, "conv_3.weight"); w.RawData != nil || len(w.FloatData) == 0 {
		t.Error("conv_3.weight is no longer stored in float_data")
	}
	if b := initializer(out, "conv_3.bias"); b.RawData == nil {
		t.Error("conv_3.bias is no longer stored in raw_data")
	}
	if n := out.Graph.Node[0]; n.GetOpType() != "Constant" || floats(n.Attribute[0].T)[0] != bp.Layer("fc_1").Bias[0] {
		t.Error("fc_1.bias was not written into its Constant node")
	}
}

// TestCheckerAcceptsCopies: onnx.checker accepts every kind of copy
// badprune writes (skipped without Debian's python3-onnx).
func TestCheckerAcceptsCopies(t *testing.T) {
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import onnx").Run() != nil {
		t.Skip("no python3-onnx to check with")
	}
	tmp := t.TempDir()
	var files []string
	for k, path := range append(fixturePaths(), lab+"models/bd_net.onnx") {
		m := read(t, path)
		var layers []string
		for _, l := range m.Layers {
			if l.Kernel != nil {
				layers = append(layers, l.Name)
				for i := range l.Kernel {
					if i%3 == 0 {
						l.Kernel[i] = 0
					}
				}
			}
		}
		if b := m.Layer("fc_2"); b != nil {
			b.Bias[0]++ // untie the lab's shared biases
		}
		dst := filepath.Join(tmp, fmt.Sprintf("%d.onnx", k))
		if err := m.WriteCopy(dst, false, layers...); err != nil {
			t.Fatal(err)
		}
		files = append(files, dst)
	}
	script := "import sys, onnx\nfor p in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(p), full_check=True)\n"
	if out, err := exec.Command(py, append([]string{"-c", script}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("onnx.checker: %v\n%s", err, out)
	}
}
