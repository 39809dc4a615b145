package model_test

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"badprune/internal/h5"
	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
	"badprune/internal/testsupport/must"
	"badprune/internal/testsupport/oracle"
)

const tiny = "../../testdata/tiny/"

func load(t *testing.T, path string) *model.Model {
	t.Helper()
	return must.Get(t, model.Load, path)
}

// runGraph returns the outputs of the named layers for n images.
func runGraph(t *testing.T, m *model.Model, x []float32, n int, train bool, outputs ...string) [][]float32 {
	t.Helper()
	out, err := fixture.RunGraph(m, model.GraphOptions{Batch: n, Outputs: outputs, Train: train}, x)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// relClose reports whether got matches want to rel times want's largest magnitude.
func relClose(got []float32, want []float64, rel float64) (int, bool) {
	scale := 0.0
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > rel*math.Max(scale, 1e-30) {
			return i, false
		}
	}
	return 0, true
}

func TestLayoutsLoadAlike(t *testing.T) {
	full := load(t, tiny+"model_full.h5")
	wo := load(t, tiny+"model_weights.h5")
	if !full.FullModel || wo.FullModel {
		t.Fatalf("FullModel = %v, %v; want true, false", full.FullModel, wo.FullModel)
	}
	if len(full.Layers) != len(wo.Layers) || full.Classes != fixture.TinyClasses || wo.Classes != fixture.TinyClasses {
		t.Fatalf("layers %d vs %d, classes %d vs %d", len(full.Layers), len(wo.Layers), full.Classes, wo.Classes)
	}
	for i, l := range full.Layers {
		w := wo.Layers[i]
		if l.Name != w.Name || l.Kind != w.Kind || !slices.Equal(l.Shape, w.Shape) || !slices.Equal(l.Kernel, w.Kernel) || !slices.Equal(l.Bias, w.Bias) {
			t.Errorf("layer %d: %s %s %v differs from %s %s %v", i, l.Name, l.Kind, l.Shape, w.Name, w.Kind, w.Shape)
		}
	}
	if got := full.Layer("conv_3").KernelPath; got != "model_weights/conv_3/conv_3/kernel:0" {
		t.Errorf("full-model kernel path %q", got)
	}
	if got := wo.Layer("conv_3").KernelPath; got != "conv_3/conv_3/kernel:0" {
		t.Errorf("weights-only kernel path %q", got)
	}
}

// TestGraphMatchesOracle runs the gorgonia graph, fused for inference and
// unfused for training, against the plain-loop oracle on every layer.
func TestGraphMatchesOracle(t *testing.T) {
	gen, err := fixture.General(2)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		m    *model.Model
	}{
		{"tiny full-model file", load(t, tiny+"model_full.h5")},
		{"tiny weights-only file", load(t, tiny+"model_weights.h5")},
		{"general file", load(t, tiny+"general_full.h5")},
		{"general in memory", gen},
	}
	for _, tc := range cases {
		checkAgainstOracle(t, tc.name, tc.m, 5, 1e-4)
	}
}

// TestFlattenOrder shows that the tests can tell Keras's NHWC flatten from
// a channel-major one: the oracle in NCHW order disagrees with the graph.
func TestFlattenOrder(t *testing.T) {
	m := load(t, tiny+"model_full.h5")
	h, w, c := m.InputShape()
	const n = 8
	x := fixture.SeededImages(4, n, h, w, c)
	got := runGraph(t, m, x, n, false, m.Output.Name)[0]
	k := m.Classes
	differ, argmaxDiffer := 0, 0
	for i := 0; i < n; i++ {
		img := x[i*h*w*c : (i+1)*h*w*c]
		nhwc := oracle.Logits(m, img, oracle.Options{})
		nchw := oracle.Logits(m, img, oracle.Options{FlattenNCHW: true})
		if _, ok := relClose(got[i*k:(i+1)*k], nhwc, 1e-4); !ok {
			t.Fatalf("image %d: graph disagrees with the NHWC oracle", i)
		}
		if _, ok := relClose(got[i*k:(i+1)*k], nchw, 1e-2); !ok {
			differ++
		}
		if oracle.Argmax(nhwc) != oracle.Argmax(nchw) {
			argmaxDiffer++
		}
	}
	if differ != n || argmaxDiffer == 0 {
		t.Fatalf("NCHW flatten changed the logits of %d/%d images and the class of %d; want all and some", differ, n, argmaxDiffer)
	}
}

// TestWriteCopy prunes channels and checks the copy: exactly those channels
// zeroed, and every byte outside the kernel and bias data unchanged.
func TestWriteCopy(t *testing.T) {
	for _, src := range []string{tiny + "model_full.h5", tiny + "model_weights.h5"} {
		m := load(t, src)
		pruned := m.Clone()
		if err := pruned.PruneChannels("conv_3", []int{0, 3, 7}); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "pruned.h5")
		if err := pruned.WriteCopy(dst, false, "conv_3"); err != nil {
			t.Fatal(err)
		}
		if err := pruned.WriteCopy(dst, false, "conv_3"); err == nil {
			t.Errorf("second write without force succeeded")
		}
		if err := pruned.WriteCopy(src, true, "conv_3"); err == nil {
			t.Errorf("writing over the input succeeded")
		}
		back := load(t, dst)
		if got := back.Layer("conv_3").ZeroChannels(); !slices.Equal(got, []int{0, 3, 7}) {
			t.Errorf("%s: zero channels %v, want the pruned 0, 3, 7", src, got)
		}
		for i, l := range back.Layers {
			o := m.Layers[i]
			if l.Name == "conv_3" {
				continue
			}
			if !slices.Equal(l.Kernel, o.Kernel) || !slices.Equal(l.Bias, o.Bias) {
				t.Errorf("%s: layer %s changed", src, l.Name)
			}
		}
		// Every byte outside the conv_3 weights' data is the source's.
		a, _ := os.ReadFile(src)
		b, _ := os.ReadFile(dst)
		if len(a) != len(b) {
			t.Fatalf("sizes %d and %d", len(a), len(b))
		}
		l := m.Layer("conv_3")
		ranges := [][2]int64{}
		h5.Locked(func() error {
			f, err := h5.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range []string{l.KernelPath, l.BiasPath} {
				ds, err := f.OpenDataset(p)
				if err != nil {
					t.Fatal(err)
				}
				off, ok := h5.ContiguousOffset(ds)
				ds.Close()
				if !ok {
					t.Fatalf("%s not contiguous", p)
				}
				n := int64(len(l.Kernel))
				if p == l.BiasPath {
					n = int64(len(l.Bias))
				}
				ranges = append(ranges, [2]int64{off, off + 4*n})
			}
			return nil
		})
		changed := 0
		for i := range a {
			in := false
			for _, r := range ranges {
				in = in || (int64(i) >= r[0] && int64(i) < r[1])
			}
			if a[i] != b[i] {
				if !in {
					t.Fatalf("%s: byte %d outside the pruned weights changed", src, i)
				}
				changed++
			}
		}
		if changed == 0 {
			t.Fatalf("%s: nothing changed", src)
		}
		if bytes.Equal(a, b) {
			t.Fatal("copy equals source")
		}
	}
}

func TestCreateIsDeterministic(t *testing.T) {
	m := load(t, tiny+"model_full.h5")
	d := t.TempDir()
	for _, layout := range []model.Layout{model.FullModelFile, model.WeightsOnlyFile} {
		a, b := filepath.Join(d, "a.h5"), filepath.Join(d, "b.h5")
		if err := m.Create(a, layout, true); err != nil {
			t.Fatal(err)
		}
		if err := m.Create(b, layout, true); err != nil {
			t.Fatal(err)
		}
		x, _ := os.ReadFile(a)
		y, _ := os.ReadFile(b)
		if !bytes.Equal(x, y) {
			t.Fatalf("layout %d: two writes differ", layout)
		}
		back := load(t, a)
		for i, l := range back.Layers {
			if !slices.Equal(l.Kernel, m.Layers[i].Kernel) || !slices.Equal(l.Shape, m.Layers[i].Shape) {
				t.Fatalf("layout %d: layer %s does not round-trip", layout, l.Name)
			}
		}
	}
}

// BenchmarkTrunk runs the lab's conv_1..pool_3 as the graph the tools use
// (fused conv+ReLU+pool ops) on batches of 256 faces, with the real B when
// ../shared/real is present, else the demo's.
func BenchmarkTrunk(b *testing.B) {
	path := "../../../shared/real/bd_weights.h5"
	if _, err := os.Stat(path); err != nil {
		path = "../../testdata/lab/models/bd_net.h5"
	}
	m, err := model.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	const n = 256
	gr, err := m.Build(model.GraphOptions{Batch: n, Outputs: []string{"pool_3"}})
	if err != nil {
		b.Fatal(err)
	}
	r, err := gr.NewRunner("pool_3")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	copy(r.Input(), fixture.SeededImages(1, n, 55, 47, 3))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Run(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "images/s")
}
