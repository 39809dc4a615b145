package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"badprune/internal/h5"
	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
)

// A battery of malformed files and flags through every command that reads
// them: each ends in exit 1 with one line that names the file or flag and
// the problem, writes no output, and leaves the inputs' bytes as they were.

func raw(name string, typ h5.Stored, dims []int, vals []float32) fixture.Dataset {
	return fixture.Dataset{Name: name, Type: typ, Dims: dims, Vals: vals}
}

func writeSet(t *testing.T, path string, sets ...fixture.Dataset) string {
	t.Helper()
	if err := fixture.WriteDatasets(path, sets...); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeConfigModel writes a full-model file whose model_config is cfg.
func writeConfigModel(t *testing.T, path, cfg string) string {
	t.Helper()
	err := h5.Locked(func() error {
		f, err := h5.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := h5.WriteStringAttr(f, "model_config", cfg); err != nil {
			return err
		}
		g, err := f.Group("model_weights")
		if err != nil {
			return err
		}
		return g.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	img := func(n int) []float32 { return make([]float32, n*3*55*47) }
	lbl := func(v ...float32) []float32 { return v }
	good := tiny + "model_full.h5"
	goodSet := tiny + "clean_u8_nchw.h5"

	notH5 := filepath.Join(dir, "notes.h5")
	os.WriteFile(notH5, []byte("these are not weights\n"), 0o644)
	full, _ := os.ReadFile(good)
	trunc := filepath.Join(dir, "trunc.h5")
	os.WriteFile(trunc, full[:len(full)/2], 0o644)
	unreadable := filepath.Join(dir, "locked.h5")
	os.WriteFile(unreadable, full, 0o000)

	// A weights-only file whose conv_3 is missing (named conv_x).
	m, _ := model.Load(good)
	for _, l := range m.Layers {
		if l.Name == "conv_3" {
			l.Name = "conv_x"
		}
	}
	noLayer := filepath.Join(dir, "nolayer.h5")
	if err := m.Create(noLayer, model.WeightsOnlyFile, false); err != nil {
		t.Fatal(err)
	}
	// fc_1's kernel one row short of pool_3's 160 values.
	m2, _ := model.Load(good)
	fc := m2.Layer("fc_1")
	fc.KernelShape = []int{fc.KernelShape[0] - 1, fc.KernelShape[1]}
	fc.Kernel = fc.Kernel[:fc.KernelShape[0]*fc.KernelShape[1]]
	badShape := filepath.Join(dir, "shape.h5")
	if err := m2.Create(badShape, model.WeightsOnlyFile, false); err != nil {
		t.Fatal(err)
	}
	unsupported := writeConfigModel(t, filepath.Join(dir, "bn.h5"),
		`{"class_name":"Model","config":{"layers":[{"name":"in","class_name":"InputLayer","config":{"batch_input_shape":[null,55,47,3]},"inbound_nodes":[]},`+
			`{"name":"bn","class_name":"Conv3D","config":{},"inbound_nodes":[[["in",0,0,{}]]]}]}}`)
	badJSON := writeConfigModel(t, filepath.Join(dir, "json.h5"), `{"class_name": "Model", "config": {`)

	nan := img(2)
	nan[3*55*47+7] = float32(math.NaN())
	sets := map[string]string{
		"count":  writeSet(t, filepath.Join(dir, "count.h5"), raw("data", h5.StoreUint8, []int{3, 3, 55, 47}, img(3)), raw("label", h5.StoreFloat32, []int{2}, lbl(0, 0))),
		"size":   writeSet(t, filepath.Join(dir, "size.h5"), raw("data", h5.StoreUint8, []int{1, 3, 50, 47}, make([]float32, 3*50*47)), raw("label", h5.StoreFloat32, []int{1}, lbl(0))),
		"chan":   writeSet(t, filepath.Join(dir, "chan.h5"), raw("data", h5.StoreUint8, []int{1, 1, 55, 47}, make([]float32, 55*47)), raw("label", h5.StoreFloat32, []int{1}, lbl(0))),
		"range":  writeSet(t, filepath.Join(dir, "range.h5"), raw("data", h5.StoreUint8, []int{2, 3, 55, 47}, img(2)), raw("label", h5.StoreFloat64, []int{2}, lbl(1, 9))),
		"float":  writeSet(t, filepath.Join(dir, "float.h5"), raw("data", h5.StoreUint8, []int{2, 3, 55, 47}, img(2)), raw("label", h5.StoreFloat64, []int{2}, lbl(1, 0.5))),
		"nan":    writeSet(t, filepath.Join(dir, "nan.h5"), raw("data", h5.StoreFloat32, []int{2, 3, 55, 47}, nan), raw("label", h5.StoreFloat32, []int{2}, lbl(0, 0))),
		"empty":  writeSet(t, filepath.Join(dir, "empty.h5"), raw("data", h5.StoreUint8, []int{0, 3, 55, 47}, nil), raw("label", h5.StoreFloat32, []int{0}, nil)),
		"dtype":  writeSet(t, filepath.Join(dir, "dtype.h5"), raw("data", h5.StoreInt16, []int{1, 3, 55, 47}, img(1)), raw("label", h5.StoreFloat32, []int{1}, lbl(0))),
		"nolbl":  writeSet(t, filepath.Join(dir, "nolbl.h5"), raw("data", h5.StoreUint8, []int{1, 3, 55, 47}, img(1))),
		"nodata": writeSet(t, filepath.Join(dir, "nodata.h5"), raw("label", h5.StoreFloat32, []int{1}, lbl(0))),
	}
	badImg := filepath.Join(dir, "face.png")
	os.WriteFile(badImg, []byte("\x89PNG\r\n\x1a\nnot really"), 0o644)

	type tc struct {
		args []string
		want []string // all must appear in the line
	}
	out := filepath.Join(dir, "out")
	repair := func(model, valid string, extra ...string) []string {
		return append([]string{"repair", "--model", model, "--valid", valid, "--out", out, "-q"}, extra...)
	}
	eval := func(model, test string, extra ...string) []string {
		return append([]string{"eval", "--model", model, "--test", test, "-q"}, extra...)
	}
	cases := []tc{
		{eval(filepath.Join(dir, "missing.h5"), goodSet), []string{"missing.h5", "no such file"}},
		{eval(notH5, goodSet), []string{notH5, "not a model file badprune reads (Keras HDF5 or .keras archive, onnx)"}},
		{eval(trunc, goodSet), []string{trunc}},
		{eval(dir, goodSet), []string{dir, "directory"}},
		{eval(noLayer, goodSet), []string{noLayer, `layer "conv_3"`, "missing"}},
		{eval(badShape, goodSet), []string{badShape, "fc_1", "kernel shape"}},
		{eval(unsupported, goodSet), []string{unsupported, "Conv3D", "unsupported"}},
		{eval(badJSON, goodSet), []string{badJSON, "model_config", "JSON"}},
		{eval(good, sets["count"]), []string{sets["count"], "2 labels", "3 images"}},
		{eval(good, sets["size"]), []string{sets["size"], "55x47"}},
		{eval(good, sets["chan"]), []string{sets["chan"], "3 channels"}},
		{eval(good, sets["range"]), []string{sets["range"], "sample 1", "outside the model's classes"}},
		{eval(good, sets["float"]), []string{sets["float"], "not an integer"}},
		{eval(good, sets["nan"]), []string{sets["nan"], "sample 1", "non-finite"}},
		{eval(good, sets["empty"]), []string{sets["empty"], "empty"}},
		{eval(good, sets["dtype"]), []string{sets["dtype"], "int16"}},
		{eval(good, sets["nolbl"]), []string{sets["nolbl"], `"label"`, "--label-key"}},
		{eval(good, sets["nodata"]), []string{sets["nodata"], `"data"`, "--data-key"}},
		{eval(good, goodSet, "--bd-test", sets["nan"]), []string{sets["nan"], "non-finite"}},
		{eval(good, goodSet, "--goodnet", "--repaired", filepath.Join(dir, "nothing_*.h5"), "--out", out), []string{"--repaired", "no file matches"}},
		{eval(good, goodSet, "--goodnet", "--repaired", dir+"/sub", "--out", out), []string{"sub", "no such file"}},
		{eval(good, goodSet, "--scale", "-1"), []string{"--scale"}},
		{eval(good, goodSet, "--batch", "0"), []string{"--batch"}},
		{eval(good, goodSet, "--nonsense"), []string{"unknown flag", "--nonsense"}},
		{repair(good, sets["nan"]), []string{sets["nan"], "non-finite"}},
		{repair(trunc, goodSet), []string{trunc}},
		{repair(good, goodSet, "--layer", "pool_3"), []string{"--layer pool_3", "Conv2D"}},
		{repair(good, goodSet, "--rank-layer", "nope"), []string{"--rank-layer nope", "no such layer"}},
		{repair(good, goodSet, "--threshold", "-2"), []string{"--threshold -2"}},
		{repair(good, goodSet, "--threshold", "x"), []string{"--threshold"}},
		{repair(good, goodSet, "--bd-valid", sets["range"]), []string{sets["range"], "outside the model's classes"}},
		{[]string{"predict", "--model", good, badImg}, []string{badImg, "not a PNG or JPEG"}},
		{[]string{"predict", "--model", good, "../../testdata/images/face.png", filepath.Join(dir, "none.png")}, []string{"none.png", "no such file"}},
		{[]string{"predict", "--model", good}, []string{"requires at least 1 arg"}},
		{[]string{"finetune", "--model", trunc, "--valid", goodSet, "--out", filepath.Join(out, "f.h5")}, []string{trunc}},
		{[]string{"plot", "--log", sets["nan"], "--out", out}, []string{sets["nan"], "not a badprune JSON document"}},
	}
	if os.Getuid() != 0 { // root reads anything
		cases = append(cases, tc{eval(unreadable, goodSet), []string{unreadable, "permission denied"}})
	}
	before, _ := os.ReadFile(good)
	for _, c := range cases {
		stdout, stderr, code := badprune(t, c.args...)
		line := strings.TrimSpace(stderr)
		if code != exitError || strings.Contains(line, "\n") || !strings.HasPrefix(line, "badprune: ") || stdout != "" && c.args[0] != "eval" {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, stderr)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%v: %q does not say %q", c.args, line, w)
			}
		}
		if entries, _ := os.ReadDir(out); len(entries) > 0 {
			t.Errorf("%v: left %d files in the output folder", c.args, len(entries))
			os.RemoveAll(out)
		}
	}
	if after, _ := os.ReadFile(good); string(after) != string(before) {
		t.Fatal("an input model changed")
	}
}
