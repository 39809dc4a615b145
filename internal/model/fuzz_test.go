package model

import (
	"testing"

	"badprune/internal/h5"
)

// ConfigAttr returns the model_config attribute of the Keras HDF5 file at
// path. It is exported for the external tests too.
func ConfigAttr(path string) (string, error) {
	var cfg string
	err := h5.Locked(func() error {
		file, err := h5.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		cfg, err = h5.StringAttr(file, "model_config")
		return err
	})
	return cfg, err
}

// FuzzConfig feeds mutated model_config JSON to the parser and the shape
// checks: errors, never a panic.
func FuzzConfig(f *testing.F) {
	for _, p := range []string{"../../testdata/tiny/general_full.h5", "../../testdata/tiny/model_full.h5", "../../testdata/tiny/merge_full.h5"} {
		cfg, err := ConfigAttr(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(cfg))
	}
	f.Add([]byte(`{"class_name":"Sequential","config":[{"class_name":"Dense","config":{"name":"d","batch_input_shape":[null,4,4,3]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		layers, err := parseConfig(data)
		if err != nil {
			return
		}
		newWithSmallKernels(layers)
	})
}

// newWithSmallKernels gives every weighted layer a small kernel, so that
// the shape checks run, and makes a model of the layers.
func newWithSmallKernels(layers []*Layer) {
	for _, l := range layers {
		if l.Kind == Conv2D || l.Kind == Dense {
			l.KernelShape = []int{1, 1, 3, 2}
			if l.Kind == Dense {
				l.KernelShape = []int{48, 2}
			}
			n := 1
			for _, d := range l.KernelShape {
				n *= d
			}
			l.Kernel = make([]float32, n)
		}
	}
	New("fuzz", layers)
}
