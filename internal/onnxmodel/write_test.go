package onnxmodel_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"badprune/internal/model"
	"badprune/internal/onnxmodel"
	"badprune/internal/testsupport/testfile"
	pb "badprune/internal/third_party/onnxpb"
)

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

		src, out := testfile.ReadONNX(t, dir+name+".onnx"), testfile.ReadONNX(t, dst)
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
	if out := testfile.ReadONNX(t, dst); len(out.Graph.Initializer) != len(testfile.ReadONNX(t, lab+"models/bd_net.onnx").Graph.Initializer) {
		t.Error("biases changed alike no longer share their tensor")
	}
	// Changed apart, fc_2 gets its own.
	m.Layer("fc_2").Bias[0] += 1
	dst = filepath.Join(t.TempDir(), "untied.onnx")
	if err := m.WriteCopy(dst, false, "fc_1", "fc_2"); err != nil {
		t.Fatal(err)
	}
	sameWeights(t, read(t, dst), m)
	out := testfile.ReadONNX(t, dst)
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
	mp := testfile.ReadONNX(t, dir+"deepid_tiny.onnx")
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
	out := testfile.ReadONNX(t, dst)
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

func floatTensor(name string, dims []int64, v func(i int) float32) *pb.TensorProto {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	raw := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v(i)))
	}
	return &pb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(pb.TensorProto_FLOAT)), RawData: raw}
}

func node(op, name string, ins, outs []string, attrs ...*pb.AttributeProto) *pb.NodeProto {
	n := &pb.NodeProto{OpType: proto.String(op), Input: ins, Output: outs, Attribute: attrs}
	if name != "" {
		n.Name = proto.String(name)
	}
	return n
}

func ints(name string, v ...int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INTS.Enum(), Ints: v}
}

func imageInput(name string) *pb.ValueInfoProto {
	dim := func(v int64) *pb.TensorShapeProto_Dimension {
		return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
	}
	batch := &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}}
	return &pb.ValueInfoProto{Name: proto.String(name), Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
		ElemType: proto.Int32(int32(pb.TensorProto_FLOAT)),
		Shape:    &pb.TensorShapeProto{Dim: []*pb.TensorShapeProto_Dimension{batch, dim(3), dim(8), dim(8)}}}}}}
}

// small is a valid little classifier: Conv, Relu, GlobalAveragePool,
// Flatten, Gemm. edit changes its nodes before it is written.
func small(t *testing.T, edit func(g *pb.GraphProto)) string {
	t.Helper()
	w := func(i int) float32 { return float32(i%5)*0.1 - 0.2 }
	g := &pb.GraphProto{
		Name:  proto.String("small"),
		Input: []*pb.ValueInfoProto{imageInput("x")},
		Initializer: []*pb.TensorProto{
			floatTensor("c.weight", []int64{4, 3, 3, 3}, w), floatTensor("c.bias", []int64{4}, w),
			floatTensor("fc.weight", []int64{2, 4}, w), floatTensor("fc.bias", []int64{2}, w),
		},
		Node: []*pb.NodeProto{
			node("Conv", "conv", []string{"x", "c.weight", "c.bias"}, []string{"c"}, ints("pads", 1, 1, 1, 1)),
			node("Relu", "relu", []string{"c"}, []string{"r"}),
			node("GlobalAveragePool", "gap", []string{"r"}, []string{"g"}),
			node("Flatten", "flat", []string{"g"}, []string{"f"}),
			node("Gemm", "fc", []string{"f", "fc.weight", "fc.bias"}, []string{"y"},
				&pb.AttributeProto{Name: proto.String("transB"), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(1)}),
		},
		Output: []*pb.ValueInfoProto{{Name: proto.String("y")}},
	}
	if edit != nil {
		edit(g)
	}
	mp := &pb.ModelProto{IrVersion: proto.Int64(8), Graph: g,
		OpsetImport: []*pb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}}}
	return writeProto(t, filepath.Join(t.TempDir(), "m.onnx"), mp)
}

// after inserts n after the relu, reading r and writing what gap reads.
func after(n *pb.NodeProto) func(g *pb.GraphProto) {
	return func(g *pb.GraphProto) {
		n.Input, n.Output = append([]string{"r"}, n.Input...), []string{"z"}
		g.Node[2].Input[0] = "z"
		g.Node = append(g.Node[:2], append([]*pb.NodeProto{n}, g.Node[2:]...)...)
	}
}

func TestSmallModel(t *testing.T) {
	m := read(t, small(t, nil))
	var kinds []model.Kind
	for _, l := range m.Layers {
		kinds = append(kinds, l.Kind)
	}
	want := []model.Kind{model.Input, model.Conv2D, model.GlobalAvgPool, model.Dense}
	if !slices.Equal(kinds, want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	if c := m.Layer("c"); c == nil || !c.Same || c.Act != "relu" {
		t.Errorf("layer c (named after its weight c.weight): %+v; want PyTorch's padding 1 as \"same\", the Relu as its activation", c)
	}
}

func intTensor(name string, v ...int64) *pb.TensorProto {
	return &pb.TensorProto{Name: proto.String(name), Dims: []int64{int64(len(v))}, DataType: proto.Int32(int32(pb.TensorProto_INT64)), Int64Data: v}
}

func attrInt(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: proto.String(name), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// replace puts nodes in place of the node producing out.
func replace(g *pb.GraphProto, out string, nodes ...*pb.NodeProto) {
	for k, n := range g.Node {
		if n.Output[0] == out {
			g.Node = slices.Concat(g.Node[:k], nodes, g.Node[k+1:])
			return
		}
	}
	panic("no node makes " + out)
}

// TestEquivalentGraphs: the ways exporters spell the same network give
// the same layers, so the same logits to the bit.
func TestEquivalentGraphs(t *testing.T) {
	base := read(t, small(t, nil))
	x := probe(3*8*8*3, 1, 0)
	want := logits(t, base, x, 3)
	transposedFC := func(g *pb.GraphProto) *pb.TensorProto {
		w := g.Initializer[2] // fc.weight (2, 4) -> (4, 2)
		v := floats(w)
		return floatTensor("fc.weight.T", []int64{4, 2}, func(i int) float32 { return v[(i%2)*4+i/2] })
	}
	cases := []struct {
		name string
		edit func(g *pb.GraphProto)
	}{
		{"auto_pad SAME_UPPER", func(g *pb.GraphProto) {
			g.Node[0].Attribute = []*pb.AttributeProto{{Name: proto.String("auto_pad"), Type: pb.AttributeProto_STRING.Enum(), S: []byte("SAME_UPPER")}}
		}},
		{"Reshape to an initializer's (0, -1)", func(g *pb.GraphProto) {
			g.Initializer = append(g.Initializer, intTensor("shape", 0, -1))
			replace(g, "f", node("Reshape", "rs", []string{"g", "shape"}, []string{"f"}))
		}},
		{"Squeeze of the pooled axes", func(g *pb.GraphProto) {
			replace(g, "f", node("Squeeze", "sq", []string{"g"}, []string{"f"}, ints("axes", 2, 3)))
		}},
		{"Shape, Gather, Unsqueeze, Concat, Reshape", func(g *pb.GraphProto) {
			g.Initializer = append(g.Initializer, intTensor("zero", 0), intTensor("minus1", -1))
			g.Initializer[len(g.Initializer)-2].Dims = nil // a scalar index
			replace(g, "f",
				node("Shape", "", []string{"g"}, []string{"11"}),
				node("Gather", "", []string{"11", "zero"}, []string{"12"}, attrInt("axis", 0)),
				node("Unsqueeze", "", []string{"12"}, []string{"13"}, ints("axes", 0)),
				node("Concat", "", []string{"13", "minus1"}, []string{"14"}, attrInt("axis", 0)),
				node("Reshape", "", []string{"g", "14"}, []string{"f"}))
		}},
		{"MatMul and Add", func(g *pb.GraphProto) {
			g.Initializer = append(g.Initializer, transposedFC(g))
			replace(g, "y", node("MatMul", "mm", []string{"f", "fc.weight.T"}, []string{"mmo"}),
				node("Add", "add", []string{"mmo", "fc.bias"}, []string{"y"}))
		}},
		{"Gemm of an untransposed weight", func(g *pb.GraphProto) {
			g.Initializer = append(g.Initializer, transposedFC(g))
			replace(g, "y", node("Gemm", "fc", []string{"f", "fc.weight.T", "fc.bias"}, []string{"y"}))
		}},
		{"Clip from 0", func(g *pb.GraphProto) {
			g.Initializer = append(g.Initializer, floatTensor("lo", nil, func(int) float32 { return 0 }))
			replace(g, "r", node("Clip", "clip", []string{"c", "lo"}, []string{"r"}))
		}},
		{"Identity, Dropout, softmax, Identity", func(g *pb.GraphProto) {
			replace(g, "f", node("Flatten", "flat", []string{"g"}, []string{"f0"}),
				node("Identity", "id", []string{"f0"}, []string{"f1"}), node("Dropout", "drop", []string{"f1"}, []string{"f"}))
			g.Node[len(g.Node)-1].Output[0] = "logits"
			g.Node = append(g.Node, node("Softmax", "sm", []string{"logits"}, []string{"p"}, attrInt("axis", 1)),
				node("Identity", "out", []string{"p"}, []string{"y"}))
		}},
		{"float_data and a Constant's weight", func(g *pb.GraphProto) {
			for _, w := range g.Initializer {
				w.FloatData, w.RawData = floats(w), nil
			}
			b := g.Initializer[1]
			g.Initializer = slices.Delete(g.Initializer, 1, 2)
			g.Node = append([]*pb.NodeProto{node("Constant", "", nil, []string{"c.bias"},
				&pb.AttributeProto{Name: proto.String("value"), Type: pb.AttributeProto_TENSOR.Enum(), T: b})}, g.Node...)
		}},
	}
	for _, c := range cases {
		m := read(t, small(t, c.edit))
		if got := logits(t, m, x, 3); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%s: logits %v, want %v", c.name, got, want)
		}
		if len(m.Layers) != len(base.Layers) {
			t.Errorf("%s: layers %v, want %v", c.name, names(m), names(base))
		}
	}
}

// TestUnsupported: whatever badprune cannot compute is one error naming
// the file, the node (by name, or by output when it has none) and its op.
func TestUnsupported(t *testing.T) {
	lrn := func(name string) *pb.NodeProto { return node("LRN", name, nil, nil) }
	cases := []struct {
		name string
		edit func(g *pb.GraphProto)
		want string // after "<file>: "
	}{
		{"unknown op", after(lrn("lrn_1")), `node "lrn_1" (op LRN): not supported`},
		{"unnamed node", func(g *pb.GraphProto) {
			after(lrn(""))(g)
			g.Node[2].Output[0], g.Node[3].Input[0] = "19", "19"
		}, `node with output "19" (op LRN): not supported`},
		{"dilation", func(g *pb.GraphProto) { g.Node[0].Attribute = append(g.Node[0].Attribute, ints("dilations", 2, 2)) },
			`node "conv" (op Conv): dilations [2 2]: not supported (1 only)`},
		{"grouped", func(g *pb.GraphProto) {
			g.Node[0].Attribute = append(g.Node[0].Attribute, &pb.AttributeProto{Name: proto.String("group"), Type: pb.AttributeProto_INT.Enum(), I: proto.Int64(2)})
		}, `node "conv" (op Conv): group 2 with a weight of shape [4 3 3 3] for 3 input channels: only plain (group 1) and depthwise convolutions are supported`},
		{"clip", after(node("Clip", "clip", nil, nil,
			&pb.AttributeProto{Name: proto.String("min"), Type: pb.AttributeProto_FLOAT.Enum(), F: proto.Float32(-1)},
			&pb.AttributeProto{Name: proto.String("max"), Type: pb.AttributeProto_FLOAT.Enum(), F: proto.Float32(1)})),
			`node "clip" (op Clip): Clip to [-1, 1]: only Clip to [0, max] (ReLU, ReLU6) is supported`},
		{"other domain", func(g *pb.GraphProto) {
			n := lrn("fused")
			n.OpType, n.Domain = proto.String("FusedConv"), proto.String("com.microsoft")
			after(n)(g)
		}, `node "fused" (op FusedConv): operator domain "com.microsoft": not supported`},
		{"reshape", func(g *pb.GraphProto) {
			g.Initializer = append(g.Initializer, &pb.TensorProto{Name: proto.String("shape"), Dims: []int64{3},
				DataType: proto.Int32(int32(pb.TensorProto_INT64)), Int64Data: []int64{0, 4, 64}})
			after(node("Reshape", "rs", []string{"shape"}, nil))(g)
		}, `node "rs" (op Reshape): Reshape of (N, 4, 8, 8) to [0 4 64]: only flattening each sample, (N, -1), is supported`},
		{"softmax inside", func(g *pb.GraphProto) {
			g.Node = append(g.Node[:4], node("Softmax", "sm", []string{"f"}, []string{"s"}), g.Node[4])
			g.Node[5].Input[0] = "s"
		}, `node "fc" (op Gemm): reads the output of the model's softmax: a softmax is supported only at the end`},
		{"two inputs", func(g *pb.GraphProto) { g.Input = append(g.Input, imageInput("x2")) },
			`the graph has 2 inputs: only single-input models are supported`},
		{"external data", func(g *pb.GraphProto) {
			g.Initializer[0].DataLocation = pb.TensorProto_EXTERNAL.Enum()
		}, `initializer "c.weight": stored in an external data file: not supported`},
		{"free size", func(g *pb.GraphProto) {
			g.Input[0].Type.GetTensorType().Shape.Dim[2].Value = &pb.TensorShapeProto_Dimension_DimParam{DimParam: "H"}
		}, `input "x": dimension 2 is not a fixed size: want (N, C, H, W) with C, H and W fixed`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := small(t, c.edit)
			_, err := model.Read(path)
			if err == nil || err.Error() != path+": "+c.want {
				t.Fatalf("error %v\nwant %s: %s", err, path, c.want)
			}
			var ne *onnxmodel.NodeError
			if strings.HasPrefix(c.want, "node") && !errors.As(err, &ne) {
				t.Errorf("not a NodeError: %T", err)
			}
		})
	}
}

// TestNotAModel: files that are not models of any format badprune reads
// say so; a file that starts like ONNX and is not says that.
func TestNotAModel(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.onnx")
	os.WriteFile(text, []byte("hello, this is not a model\n"), 0o644)
	if _, err := model.Read(text); err == nil || !strings.Contains(err.Error(), "not a model file badprune reads (Keras HDF5 or .keras archive, onnx)") {
		t.Errorf("text file: %v", err)
	}
	bad := filepath.Join(dir, "bad.onnx")
	os.WriteFile(bad, []byte{0x08, 0x07, 0x3a, 0xff, 0xff}, 0o644)
	if _, err := model.Read(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": not an ONNX model") {
		t.Errorf("damaged ONNX: %v", err)
	}
}

// TestResolve: a layer answers to its node's name, its output, and its
// weight's name with or without ".weight" (the PyTorch module).
func TestResolve(t *testing.T) {
	old := read(t, dir+"deepid_tiny_old.onnx")
	rg := read(t, dir+"reshape_gemm.onnx")
	cases := []struct {
		m          *model.Model
		name, want string
	}{
		{old, "conv_3", "conv_3"},
		{old, "conv_3.weight", "conv_3"},
		{old, "6", "conv_3"}, // the Conv's output in an old export
		{old, "7", "conv_3"}, // its Relu's, which became the layer's activation
		{old, "8", "8"},      // pool_3
		{rg, "/conv2/Conv", "conv2"},
		{rg, "conv2", "conv2"},
		{rg, "onnx::Conv_35", "/conv1/Conv"}, // conv1 with its BatchNorm folded in
		{rg, "/conv1/Conv_output_0", "/conv1/Conv"},
	}
	for _, c := range cases {
		if got, ok := c.m.Resolve(c.name); !ok || got != c.want {
			t.Errorf("%s: Resolve(%q) = %q, %v; want %q", c.m.Path, c.name, got, ok, c.want)
		}
	}
	if _, ok := old.Resolve("conv_9"); ok {
		t.Error("Resolve of no layer succeeded")
	}
}
