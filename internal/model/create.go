package model

import (
	"encoding/json"
	"fmt"
	"os"

	"badprune/internal/atomicfile"
	"badprune/internal/guard"
	"badprune/internal/h5"
)

// Layout is the form of a new Keras file.
type Layout int

const (
	// FullModelFile has root attributes model_config, keras_version and
	// backend, and the weights under model_weights (keras.Model.save).
	FullModelFile Layout = iota
	// WeightsOnlyFile has root attribute layer_names and one group per layer
	// (keras.Model.save_weights).
	WeightsOnlyFile
)

const kerasVersion = "2.3.1"

// Create writes m as a new Keras 2 HDF5 file, as Keras 2.3.1 with the
// TensorFlow backend would. Without force an existing path is an error.
func (m *Model) Create(path string, layout Layout, force bool) error {
	if err := atomicfile.CheckFree(path, force); err != nil {
		return err
	}
	tmp := atomicfile.TempPath(path)
	defer guard.Done(tmp)
	if err := h5.Locked(func() error { return m.create(tmp, layout) }); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func (m *Model) create(path string, layout Layout) error {
	f, err := h5.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	root := f
	if layout == FullModelFile {
		cfg, err := m.KerasConfig()
		if err != nil {
			return err
		}
		for _, a := range [][2]string{{"keras_version", kerasVersion}, {"backend", "tensorflow"}, {"model_config", string(cfg)}} {
			if err := h5.WriteStringAttr(f, a[0], a[1]); err != nil {
				return err
			}
		}
		if root, err = f.Group("model_weights"); err != nil {
			return err
		}
		defer root.Close()
	}
	if err := h5.WriteStringsAttr(root, "layer_names", m.LayerNames()); err != nil {
		return err
	}
	if err := h5.WriteStringAttr(root, "backend", "tensorflow"); err != nil {
		return err
	}
	if err := h5.WriteStringAttr(root, "keras_version", kerasVersion); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if err := writeLayer(root, l); err != nil {
			return fmt.Errorf("layer %q: %w", l.Name, err)
		}
	}
	return nil
}

func writeLayer(root h5.Node, l *Layer) error {
	g, err := root.Group(l.Name)
	if err != nil {
		return err
	}
	defer g.Close()
	ws := l.Weights()
	var names []string
	for _, w := range ws {
		names = append(names, l.Name+"/"+w.Name+":0")
	}
	if err := h5.WriteStringsAttr(g, "weight_names", names); err != nil {
		return err
	}
	if len(ws) == 0 {
		return nil
	}
	sub, err := g.Group(l.Name)
	if err != nil {
		return err
	}
	defer sub.Close()
	for _, w := range ws {
		if err := sub.WriteDataset(w.Name+":0", h5.StoreFloat32, w.Shape, w.Values); err != nil {
			return err
		}
	}
	return nil
}

// KerasConfig is the model_config JSON Keras 2.3.1 writes for m, which is
// also what its model.to_json() returns: an architecture for LoadWith.
func (m *Model) KerasConfig() ([]byte, error) {
	type obj = map[string]any
	glorot := obj{"class_name": "VarianceScaling", "config": obj{"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": nil}}
	zeros := obj{"class_name": "Zeros", "config": obj{}}
	// weighted adds the keys Keras writes for Conv2D and Dense alike.
	var l *Layer
	weighted := func(c obj) {
		c["activation"] = l.Act
		c["use_bias"] = l.Bias != nil
		c["kernel_initializer"], c["bias_initializer"] = glorot, zeros
		for _, k := range []string{"kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"} {
			c[k] = nil
		}
	}
	ones := obj{"class_name": "Ones", "config": obj{}}
	numbers := func(v []float32) any {
		if len(v) == 1 {
			return v[0]
		}
		return v
	}
	var layers []any
	for _, l = range m.Layers {
		c := obj{"name": l.Name, "trainable": true, "dtype": "float32"}
		pad := "valid"
		if l.Same {
			pad = "same"
		}
		switch l.Kind {
		case Input:
			c = obj{"batch_input_shape": []any{nil, l.Shape[0], l.Shape[1], l.Shape[2]}, "dtype": "float32", "sparse": false, "name": l.Name}
		case Conv2D, SeparableConv2D, DepthwiseConv2D:
			c["kernel_size"] = []int{l.KH, l.KW}
			c["strides"] = []int{l.SH, l.SW}
			c["padding"] = pad
			c["data_format"] = "channels_last"
			c["dilation_rate"] = []int{1, 1}
			weighted(c)
			switch l.Kind {
			case Conv2D:
				c["filters"] = l.KernelShape[3]
			case SeparableConv2D:
				c["filters"], c["depth_multiplier"] = l.Filters, l.DepthMul
				c["depthwise_initializer"], c["pointwise_initializer"] = glorot, glorot
				delete(c, "kernel_initializer")
			case DepthwiseConv2D:
				c["depth_multiplier"], c["depthwise_initializer"] = l.DepthMul, glorot
				delete(c, "kernel_initializer")
			}
		case MaxPool, AvgPool:
			c["pool_size"] = []int{l.KH, l.KW}
			c["padding"] = pad
			c["strides"] = []int{l.SH, l.SW}
			c["data_format"] = "channels_last"
		case GlobalAvgPool, GlobalMaxPool:
			c["data_format"] = "channels_last"
			if l.KeepDims {
				c["keepdims"] = true
			}
		case ZeroPad:
			c["padding"] = [][]int{{l.Pad[0], l.Pad[1]}, {l.Pad[2], l.Pad[3]}}
			c["data_format"] = "channels_last"
		case Flatten:
			c["data_format"] = "channels_last"
		case Dense:
			c["units"] = l.KernelShape[1]
			weighted(c)
		case BatchNorm:
			c["axis"], c["momentum"], c["epsilon"], c["center"], c["scale"] = l.Axis, 0.99, l.Eps, l.HasBeta, l.HasGamma
			c["beta_initializer"], c["gamma_initializer"] = zeros, ones
			c["moving_mean_initializer"], c["moving_variance_initializer"] = zeros, ones
			for _, k := range []string{"beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"} {
				c[k] = nil
			}
		case Activation:
			c["activation"] = l.Act
		case ReLU:
			c["max_value"], c["negative_slope"], c["threshold"] = nil, l.Alpha, l.Threshold
			if l.MaxValue > 0 {
				c["max_value"] = l.MaxValue
			}
		case LeakyReLU, ELU:
			c["alpha"] = l.Alpha
		case Softmax, Concat:
			c["axis"] = l.Axis
		case Rescaling:
			c["scale"], c["offset"] = numbers(l.Scale), numbers(l.Offset)
		case Dropout:
			c["rate"], c["noise_shape"], c["seed"] = 0.5, nil, nil
		case Identity:
			if l.Target != nil {
				c["height"], c["width"] = l.Target[0], l.Target[1]
			}
		case Add:
		default:
			return nil, fmt.Errorf("layer %q: cannot write a %s", l.Name, l.KerasClass())
		}
		in := []any{}
		if len(l.Inputs) > 0 {
			var node []any
			for _, name := range l.Inputs {
				node = append(node, []any{name, 0, 0, obj{}})
			}
			in = []any{node}
		}
		layers = append(layers, obj{"name": l.Name, "class_name": l.KerasClass(), "config": c, "inbound_nodes": in})
	}
	return json.Marshal(obj{
		"class_name": "Model",
		"config": obj{
			"name":          "model_1",
			"layers":        layers,
			"input_layers":  []any{[]any{m.Input.Name, 0, 0}},
			"output_layers": []any{[]any{m.Output.Name, 0, 0}},
		},
		"keras_version": kerasVersion,
		"backend":       "tensorflow",
	})
}
