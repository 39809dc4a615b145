package onnxmodel_test

import (
	"os"
	"path/filepath"
	"testing"

	"badprune/internal/model"
)

// FuzzRead: any file is a model or an error, never a crash; a model read
// is one its copies can be written of.
func FuzzRead(f *testing.F) {
	for _, name := range []string{"deepid_tiny_old", "gap_head", "reshape_gemm"} {
		b, err := os.ReadFile(dir + name + ".onnx")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "m.onnx")
		os.WriteFile(p, data, 0o644)
		m, err := model.Read(p)
		if err != nil {
			return
		}
		var layers []string
		for _, l := range m.Layers {
			if l.Kernel != nil {
				layers = append(layers, l.Name)
			}
		}
		m.WriteCopy(filepath.Join(t.TempDir(), "copy.onnx"), false, layers...)
	})
}
