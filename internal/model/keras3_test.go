package model_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"badprune/internal/h5"
	"badprune/internal/model"
	"badprune/internal/testsupport/fixture"
	"badprune/internal/testsupport/must"
	"badprune/internal/testsupport/oracle"
)

// realKeras3 is a real Keras 3.15 archive (Sequential CNN for MNIST) in
// the shared folder beside the repository; tests using it skip without it.
const realKeras3 = "../../../shared/real/keras3/mnist_cnn.keras"

func needReal(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(realKeras3); err != nil {
		t.Skipf("%s absent", realKeras3)
	}
}

// ---- Writing fixtures: HDF5 trees and zips, as Keras lays them out.

type h5ds struct {
	name  string
	shape []int
	vals  []float32
}

// h5obj is a group (nil: the root) with string attributes, string-list
// attributes and datasets.
type h5obj struct {
	group []string
	attrs map[string]string
	lists map[string][]string
	data  []h5ds
}

func writeH5(t *testing.T, path string, objs []h5obj) {
	t.Helper()
	err := h5.Locked(func() error {
		f, err := h5.Create(path)
		if err != nil {
			return err
		}
		nodes := map[string]h5.Node{"": f}
		var order []h5.Node
		defer func() {
			for i := len(order) - 1; i >= 0; i-- {
				order[i].Close()
			}
			f.Close()
		}()
		for _, o := range objs {
			g, key := f, ""
			for _, name := range o.group {
				key += "\x00" + name
				n, ok := nodes[key]
				if !ok {
					if n, err = g.Group(name); err != nil {
						return err
					}
					nodes[key] = n
					order = append(order, n)
				}
				g = n
			}
			for _, k := range slices.Sorted(mapKeys(o.attrs)) {
				if err := h5.WriteStringAttr(g, k, o.attrs[k]); err != nil {
					return err
				}
			}
			for _, k := range slices.Sorted(mapKeys(o.lists)) {
				if err := h5.WriteStringsAttr(g, k, o.lists[k]); err != nil {
					return err
				}
			}
			for _, d := range o.data {
				if err := g.WriteDataset(d.name, h5.StoreFloat32, d.shape, d.vals); err != nil {
					return fmt.Errorf("%s: %w", d.name, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

type entry struct {
	name string
	data []byte
}

// writeZip writes entries stored uncompressed with their sizes and
// checksums in the local headers, as Keras writes a .keras file.
func writeZip(t *testing.T, path string, entries ...entry) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		fh := &zip.FileHeader{Name: e.name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(e.data),
			CompressedSize64: uint64(len(e.data)), UncompressedSize64: uint64(len(e.data))}
		fh.SetModTime(time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC))
		w, err := zw.CreateRaw(fh)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// zipEntries reads every entry of a zip: name, content and raw (stored or
// compressed) bytes.
func zipEntries(t *testing.T, path string) (names []string, data, raw map[string][]byte) {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	data, raw = map[string][]byte{}, map[string][]byte{}
	for _, f := range zr.File {
		names = append(names, f.Name)
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data[f.Name], err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %s: %v", path, f.Name, err)
		}
		r, err := f.OpenRaw()
		if err != nil {
			t.Fatal(err)
		}
		raw[f.Name], _ = io.ReadAll(r)
	}
	return names, data, raw
}

// snake is how Keras names a layer's weights group after its class.
var snake = map[model.Kind]string{
	model.Conv2D: "conv2d", model.Dense: "dense", model.MaxPool: "max_pooling2d", model.Flatten: "flatten",
	model.Dropout: "dropout", model.Add: "add", model.Activation: "activation",
}

// archiveStyle is how a .keras archive lays out its weights.
type archiveStyle struct {
	container string // "layers" (Keras 3) or "_layer_checkpoint_dependencies" (tf.keras)
	backslash bool   // tf.keras on Windows: one group "<container>\<entry>"
	names     bool   // Keras 3.x: the layer's name as an attribute of its vars group
}

// archiveWeights lays out m's weights as Keras does in model.weights.h5:
// a group per layer named after its class and counted per class, vars/0
// the kernel and vars/1 the bias; plus the model's own vars and an
// optimizer's.
func archiveWeights(m *model.Model, st archiveStyle) []h5obj {
	objs := []h5obj{{group: []string{"vars"}, attrs: map[string]string{"name": "functional"}}}
	count := map[string]int{}
	for _, l := range m.Layers {
		if l.Kind == model.Input {
			continue
		}
		base := snake[l.Kind]
		e := base
		if k := count[base]; k > 0 {
			e = fmt.Sprintf("%s_%d", base, k)
		}
		count[base]++
		o := h5obj{group: []string{st.container, e, "vars"}}
		if st.backslash {
			o.group = []string{st.container + `\` + e, "vars"}
		}
		if st.names {
			o.attrs = map[string]string{"name": l.Name}
		}
		if l.Kernel != nil {
			o.data = []h5ds{{"0", l.KernelShape, l.Kernel}, {"1", []int{len(l.Bias)}, l.Bias}}
		}
		objs = append(objs, o)
	}
	return append(objs, h5obj{group: []string{"optimizer", "vars"}, attrs: map[string]string{"name": "adam"},
		data: []h5ds{{"0", []int{1}, []float32{42}}}})
}

// keras3Config is the config.json Keras 3 writes for m as a Functional
// model: dtype objects, batch_shape, inbound nodes of keras tensors, flat
// input_layers and output_layers.
func keras3Config(t *testing.T, m *model.Model) []byte {
	t.Helper()
	type obj = map[string]any
	dtype := obj{"module": "keras", "class_name": "DTypePolicy", "config": obj{"name": "float32"}, "registered_name": nil}
	tensor := func(name string) obj {
		return obj{"class_name": "__keras_tensor__", "config": obj{"shape": []any{nil}, "dtype": "float32", "keras_history": []any{name, 0, 0}}}
	}
	var layers []any
	for _, l := range m.Layers {
		c := obj{"name": l.Name, "trainable": true, "dtype": dtype}
		pad := "valid"
		if l.Same {
			pad = "same"
		}
		switch l.Kind {
		case model.Input:
			c = obj{"batch_shape": []any{nil, l.Shape[0], l.Shape[1], l.Shape[2]}, "dtype": "float32", "sparse": false, "name": l.Name}
		case model.Conv2D:
			c["filters"], c["kernel_size"], c["strides"], c["padding"] = l.KernelShape[3], []int{l.KH, l.KW}, []int{l.SH, l.SW}, pad
			c["data_format"], c["dilation_rate"], c["groups"], c["activation"], c["use_bias"] = "channels_last", []int{1, 1}, 1, l.Act, l.Bias != nil
		case model.MaxPool:
			c["pool_size"], c["strides"], c["padding"], c["data_format"] = []int{l.KH, l.KW}, []int{l.SH, l.SW}, pad, "channels_last"
		case model.Dense:
			c["units"], c["activation"], c["use_bias"] = l.KernelShape[1], l.Act, l.Bias != nil
		case model.Activation:
			c["activation"] = l.Act
		case model.Dropout:
			c["rate"], c["seed"], c["noise_shape"] = 0.5, nil, nil
		case model.Flatten:
			c["data_format"] = "channels_last"
		}
		nodes := []any{}
		switch len(l.Inputs) {
		case 0:
		case 1:
			nodes = []any{obj{"args": []any{tensor(l.Inputs[0])}, "kwargs": obj{}}}
		default:
			var ts []any
			for _, in := range l.Inputs {
				ts = append(ts, tensor(in))
			}
			nodes = []any{obj{"args": []any{ts}, "kwargs": obj{}}}
		}
		layers = append(layers, obj{"module": "keras.layers", "class_name": string(l.Kind), "config": c,
			"registered_name": nil, "name": l.Name, "inbound_nodes": nodes})
	}
	b, err := json.Marshal(obj{"module": "keras.src.models.functional", "class_name": "Functional",
		"config": obj{"name": "functional", "trainable": true, "layers": layers,
			"input_layers": []any{m.Input.Name, 0, 0}, "output_layers": []any{m.Output.Name, 0, 0}},
		"registered_name": "Functional", "build_config": obj{"input_shape": nil}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const metadata = `{"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"}`

// writeArchive writes m as a .keras archive with the given config.json.
func writeArchive(t *testing.T, path string, m *model.Model, config []byte, st archiveStyle) {
	t.Helper()
	wpath := filepath.Join(t.TempDir(), "model.weights.h5")
	writeH5(t, wpath, archiveWeights(m, st))
	w, err := os.ReadFile(wpath)
	if err != nil {
		t.Fatal(err)
	}
	writeZip(t, path, entry{"metadata.json", []byte(metadata)}, entry{"config.json", config}, entry{"model.weights.h5", w})
}

// writeKeras3H5 writes m as Keras 3's model.save("x.h5") does: a Keras 3
// model_config, weights at model_weights/<layer>/<model>/<layer>/kernel.
func writeKeras3H5(t *testing.T, path string, m *model.Model) {
	t.Helper()
	names := m.LayerNames()
	objs := []h5obj{
		{attrs: map[string]string{"model_config": string(keras3Config(t, m)), "keras_version": "3.15.1", "backend": "tensorflow"}},
		{group: []string{"model_weights"}, attrs: map[string]string{"keras_version": "3.15.1", "backend": "tensorflow"},
			lists: map[string][]string{"layer_names": names}},
	}
	for _, l := range m.Layers {
		var wn []string
		if l.Kernel != nil {
			wn = []string{"functional/" + l.Name + "/kernel", "functional/" + l.Name + "/bias"}
		}
		objs = append(objs, h5obj{group: []string{"model_weights", l.Name}, lists: map[string][]string{"weight_names": wn}})
		if l.Kernel != nil {
			objs = append(objs, h5obj{group: []string{"model_weights", l.Name, "functional", l.Name},
				data: []h5ds{{"kernel", l.KernelShape, l.Kernel}, {"bias", []int{len(l.Bias)}, l.Bias}}})
		}
	}
	writeH5(t, path, objs)
}

// keras2Config is the Keras 2 model_config of a tiny full-model file, the
// form tf.keras also writes in config.json.
func keras2Config(t *testing.T) []byte {
	t.Helper()
	cfg, err := model.ConfigAttr(tiny + "model_full.h5")
	if err != nil {
		t.Fatal(err)
	}
	return []byte(cfg)
}

// sameLayerCount fails the test unless got has as many layers as want.
func sameLayerCount(t *testing.T, what string, got, want *model.Model) {
	t.Helper()
	if len(got.Layers) != len(want.Layers) {
		t.Fatalf("%s: %d layers, want %d", what, len(got.Layers), len(want.Layers))
	}
}

// sameWeights reports the first layer whose weights differ.
func sameWeights(t *testing.T, what string, got, want *model.Model) {
	t.Helper()
	sameLayerCount(t, what, got, want)
	for i, l := range got.Layers {
		w := want.Layers[i]
		if l.Name != w.Name || l.Kind != w.Kind || !slices.Equal(l.Inputs, w.Inputs) || !slices.Equal(l.Shape, w.Shape) {
			t.Fatalf("%s: layer %d is %s %s %v, want %s %s %v", what, i, l.Name, l.Kind, l.Shape, w.Name, w.Kind, w.Shape)
		}
		if !slices.Equal(l.Kernel, w.Kernel) || !slices.Equal(l.KernelShape, w.KernelShape) || !slices.Equal(l.Bias, w.Bias) {
			t.Fatalf("%s: layer %s: weights differ", what, l.Name)
		}
	}
}

// dataRanges are the byte ranges of a layer's kernel and bias data in the
// HDF5 file at path.
func dataRanges(t *testing.T, path string, l *model.Layer) [][2]int64 {
	t.Helper()
	var out [][2]int64
	err := h5.Locked(func() error {
		f, err := h5.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, p := range []string{l.KernelPath, l.BiasPath} {
			if p == "" {
				continue // a layer without bias, or BatchNormalization without beta
			}
			ds, err := f.OpenDataset(p)
			if err != nil {
				return fmt.Errorf("%s: %v", p, err)
			}
			off, ok := h5.ContiguousOffset(ds)
			ds.Close()
			if !ok {
				return fmt.Errorf("%s not contiguous", p)
			}
			n := int64(len(l.Kernel))
			if p == l.BiasPath {
				n = int64(len(l.Bias))
			}
			out = append(out, [2]int64{off, off + 4*n})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// onlyInside checks that a and b have one length and differ, and only in
// the ranges.
func onlyInside(t *testing.T, what string, a, b []byte, ranges [][2]int64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: sizes %d and %d", what, len(a), len(b))
	}
	changed := 0
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		in := false
		for _, r := range ranges {
			in = in || (int64(i) >= r[0] && int64(i) < r[1])
		}
		if !in {
			t.Fatalf("%s: byte %d outside the pruned weights changed", what, i)
		}
		changed++
	}
	if changed == 0 {
		t.Fatalf("%s: nothing changed", what)
	}
}

// checkCopy prunes channels of layer, writes the copy, and checks it: in
// the same format, the pruned weights and no other changed; for an archive
// the same entries in the same order, every one byte for byte but the
// weights file, and in that only the data of the layers pruning changes
// (the layer, and BatchNormalization after it).
func checkCopy(t *testing.T, src, layer string, chans []int) {
	t.Helper()
	m := load(t, src)
	pruned := m.Clone()
	if err := pruned.PruneChannels(layer, chans); err != nil {
		t.Fatal(err)
	}
	changed := pruned.Pruned(layer)
	dst := filepath.Join(t.TempDir(), "repaired_1"+m.Ext())
	if err := pruned.WriteCopy(dst, false, changed...); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	if err := pruned.WriteCopy(dst, false, changed...); err == nil {
		t.Errorf("%s: second write without force succeeded", src)
	}
	if err := pruned.WriteCopy(src, true, changed...); err == nil {
		t.Errorf("%s: writing over the input succeeded", src)
	}
	back := load(t, dst)
	sameWeights(t, src+" copy", back, pruned)
	if got := back.Layer(layer).ZeroChannels(); !slices.Equal(got, chans) {
		t.Errorf("%s: zero channels %v, want the pruned %v", src, got, chans)
	}
	if back.Format() != m.Format() || back.Ext() != m.Ext() {
		t.Errorf("%s: copy is %s (%s), source %s (%s)", src, back.Format(), back.Ext(), m.Format(), m.Ext())
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	ranges := func(path string) [][2]int64 {
		var out [][2]int64
		for _, name := range changed {
			out = append(out, dataRanges(t, path, m.Layer(name))...)
		}
		return out
	}
	if m.Ext() == ".h5" {
		onlyInside(t, src, a, b, ranges(src))
		return
	}
	names, data, raw := zipEntries(t, src)
	names2, data2, raw2 := zipEntries(t, dst)
	if !slices.Equal(names, names2) {
		t.Fatalf("%s: entries %v, copy has %v", src, names, names2)
	}
	for _, n := range names {
		if n == "model.weights.h5" {
			continue
		}
		if !bytes.Equal(raw[n], raw2[n]) || !bytes.Equal(data[n], data2[n]) {
			t.Errorf("%s: entry %s changed", src, n)
		}
	}
	orig := filepath.Join(t.TempDir(), "orig.weights.h5")
	if err := os.WriteFile(orig, data["model.weights.h5"], 0o644); err != nil {
		t.Fatal(err)
	}
	onlyInside(t, src+" model.weights.h5", data["model.weights.h5"], data2["model.weights.h5"], ranges(orig))
}

// ---- The real archive.

// TestRealKeras3Archive loads mnist_cnn.keras: the layers and weight shapes
// its config.json gives, and logits that match the oracle and a forward
// pass computed separately in NumPy from the archive's weights.
func TestRealKeras3Archive(t *testing.T) {
	needReal(t)
	m := load(t, realKeras3)
	if m.Format() != model.FormatKeras3Archive || m.Ext() != ".keras" || !m.FullModel {
		t.Errorf("format %s, ext %s, full model %v", m.Format(), m.Ext(), m.FullModel)
	}
	want := []struct {
		name   string
		kind   model.Kind
		act    string
		kernel []int
		shape  []int
	}{
		{"input_layer", model.Input, "", nil, []int{28, 28, 1}},
		{"conv2d", model.Conv2D, "relu", []int{3, 3, 1, 32}, []int{26, 26, 32}},
		{"max_pooling2d", model.MaxPool, "", nil, []int{13, 13, 32}},
		{"conv2d_1", model.Conv2D, "relu", []int{3, 3, 32, 64}, []int{11, 11, 64}},
		{"max_pooling2d_1", model.MaxPool, "", nil, []int{5, 5, 64}},
		{"flatten", model.Flatten, "", nil, []int{1600}},
		{"dropout", model.Dropout, "", nil, []int{1600}},
		{"dense", model.Dense, "relu", []int{1600, 128}, []int{128}},
		{"dense_1", model.Dense, "softmax", []int{128, 10}, []int{10}},
	}
	if len(m.Layers) != len(want) {
		t.Fatalf("%d layers, want %d", len(m.Layers), len(want))
	}
	for i, w := range want {
		l := m.Layers[i]
		if l.Name != w.name || l.Kind != w.kind || l.Act != w.act || !slices.Equal(l.KernelShape, w.kernel) || !slices.Equal(l.Shape, w.shape) {
			t.Errorf("layer %d: %s %s %s kernel %v out %v, want %s %s %s kernel %v out %v",
				i, l.Name, l.Kind, l.Act, l.KernelShape, l.Shape, w.name, w.kind, w.act, w.kernel, w.shape)
		}
		if l.Kernel != nil && len(l.Bias) != w.kernel[len(w.kernel)-1] {
			t.Errorf("layer %s: %d biases", l.Name, len(l.Bias))
		}
	}
	if m.Classes != 10 {
		t.Errorf("%d classes", m.Classes)
	}

	// Two fixed images, then random ones; inputs in 0..1 as in training.
	const n = 6
	x := make([]float32, n*28*28)
	for y := 0; y < 28; y++ {
		for xx := 0; xx < 28; xx++ {
			x[y*28+xx] = float32((y*28+xx)*37%256) / 255
			x[28*28+y*28+xx] = float32((y*7+xx*13)%29) / 28
		}
	}
	for i, v := range fixture.SeededImages(5, n-2, 28, 28, 1) {
		x[2*28*28+i] = v / 255
	}
	// Logits of the two fixed images from a NumPy forward pass (float64)
	// over the weights h5py read from the archive's model.weights.h5.
	numpy := [][]float64{
		{-0.0447025036, 3.6686633555, -5.9567682256, -9.8224289714, 5.3263966371, -6.803000983, 2.7170952552, -0.3043565911, 1.1244429206, -3.2038787719},
		{0.1219837918, -0.3119100721, 0.055941949, -0.3143287725, 0.2159458444, -0.2381473948, -0.1898961, -0.1427786691, 0.5957566662, -0.2286592952},
	}
	const rel = 1e-4 // float32 graph against float64 references, relative to the largest logit
	got := runGraph(t, m, x, n, false, m.Output.Name)[0]
	for i := 0; i < n; i++ {
		img := x[i*28*28 : (i+1)*28*28]
		ref := oracle.Logits(m, img, oracle.Options{})
		if j, ok := relClose(got[i*10:(i+1)*10], ref, rel); !ok {
			t.Errorf("image %d: logit %d = %g, oracle %g", i, j, got[i*10+j], ref[j])
		}
		if i < len(numpy) {
			if j, ok := relClose(got[i*10:(i+1)*10], numpy[i], rel); !ok {
				t.Errorf("image %d: logit %d = %g, NumPy %g", i, j, got[i*10+j], numpy[i][j])
			}
		}
	}
}

func TestRealKeras3ArchiveCopy(t *testing.T) {
	needReal(t)
	checkCopy(t, realKeras3, "conv2d_1", []int{1, 5, 9, 63})
	checkCopy(t, realKeras3, "conv2d", []int{0})
}

// ---- Generated fixtures: the general model in every layout.

// generalFixtures writes fixture.General in each format into dir and
// returns the model, the paths by name, and the format each must load as.
func generalFixtures(t *testing.T, dir string) (*model.Model, []struct{ name, path, format string }) {
	t.Helper()
	m, err := fixture.General(2)
	if err != nil {
		t.Fatal(err)
	}
	files := []struct{ name, path, format string }{
		{"keras 3 archive", filepath.Join(dir, "k3.keras"), model.FormatKeras3Archive},
		{"keras 3 archive without names", filepath.Join(dir, "k3-old.keras"), model.FormatKeras3Archive},
		{"keras 3 hdf5", filepath.Join(dir, "k3.h5"), model.FormatKeras3H5},
		{"keras 2 hdf5", filepath.Join(dir, "k2.h5"), model.FormatKeras2H5},
	}
	cfg := keras3Config(t, m)
	writeArchive(t, files[0].path, m, cfg, archiveStyle{container: "layers", names: true})
	writeArchive(t, files[1].path, m, cfg, archiveStyle{container: "layers"})
	writeKeras3H5(t, files[2].path, m)
	if err := m.Create(files[3].path, model.FullModelFile, false); err != nil {
		t.Fatal(err)
	}
	return m, files
}

func TestGeneratedFormats(t *testing.T) {
	m, files := generalFixtures(t, t.TempDir())
	for _, f := range files {
		got, err := model.Load(f.path)
		if err != nil {
			t.Errorf("%s: %v", f.name, err)
			continue
		}
		sameWeights(t, f.name, got, m)
		if got.Format() != f.format {
			t.Errorf("%s: format %s, want %s", f.name, got.Format(), f.format)
		}
		// Same weights, same graph: the logits match the oracle's.
		h, w, c := got.InputShape()
		const n = 3
		x := fixture.SeededImages(6, n, h, w, c)
		out := runGraph(t, got, x, n, false, got.Output.Name)[0]
		for i := 0; i < n; i++ {
			ref := oracle.Logits(got, x[i*h*w*c:(i+1)*h*w*c], oracle.Options{})
			if j, ok := relClose(out[i*got.Classes:(i+1)*got.Classes], ref, 1e-4); !ok {
				t.Errorf("%s: image %d logit %d = %g, oracle %g", f.name, i, j, out[i*got.Classes+j], ref[j])
			}
		}
	}
	if got := load(t, files[0].path).Layer("c2").KernelPath; got != "layers/conv2d_1/vars/0" {
		t.Errorf("archive kernel path %q", got)
	}
	if got := load(t, files[2].path).Layer("c2").KernelPath; got != "model_weights/c2/functional/c2/kernel" {
		t.Errorf("Keras 3 HDF5 kernel path %q", got)
	}
}

func TestGeneratedCopies(t *testing.T) {
	_, files := generalFixtures(t, t.TempDir())
	for _, f := range files {
		checkCopy(t, f.path, "c2", []int{0, 3})
		checkCopy(t, f.path, "fc", []int{5})
	}
}

// TestTFKerasArchive reads archives as tf.keras 2.13-2.15 writes them:
// config.json in Keras 2's form, weights under
// _layer_checkpoint_dependencies, on Windows with backslashes inside group
// names.
func TestTFKerasArchive(t *testing.T) {
	m := load(t, tiny+"model_full.h5")
	dir := t.TempDir()
	for _, st := range []archiveStyle{
		{container: "_layer_checkpoint_dependencies"},
		{container: "_layer_checkpoint_dependencies", backslash: true},
	} {
		path := filepath.Join(dir, fmt.Sprintf("tfkeras-%v.keras", st.backslash))
		writeArchive(t, path, m, keras2Config(t), st)
		got := load(t, path)
		sameWeights(t, path, got, m)
		if got.Format() != model.FormatTFKerasArchive || got.Ext() != ".keras" {
			t.Errorf("%s: format %s, ext %s", path, got.Format(), got.Ext())
		}
		want := "_layer_checkpoint_dependencies/conv2d_2/vars/0"
		if st.backslash {
			want = `_layer_checkpoint_dependencies\conv2d_2/vars/0`
		}
		if p := got.Layer("conv_3").KernelPath; p != want {
			t.Errorf("%s: conv_3 kernel at %q, want %q", path, p, want)
		}
		checkCopy(t, path, "conv_3", []int{0, 3, 7})
	}
}

// TestNestedSequentialArchive reads a Sequential without an input layer
// whose first layer is a nested Sequential block: the block's weights are
// under layers/sequential/layers/.
func TestNestedSequentialArchive(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.3)
		}
		return v
	}
	L := func(name string, kind model.Kind, act string, in ...string) *model.Layer {
		return &model.Layer{Name: name, Kind: kind, Act: act, Inputs: in, SH: 1, SW: 1}
	}
	in := L("stem_input", model.Input, "")
	in.Shape = []int{8, 8, 1}
	stem := L("stem", model.Conv2D, "relu", "stem_input")
	stem.KernelShape, stem.Kernel, stem.Bias = []int{3, 3, 1, 4}, randn(36), randn(4)
	pool := L("stem_pool", model.MaxPool, "", "stem")
	pool.KH, pool.KW, pool.SH, pool.SW = 2, 2, 2, 2
	head := L("head", model.Conv2D, "linear", "stem_pool")
	head.KernelShape, head.Kernel, head.Bias = []int{2, 2, 4, 3}, randn(48), randn(3)
	flat := L("flat", model.Flatten, "", "head")
	out := L("out", model.Dense, "softmax", "flat")
	out.KernelShape, out.Kernel, out.Bias = []int{12, 5}, randn(60), randn(5)
	m, err := model.New("nested", []*model.Layer{in, stem, pool, head, flat, out})
	if err != nil {
		t.Fatal(err)
	}
	config := `{"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "layers": [
		{"module": "keras", "class_name": "Sequential", "config": {"name": "block", "layers": [
			{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 8, 8, 1], "name": "stem_input"}},
			{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "stem", "filters": 4, "kernel_size": [3, 3], "activation": "relu"}},
			{"module": "keras.layers", "class_name": "MaxPooling2D", "config": {"name": "stem_pool", "pool_size": [2, 2]}}]}},
		{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "head", "filters": 3, "kernel_size": [2, 2]}},
		{"module": "keras.layers", "class_name": "Flatten", "config": {"name": "flat"}},
		{"module": "keras.layers", "class_name": "Dense", "config": {"name": "out", "units": 5, "activation": "softmax"}}],
		"build_input_shape": [null, 8, 8, 1]}}`
	ds := func(l *model.Layer) []h5ds {
		return []h5ds{{"0", l.KernelShape, l.Kernel}, {"1", []int{len(l.Bias)}, l.Bias}}
	}
	weights := []h5obj{
		{group: []string{"vars"}},
		{group: []string{"layers", "sequential", "vars"}},
		{group: []string{"layers", "sequential", "layers", "conv2d", "vars"}, data: ds(stem)},
		{group: []string{"layers", "sequential", "layers", "max_pooling2d", "vars"}},
		{group: []string{"layers", "conv2d", "vars"}, data: ds(head)},
		{group: []string{"layers", "flatten", "vars"}},
		{group: []string{"layers", "dense", "vars"}, data: ds(out)},
	}
	dir := t.TempDir()
	wpath := filepath.Join(dir, "w.h5")
	writeH5(t, wpath, weights)
	w, _ := os.ReadFile(wpath)
	path := filepath.Join(dir, "nested.keras")
	writeZip(t, path, entry{"metadata.json", []byte(metadata)}, entry{"config.json", []byte(config)}, entry{"model.weights.h5", w})
	got := load(t, path)
	sameWeights(t, path, got, m)
	if p := got.Layer("stem").KernelPath; p != "layers/sequential/layers/conv2d/vars/0" {
		t.Errorf("stem kernel at %q", p)
	}
	checkCopy(t, path, "stem", []int{2})
}

// TestArchiveNamesWin swaps two Dense groups: the name attributes Keras
// 3.x writes say which is which, and are believed over the class count.
func TestArchiveNamesWin(t *testing.T) {
	m, err := fixture.General(2)
	if err != nil {
		t.Fatal(err)
	}
	objs := archiveWeights(m, archiveStyle{container: "layers", names: true})
	var a, b int
	for i, o := range objs {
		if len(o.group) == 3 && o.group[1] == "dense" {
			a = i
		}
		if len(o.group) == 3 && o.group[1] == "dense_1" {
			b = i
		}
	}
	objs[a].group, objs[b].group = objs[b].group, objs[a].group
	dir := t.TempDir()
	wpath := filepath.Join(dir, "w.h5")
	writeH5(t, wpath, objs)
	w, _ := os.ReadFile(wpath)
	path := filepath.Join(dir, "swapped.keras")
	writeZip(t, path, entry{"metadata.json", []byte(metadata)}, entry{"config.json", keras3Config(t, m)}, entry{"model.weights.h5", w})
	got := load(t, path)
	sameWeights(t, path, got, m)
	if p := got.Layer("fc_p1").KernelPath; p != "layers/dense_1/vars/0" {
		t.Errorf("fc_p1 kernel at %q, want the group named fc_p1", p)
	}
}

// TestDetectByContent loads a .keras name holding HDF5 and a .h5 name
// holding an archive, and refuses anything else in one line.
func TestDetectByContent(t *testing.T) {
	dir := t.TempDir()
	full, _ := os.ReadFile(tiny + "model_full.h5")
	h5AsKeras := filepath.Join(dir, "model.keras")
	os.WriteFile(h5AsKeras, full, 0o644)
	m, files := generalFixtures(t, dir)
	arch, _ := os.ReadFile(files[0].path)
	kerasAsH5 := filepath.Join(dir, "model.h5")
	os.WriteFile(kerasAsH5, arch, 0o644)
	for _, tc := range []struct{ path, format, ext string }{
		{h5AsKeras, model.FormatKeras2H5, ".h5"},
		{kerasAsH5, model.FormatKeras3Archive, ".keras"},
	} {
		got := load(t, tc.path)
		if got.Format() != tc.format || got.Ext() != tc.ext {
			t.Errorf("%s: format %s ext %s, want %s %s", tc.path, got.Format(), got.Ext(), tc.format, tc.ext)
		}
	}
	sameWeights(t, kerasAsH5, load(t, kerasAsH5), m)
	// A copy of a .h5-named archive is an archive too.
	checkCopy(t, kerasAsH5, "c1", []int{1})

	for name, data := range map[string][]byte{
		"garbage.keras": []byte("these are not weights\n"),
		"empty.h5":      nil,
		"short.keras":   []byte("PK"),
		"png.h5":        []byte("\x89PNG\r\n\x1a\n...."),
	} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, data, 0o644)
		_, err := model.Load(path)
		if want := path + ": not a Keras model (neither HDF5 nor a .keras archive)"; err == nil || err.Error() != want {
			t.Errorf("%s: error %v, want %q", name, err, want)
		}
	}
	if _, err := model.Load(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: error %v", err)
	}
	if _, err := model.Load(filepath.Join(dir, "missing.keras")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: error %v", err)
	}
}

// TestArchiveErrors loads damaged archives: one error naming the file and
// the problem, never a panic.
func TestArchiveErrors(t *testing.T) {
	dir := t.TempDir()
	m, err := fixture.General(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := keras3Config(t, m)
	good := filepath.Join(dir, "good.keras")
	writeArchive(t, good, m, cfg, archiveStyle{container: "layers", names: true})
	_, data, _ := zipEntries(t, good)
	w := data["model.weights.h5"]

	// Weights with one layer's group missing.
	objs := archiveWeights(m, archiveStyle{container: "layers", names: true})
	objs = slices.DeleteFunc(objs, func(o h5obj) bool { return len(o.group) == 3 && o.group[1] == "conv2d_1" })
	wpath := filepath.Join(dir, "missing.weights.h5")
	writeH5(t, wpath, objs)
	missing, _ := os.ReadFile(wpath)
	// A bias of the wrong size.
	objs = archiveWeights(m, archiveStyle{container: "layers", names: true})
	for i, o := range objs {
		if len(o.group) == 3 && o.group[1] == "dense" {
			objs[i].data[1] = h5ds{"1", []int{2}, []float32{1, 2}}
		}
	}
	wpath = filepath.Join(dir, "bias.weights.h5")
	writeH5(t, wpath, objs)
	badBias, _ := os.ReadFile(wpath)

	bn := bytes.Replace(cfg, []byte(`"class_name":"Dropout"`), []byte(`"class_name":"Conv3D"`), 1)
	if bytes.Equal(bn, cfg) {
		t.Fatal("no Dropout in the config")
	}
	md := entry{"metadata.json", []byte(metadata)}
	cases := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"no config", []entry{md, {"model.weights.h5", w}}, "a zip without config.json: not a .keras archive"},
		{"config not JSON", []entry{md, {"config.json", []byte("{not json")}, {"model.weights.h5", w}}, "config.json: not valid JSON"},
		{"config not a model", []entry{md, {"config.json", []byte(`{"class_name": "Dense"}`)}, {"model.weights.h5", w}}, `config.json: unsupported model class "Dense"`},
		{"unsupported layer", []entry{md, {"config.json", bn}, {"model.weights.h5", w}}, `config.json: layer "drop": unsupported layer type "Conv3D"`},
		{"no weights file", []entry{md, {"config.json", cfg}}, "no model.weights.h5 in the archive"},
		{"weights not HDF5", []entry{md, {"config.json", cfg}, {"model.weights.h5", []byte("nope")}}, "model.weights.h5 is not an HDF5 file"},
		{"weights truncated", []entry{md, {"config.json", cfg}, {"model.weights.h5", w[:len(w)/2]}}, "model.weights.h5"},
		{"weights missing for a layer", []entry{md, {"config.json", cfg}, {"model.weights.h5", missing}}, `model.weights.h5: layer "c2" (Conv2D): no weights (no group "layers/conv2d_1/vars")`},
		{"bias of the wrong size", []entry{md, {"config.json", cfg}, {"model.weights.h5", badBias}}, `layer "fc_p1" (Dense): bias of 2 values for 6 units`},
		{"metadata not JSON", []entry{{"metadata.json", []byte("{")}, {"config.json", cfg}, {"model.weights.h5", w}}, "metadata.json: not valid JSON"},
		{"two configs", []entry{md, {"config.json", cfg}, {"config.json", cfg}, {"model.weights.h5", w}}, "two entries named config.json"},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".keras")
		writeZip(t, path, tc.entries...)
		_, err := model.Load(path)
		if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to name the file and say %q", tc.name, err, tc.want)
		}
	}
	// A zip cut short is damaged, whatever it held.
	raw, _ := os.ReadFile(good)
	for _, n := range []int{len(raw) - 10, len(raw) / 2, 30} {
		path := filepath.Join(dir, fmt.Sprintf("cut-%d.keras", n))
		os.WriteFile(path, raw[:n], 0o644)
		if _, err := model.Load(path); err == nil || !strings.HasPrefix(err.Error(), path+": damaged .keras archive") {
			t.Errorf("cut at %d: error %v", n, err)
		}
	}
	// A Keras 3 HDF5 file missing a layer's weights.
	k3 := filepath.Join(dir, "k3.h5")
	c := m.Clone()
	c.Layer("fc").Kernel = nil
	writeKeras3H5(t, k3, c)
	if _, err := model.Load(k3); err == nil || !strings.Contains(err.Error(), `layer "fc": no kernel listed in weight_names`) {
		t.Errorf("Keras 3 HDF5 without a kernel: error %v", err)
	}
}

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
	x := fixture.SeededImages(9, n, h, w, c)
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
					if name == m.Output.Name && m.Output.Act == "softmax" {
						sz = m.Classes
					}
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
	sameLayerCount(t, what, got, want)
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
	layers := must.Get(t, fixture.Layers, 11)
	merge := must.Get(t, fixture.Merge, 11)
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
	m := must.Get(t, fixture.Layers, 11)
	h, w, c := m.InputShape()
	x := fixture.SeededImages(2, 1, h, w, c)
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

// TestPrunedCopy: PrunedCopy gives Clone and PruneChannels' weights, leaves
// the original as it was (also the BatchNormalization pruning reaches),
// and copies only the layers pruning changes.
func TestPrunedCopy(t *testing.T) {
	m := must.Get(t, fixture.Layers, 11)
	before := m.Clone()
	same := func(a, b *model.Layer) bool {
		return slices.Equal(a.Kernel, b.Kernel) && slices.Equal(a.Bias, b.Bias) && slices.Equal(a.Depthwise, b.Depthwise) &&
			slices.Equal(a.Mean, b.Mean) && slices.Equal(a.Var, b.Var)
	}
	for _, tc := range []struct {
		layer string
		chans []int
	}{{"conv", []int{0, 5}}, {"sep", []int{2, 3}}} {
		want := m.Clone()
		if err := want.PruneChannels(tc.layer, tc.chans); err != nil {
			t.Fatal(err)
		}
		got, err := m.PrunedCopy(tc.layer, tc.chans)
		if err != nil {
			t.Fatal(err)
		}
		changed := m.Pruned(tc.layer)
		for i, l := range m.Layers {
			g := got.Layers[i]
			if !same(g, want.Layers[i]) {
				t.Errorf("%s: layer %s: weights differ from Clone and PruneChannels", tc.layer, l.Name)
			}
			if !same(l, before.Layers[i]) {
				t.Fatalf("%s: layer %s of the original changed", tc.layer, l.Name)
			}
			if len(l.Kernel) > 0 && (&g.Kernel[0] == &l.Kernel[0]) == slices.Contains(changed, l.Name) {
				t.Errorf("%s: layer %s: kernel shared %v, want %v", tc.layer, l.Name, &g.Kernel[0] == &l.Kernel[0], !slices.Contains(changed, l.Name))
			}
		}
	}
	if _, err := m.PrunedCopy("conv", []int{99}); err == nil {
		t.Error("PrunedCopy of a channel the layer does not have: no error")
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
