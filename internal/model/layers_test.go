package model_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
	"badprune/internal/testsupport/oracle"
)

// layerFixtures are the fixture models with the layers beyond DeepID.
func layerFixtures(t *testing.T) []*model.Model {
	t.Helper()
	var out []*model.Model
	for _, f := range []func(uint64) (*model.Model, error){fixture.Layers, fixture.Merge, fixture.Activations} {
		m, err := f(11)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// checkAgainstOracle runs m's graph, for inference (fused, folded) and for
// training (unfused), on n random images and compares the named layers
// (every layer when none) with the plain-loop oracle, to rel relative to
// each output's largest magnitude.
func checkAgainstOracle(t *testing.T, what string, m *model.Model, n int, rel float64, names ...string) {
	t.Helper()
	h, w, c := m.InputShape()
	x := fixture.RandomImages(rand.New(rand.NewPCG(9, 9)), n, h, w, c)
	if len(names) == 0 {
		for _, l := range m.Layers[1:] {
			names = append(names, l.Name)
		}
	}
	for _, train := range []bool{false, true} {
		// The logits alone let the inference graph fuse and fold all it can.
		for _, want := range [][]string{{m.Output.Name}, names} {
			got := runGraph(t, m, x, n, train, want...)
			for i := 0; i < n; i++ {
				ref := oracle.Forward(m, x[i*h*w*c:(i+1)*h*w*c], oracle.Options{})
				for k, name := range want {
					sz := m.Layer(name).Size()
					if j, ok := relClose(got[k][i*sz:(i+1)*sz], ref[name], rel); !ok {
						t.Fatalf("%s (train=%v): image %d layer %s[%d] = %g, oracle %g",
							what, train, i, name, j, got[k][i*sz+j], ref[name][j])
					}
				}
			}
		}
	}
}

// TestNewLayersMatchOracle: every new layer, in the graph and in the
// oracle, agrees to 1e-4 relative, whether BatchNormalization is folded
// into the convolution before it (inference) or applied on its own
// (training).
func TestNewLayersMatchOracle(t *testing.T) {
	for _, m := range layerFixtures(t) {
		checkAgainstOracle(t, m.Path, m, 4, 1e-4)
	}
}

// sameLayers checks that got has want's layers: structure, options and
// every weight.
func sameLayers(t *testing.T, what string, got, want *model.Model) {
	t.Helper()
	if len(got.Layers) != len(want.Layers) {
		t.Fatalf("%s: %d layers, want %d", what, len(got.Layers), len(want.Layers))
	}
	for i, g := range got.Layers {
		w := want.Layers[i]
		type opts struct {
			name, class, act          string
			alpha, max, thr, eps      float64
			kh, kw, sh, sw, f, dm     int
			same, gamma, beta, keep   bool
			pad                       [4]int
			shape, target, kshape, ds []int
		}
		o := func(l *model.Layer) opts {
			return opts{l.Name, l.KerasClass(), l.Act, l.Alpha, l.MaxValue, l.Threshold, l.Eps, l.KH, l.KW, l.SH, l.SW, l.Filters, l.DepthMul,
				l.Same, l.HasGamma, l.HasBeta, l.KeepDims, l.Pad, l.Shape, l.Target, l.KernelShape, l.DepthwiseShape}
		}
		if fmt.Sprint(o(g)) != fmt.Sprint(o(w)) || !slices.Equal(g.Inputs, w.Inputs) {
			t.Fatalf("%s: layer %d is %+v, want %+v", what, i, o(g), o(w))
		}
		for _, p := range [][2][]float32{{g.Kernel, w.Kernel}, {g.Bias, w.Bias}, {g.Depthwise, w.Depthwise}, {g.Mean, w.Mean},
			{g.Var, w.Var}, {g.Scale, w.Scale}, {g.Offset, w.Offset}} {
			if !slices.Equal(p[0], p[1]) {
				t.Fatalf("%s: layer %s: weights differ", what, g.Name)
			}
		}
	}
}

// newLayerFiles writes m in every format badprune reads into dir: Keras 2
// HDF5 (full model; weights-only with its architecture in Keras 2's and
// Keras 3's JSON), a Keras 3 archive and Keras 3 HDF5.
func newLayerFiles(t *testing.T, dir string, m *model.Model) []struct{ name, path, arch, format string } {
	t.Helper()
	files := []struct{ name, path, arch, format string }{
		{"keras 2 hdf5", "k2.h5", "", model.FormatKeras2H5},
		{"keras 2 weights, keras 2 architecture", "k2w.h5", "k2.json", model.FormatKeras2H5},
		{"keras 2 weights, keras 3 architecture", "k2w.h5", "k3.json", model.FormatKeras2H5},
		{"keras 3 archive", "k3.keras", "", model.FormatKeras3Archive},
		{"keras 3 hdf5", "k3.h5", "", model.FormatKeras3H5},
	}
	for i := range files {
		files[i].path = filepath.Join(dir, files[i].path)
		if files[i].arch != "" {
			files[i].arch = filepath.Join(dir, files[i].arch)
		}
	}
	k2, err := m.KerasConfig()
	if err != nil {
		t.Fatal(err)
	}
	k3, err := fixture.Keras3Config(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		m.Create(files[0].path, model.FullModelFile, false),
		m.Create(files[1].path, model.WeightsOnlyFile, false),
		os.WriteFile(files[1].arch, k2, 0o644),
		os.WriteFile(files[2].arch, k3, 0o644),
		fixture.WriteKeras3Archive(m, files[3].path),
		fixture.WriteKeras3H5(m, files[4].path),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// TestNewLayerFormats reads the new layers from every format: the same
// layers, options and weights as the model written, and logits that match
// the oracle's.
func TestNewLayerFormats(t *testing.T) {
	for _, m := range layerFixtures(t) {
		for _, f := range newLayerFiles(t, t.TempDir(), m) {
			what := m.Path + ": " + f.name
			got, err := model.LoadWith(f.path, model.LoadOptions{Architecture: f.arch})
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			sameLayers(t, what, got, m)
			if got.Format() != f.format {
				t.Errorf("%s: format %s, want %s", what, got.Format(), f.format)
			}
			checkAgainstOracle(t, what, got, 2, 1e-4, got.Output.Name)
		}
	}
}

// TestNewLayerCopies prunes channels of convolutions followed by
// BatchNormalization (with gamma, and without: its moving mean is then
// what is zeroed) in each format: the copy holds the pruned weights of
// every layer pruning changes, and nothing else changed.
func TestNewLayerCopies(t *testing.T) {
	layers, err := fixture.Layers(11)
	if err != nil {
		t.Fatal(err)
	}
	merge, err := fixture.Merge(11)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m      *model.Model
		layer  string
		chans  []int
		pruned []string
	}{
		{layers, "conv", []int{0, 4}, []string{"conv", "conv_bn"}},
		{layers, "sep", []int{1, 2, 7}, []string{"sep", "sep_bn"}},
		{merge, "mix", []int{3}, []string{"mix", "mix_bn"}},
		{merge, "branch_3x3", []int{0, 1}, []string{"branch_3x3"}},
	} {
		if got := tc.m.Pruned(tc.layer); !slices.Equal(got, tc.pruned) {
			t.Errorf("%s: Pruned = %v, want %v", tc.layer, got, tc.pruned)
		}
		for _, f := range newLayerFiles(t, t.TempDir(), tc.m) {
			if f.arch == "" {
				checkCopy(t, f.path, tc.layer, tc.chans)
			}
		}
	}
}

// TestPrunedBatchNormOutputsZero: after PruneChannels, a pruned channel is
// zero after every BatchNormalization that carries it, gamma or no gamma,
// for any input; the other channels are unchanged.
func TestPrunedBatchNormOutputsZero(t *testing.T) {
	m, err := fixture.Layers(11)
	if err != nil {
		t.Fatal(err)
	}
	h, w, c := m.InputShape()
	x := fixture.RandomImages(rand.New(rand.NewPCG(2, 2)), 1, h, w, c)
	for _, tc := range []struct {
		layer, after string
		chans        []int
	}{{"conv", "conv_bn", []int{0, 5}}, {"sep", "sep_bn", []int{2, 3}}} {
		p := m.Clone()
		if err := p.PruneChannels(tc.layer, tc.chans); err != nil {
			t.Fatal(err)
		}
		want := oracle.Forward(m, x, oracle.Options{})[tc.after]
		got := oracle.Forward(p, x, oracle.Options{})[tc.after]
		nc := m.Layer(tc.after).Channels()
		for i := range got {
			pruned := slices.Contains(tc.chans, i%nc)
			if pruned && got[i] != 0 || !pruned && got[i] != want[i] {
				t.Fatalf("%s: %s[%d] = %g after pruning %v (unpruned %g)", tc.layer, tc.after, i, got[i], tc.chans, want[i])
			}
		}
	}
}

// TestNewLayerRefusals: what badprune cannot compute is one error naming
// the file, the layer and the problem.
func TestNewLayerRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		make    func(uint64) (*model.Model, error)
		old, nu string // a change to the Keras 2 architecture JSON
		want    string
	}{
		{"resizing to another size", fixture.Activations, `"height":9`, `"height":8`,
			`layer "resize" (Resizing): changes the size to 8x9 from [9 9 2]; only a Resizing to the size the input already has (the identity) is supported`},
		{"normalization over rows", fixture.Layers, `"axis":-1`, `"axis":1`, `layer "conv_bn" (BatchNormalization): axis 1: only the last axis (-1, the channels) is supported`},
		{"concatenation of rows", fixture.Merge, `"axis":-1`, `"axis":2`, `layer "join" (Concatenate): axis 2: only the last axis`},
		{"batch renormalization", fixture.Layers, `"center":true`, `"center":true,"renorm":true`, `layer "conv_bn": batch renormalization (renorm) is not supported`},
		{"unsupported class", fixture.Activations, `"class_name":"ELU"`, `"class_name":"PReLU"`, `layer "elu": unsupported layer type "PReLU" (supported: InputLayer, Conv2D, SeparableConv2D`},
		{"unsupported activation", fixture.Activations, `"activation":"softsign"`, `"activation":"hard_sigmoid"`, `layer "d_softsign": activation "hard_sigmoid" is not supported here`},
		{"softmax inside", fixture.Activations, `"activation":"softsign"`, `"activation":"softmax"`, `layer "d_softsign": softmax is supported only in the last layer`},
		{"channels first", fixture.Layers, `"data_format":"channels_last"`, `"data_format":"channels_first"`, `data_format "channels_first" is not supported (channels_last only)`},
	} {
		m, err := tc.make(3)
		if err != nil {
			t.Fatal(err)
		}
		weights, arch := filepath.Join(dir, tc.name+".h5"), filepath.Join(dir, tc.name+".json")
		if err := m.Create(weights, model.WeightsOnlyFile, false); err != nil {
			t.Fatal(err)
		}
		cfg, err := m.KerasConfig()
		if err != nil {
			t.Fatal(err)
		}
		changed := strings.Replace(string(cfg), tc.old, tc.nu, 1)
		if changed == string(cfg) {
			t.Fatalf("%s: no %s in the architecture", tc.name, tc.old)
		}
		os.WriteFile(arch, []byte(changed), 0o644)
		_, err = model.LoadWith(weights, model.LoadOptions{Architecture: arch})
		if err == nil || !strings.HasPrefix(err.Error(), weights+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to name the file and say %q", tc.name, err, tc.want)
		}
	}

	// The architecture file is named when it is missing or not JSON.
	m, _ := fixture.Layers(3)
	weights := filepath.Join(dir, "w.h5")
	if err := m.Create(weights, model.WeightsOnlyFile, false); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{not json"), 0o644)
	for arch, want := range map[string]string{
		filepath.Join(dir, "missing.json"): "architecture " + filepath.Join(dir, "missing.json") + ": no such file",
		bad:                                "architecture " + bad + ": not valid JSON",
	} {
		if _, err := model.LoadWith(weights, model.LoadOptions{Architecture: arch}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("architecture %s: error %v, want %q", arch, err, want)
		}
	}
	// Without an architecture, a weights-only file is the lab's DeepID.
	if _, err := model.Load(weights); err == nil || !strings.Contains(err.Error(), `layer "conv_1": no weights in the file`) {
		t.Errorf("weights-only file without its architecture: error %v", err)
	}

	// A Keras 3 weights file (model.weights.h5 of an archive, or
	// save_weights) has no architecture of its own.
	archive := filepath.Join(dir, "m.keras")
	if err := fixture.WriteKeras3Archive(m, archive); err != nil {
		t.Fatal(err)
	}
	_, data, _ := zipEntries(t, archive)
	k3w := filepath.Join(dir, "m.weights.h5")
	os.WriteFile(k3w, data["model.weights.h5"], 0o644)
	if _, err := model.Load(k3w); err == nil || !strings.Contains(err.Error(), "a Keras 3 weights file (.weights.h5) is not supported") {
		t.Errorf("Keras 3 weights file: error %v", err)
	}

	// A single output unit: a binary classifier.
	b := fixture.NewBuilder(1, 6, 6, 1)
	b.Add(&model.Layer{Name: "flat", Kind: model.Flatten}, false)
	b.Add(&model.Layer{Name: "out", Kind: model.Dense, Filters: 1, Act: "sigmoid"}, false)
	if _, err := b.Model("binary"); err == nil || !strings.Contains(err.Error(), `last layer "out" outputs one score: binary classifiers with a single output are not supported`) {
		t.Errorf("binary classifier: error %v", err)
	}
}
