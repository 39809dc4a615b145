package onnxmodel_test

import (
	"encoding/json"
	"maps"
	"math"
	"os"

	"slices"
	"testing"

	"badprune/internal/infer"
	"badprune/internal/model"
	_ "badprune/internal/onnxmodel"
	"badprune/internal/testsupport/must"
	"badprune/internal/testsupport/oracle"
)

const (
	dir  = "../../testdata/onnx/"
	tiny = "../../testdata/tiny/"
	lab  = "../../testdata/lab/"
)

// expected is what scripts/export_onnx.py saved beside a fixture:
// PyTorch's logits for the probe inputs.
type expected struct {
	Opset      int   `json:"opset"`
	InputShape []int `json:"input_shape"`
	Probe      struct {
		Scale  float64 `json:"scale"`
		Offset float64 `json:"offset"`
	} `json:"probe"`
	Logits [][]float64 `json:"logits"`
}

func readExpected(t *testing.T, name string) expected {
	t.Helper()
	b, err := os.ReadFile(dir + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// probe is export_onnx.py's probe: the same floats, NCHW.
func probe(n int, scale, offset float64) []float32 {
	x := make([]float32, n)
	for k := range x {
		v := float64((k*7919+13)%2003)/2003.0 - 0.5
		x[k] = float32(v*scale + offset)
	}
	return x
}

// toNHWC reorders n NCHW images for the network.
func toNHWC(x []float32, n, c, h, w int) []float32 {
	out := make([]float32, len(x))
	for i := 0; i < n; i++ {
		for ch := 0; ch < c; ch++ {
			for p := 0; p < h*w; p++ {
				out[(i*h*w+p)*c+ch] = x[(i*c+ch)*h*w+p]
			}
		}
	}
	return out
}

// relTol is the tolerance on logits: 1e-4 of the row's largest magnitude.
const relTol = 1e-4

func closeRow(got []float64, want []float64) (int, bool) {
	scale := 0.0
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	for j := range want {
		if math.Abs(got[j]-want[j]) > relTol*scale {
			return j, false
		}
	}
	return 0, true
}

func read(t *testing.T, path string) *model.Model {
	t.Helper()
	return must.Get(t, model.Read, path)
}

// logits runs m's graph on the NHWC images x.
func logits(t *testing.T, m *model.Model, x []float32, n int) [][]float64 {
	t.Helper()
	tr, err := infer.NewTrunk(m, n, m.Output.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	res, err := tr.Run(x, n)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]float64, n)
	for i := range out {
		for _, v := range res[0][i*m.Classes : (i+1)*m.Classes] {
			out[i] = append(out[i], float64(v))
		}
	}
	return out
}

var fixtures = []string{"deepid_tiny", "deepid_tiny_nhwc", "deepid_tiny_old", "reshape_gemm", "reshape_gemm_b1", "gap_head"}

// TestAgainstPyTorch: each fixture's logits, by badprune's graph and by
// the plain-loop oracle, are PyTorch's.
func TestAgainstPyTorch(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			m := read(t, dir+name+".onnx")
			e := readExpected(t, name)
			if m.Format() != "onnx" || m.Ext() != ".onnx" {
				t.Errorf("format %q, ext %q", m.Format(), m.Ext())
			}
			n, c, h, w := e.InputShape[0], e.InputShape[1], e.InputShape[2], e.InputShape[3]
			if mh, mw, mc := m.InputShape(); mh != h || mw != w || mc != c || m.Classes != len(e.Logits[0]) {
				t.Fatalf("input %dx%dx%d, %d classes; want %dx%dx%d, %d", mh, mw, mc, m.Classes, h, w, c, len(e.Logits[0]))
			}
			x := toNHWC(probe(n*c*h*w, e.Probe.Scale, e.Probe.Offset), n, c, h, w)
			for i, row := range logits(t, m, x, n) {
				if j, ok := closeRow(row, e.Logits[i]); !ok {
					t.Errorf("graph: image %d class %d: %v, PyTorch %v", i, j, row[j], e.Logits[i][j])
				}
			}
			sz := h * w * c
			for i := 0; i < n; i++ {
				row := oracle.Logits(m, x[i*sz:(i+1)*sz], oracle.Options{})
				if j, ok := closeRow(row, e.Logits[i]); !ok {
					t.Errorf("oracle: image %d class %d: %v, PyTorch %v", i, j, row[j], e.Logits[i][j])
				}
			}
		})
	}
}

// TestDeepIDIsTheKerasModel: the tiny DeepID exported from PyTorch, in
// each flatten style, is the Keras file's network: the same layers, the
// same weights to the bit (the fc rows put back in Keras's order), so
// the same logits to the bit.
func TestDeepIDIsTheKerasModel(t *testing.T) {
	k := read(t, tiny+"model_full.h5")
	x := make([]float32, 3*55*47*3)
	copy(x, probe(len(x), 255, 127.5))
	want := logits(t, k, x, 3)
	for _, name := range []string{"deepid_tiny", "deepid_tiny_nhwc", "deepid_tiny_old"} {
		m := read(t, dir+name+".onnx")
		for _, kl := range k.Layers {
			if kl.Kind != model.Conv2D && kl.Kind != model.Dense {
				continue
			}
			l := m.Layer(kl.Name)
			if l == nil {
				t.Fatalf("%s: no layer %s in %v", name, kl.Name, names(m))
			}
			if !slices.Equal(l.Kernel, kl.Kernel) || !slices.Equal(l.KernelShape, kl.KernelShape) || !slices.Equal(l.Bias, kl.Bias) || l.Act != kl.Act {
				t.Errorf("%s: layer %s differs from the Keras file's", name, kl.Name)
			}
		}
		if got := logits(t, m, x, 3); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%s: logits %v, Keras file's %v", name, got[0], want[0])
		}
	}
}

func names(m *model.Model) []string {
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Name)
	}
	return out
}

// TestLabDeepID: the demo lab's BadNet exported from PyTorch is its Keras
// file's network: the same layers of each kind, the same weights, the same
// logits to the bit.
func TestLabDeepID(t *testing.T) {
	k := read(t, lab+"models/bd_net.h5")
	m := read(t, lab+"models/bd_net.onnx")
	kinds := func(m *model.Model) map[model.Kind]int {
		out := map[model.Kind]int{}
		for _, l := range m.Layers {
			out[l.Kind]++
		}
		return out
	}
	if got, want := kinds(m), kinds(k); !maps.Equal(got, want) {
		t.Errorf("layers %v, Keras file's %v", got, want)
	}
	for _, kl := range k.Layers {
		if kl.Kernel == nil {
			continue
		}
		l := m.Layer(kl.Name)
		if l == nil || !slices.Equal(l.Shape, kl.Shape) || !slices.Equal(l.Kernel, kl.Kernel) || !slices.Equal(l.Bias, kl.Bias) || l.Act != kl.Act {
			t.Errorf("layer %s differs from the Keras file's", kl.Name)
		}
	}
	x := probe(8*55*47*3, 255, 127.5)
	if got, want := logits(t, m, x, 8), logits(t, k, x, 8); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("logits %v, Keras file's %v", got[0], want[0])
	}
}
