package model

import (
	"slices"
	"strings"
	"testing"
)

// Keras 3 configs, cut to the keys badprune reads plus the dtype objects
// and modules Keras writes around them.
const (
	k3dtype = `{"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}`

	// A Sequential with an InputLayer (batch_shape), as in mnist_cnn.keras.
	k3Sequential = `{"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "dtype": ` + k3dtype + `, "layers": [
		{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 28, 28, 1], "dtype": "float32", "name": "input_layer"}},
		{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "conv2d", "dtype": ` + k3dtype + `, "filters": 4, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "relu", "use_bias": true}},
		{"module": "keras.layers", "class_name": "MaxPooling2D", "config": {"name": "max_pooling2d", "dtype": ` + k3dtype + `, "pool_size": [2, 2], "padding": "valid", "strides": null, "data_format": "channels_last"}},
		{"module": "keras.layers", "class_name": "Flatten", "config": {"name": "flatten", "dtype": ` + k3dtype + `, "data_format": "channels_last"}},
		{"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "dtype": ` + k3dtype + `, "units": 10, "activation": "softmax", "use_bias": true}}
	]}, "registered_name": null, "build_config": {"input_shape": [null, 28, 28, 1]}}`

	// A Sequential without an InputLayer, built with model.build.
	k3Built = `{"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [
		{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "c", "kernel_size": [3, 3], "activation": "relu"}},
		{"module": "keras.layers", "class_name": "Flatten", "config": {"name": "f"}},
		{"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 3}}
	], "build_input_shape": [null, 9, 9, 2]}}`

	// A Sequential whose first layer is a preprocessing block: a nested
	// Sequential with its own InputLayer.
	k3Nested = `{"module": "keras", "class_name": "Sequential", "config": {"name": "outer", "layers": [
		{"module": "keras", "class_name": "Sequential", "config": {"name": "block", "layers": [
			{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 8, 8, 1], "name": "block_in"}},
			{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "stem", "kernel_size": [3, 3], "activation": "relu"}},
			{"module": "keras.layers", "class_name": "Dropout", "config": {"name": "drop", "rate": 0.1}}
		]}},
		{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "head", "kernel_size": [2, 2]}},
		{"module": "keras", "class_name": "Sequential", "config": {"name": "tail", "layers": [
			{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 5, 5, 3], "name": "tail_in"}},
			{"module": "keras.layers", "class_name": "Flatten", "config": {"name": "flat"}}
		]}},
		{"module": "keras.layers", "class_name": "Dense", "config": {"name": "out", "units": 2}}
	]}}`

	// A Functional with Keras 3 inbound nodes (a list of tensors for Add),
	// flat input_layers and output_layers, and a nested Sequential in the
	// middle whose consumers name it.
	k3Functional = `{"module": "keras.src.models.functional", "class_name": "Functional", "config": {"name": "functional", "layers": [
		{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 6, 6, 3], "name": "img"}, "name": "img", "inbound_nodes": []},
		{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "a", "kernel_size": [1, 1], "activation": "relu"}, "name": "a",
		 "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {"shape": [null, 6, 6, 3], "dtype": "float32", "keras_history": ["img", 0, 0]}}], "kwargs": {}}]},
		{"module": "keras", "class_name": "Sequential", "config": {"name": "branch", "layers": [
			{"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 6, 6, 3], "name": "branch_in"}},
			{"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "b", "kernel_size": [1, 1]}}
		]}, "name": "branch",
		 "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": ["img", 0, 0]}}], "kwargs": {"training": false}}]},
		{"module": "keras.layers", "class_name": "Add", "config": {"name": "sum"}, "name": "sum",
		 "inbound_nodes": [{"args": [[{"class_name": "__keras_tensor__", "config": {"keras_history": ["a", 0, 0]}}, {"class_name": "__keras_tensor__", "config": {"keras_history": ["branch", 0, 0]}}]], "kwargs": {}}]},
		{"module": "keras.layers", "class_name": "Flatten", "config": {"name": "f"}, "name": "f",
		 "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": ["sum", 0, 0]}}], "kwargs": {}}]},
		{"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 4}, "name": "d",
		 "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": ["f", 0, 0]}}], "kwargs": {}}]}
	], "input_layers": ["img", 0, 0], "output_layers": ["d", 0, 0]}}`
)

func TestParseKeras3(t *testing.T) {
	type want struct {
		name   string
		kind   Kind
		inputs []string
	}
	cases := []struct {
		name   string
		config string
		layers []want
		input  []int // shape of the first layer, the input
		scopes map[string]string
	}{
		{"sequential", k3Sequential, []want{
			{"input_layer", Input, nil}, {"conv2d", Conv2D, []string{"input_layer"}}, {"max_pooling2d", MaxPool, []string{"conv2d"}},
			{"flatten", Flatten, []string{"max_pooling2d"}}, {"dense", Dense, []string{"flatten"}},
		}, []int{28, 28, 1}, nil},
		{"sequential built without an input layer", k3Built, []want{
			{"c_input", Input, nil}, {"c", Conv2D, []string{"c_input"}}, {"f", Flatten, []string{"c"}}, {"d", Dense, []string{"f"}},
		}, []int{9, 9, 2}, nil},
		{"nested sequential blocks", k3Nested, []want{
			{"block_in", Input, nil}, {"stem", Conv2D, []string{"block_in"}}, {"drop", Dropout, []string{"stem"}},
			{"head", Conv2D, []string{"drop"}}, {"flat", Flatten, []string{"head"}}, {"out", Dense, []string{"flat"}},
		}, []int{8, 8, 1}, map[string]string{"stem": "block", "drop": "block", "flat": "tail"}},
		{"functional", k3Functional, []want{
			{"img", Input, nil}, {"a", Conv2D, []string{"img"}}, {"b", Conv2D, []string{"img"}},
			{"sum", Add, []string{"a", "b"}}, {"f", Flatten, []string{"sum"}}, {"d", Dense, []string{"f"}},
		}, []int{6, 6, 3}, map[string]string{"b": "branch"}},
	}
	for _, tc := range cases {
		tree, layers, err := parseModel([]byte(tc.config))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(layers) != len(tc.layers) {
			t.Errorf("%s: %d layers, want %d", tc.name, len(layers), len(tc.layers))
			continue
		}
		for i, w := range tc.layers {
			l := layers[i]
			if l.Name != w.name || l.Kind != w.kind || !slices.Equal(l.Inputs, w.inputs) {
				t.Errorf("%s: layer %d is %s %s fed by %v, want %s %s fed by %v", tc.name, i, l.Name, l.Kind, l.Inputs, w.name, w.kind, w.inputs)
			}
		}
		if !slices.Equal(layers[0].Shape, tc.input) {
			t.Errorf("%s: input shape %v, want %v", tc.name, layers[0].Shape, tc.input)
		}
		got := groupsOf(tree)
		if len(got) != len(tc.scopes) {
			t.Errorf("%s: nested layers %v, want %v", tc.name, got, tc.scopes)
		}
		for k, v := range tc.scopes {
			if got[k] != v {
				t.Errorf("%s: layer %s is in group %q, want %q", tc.name, k, got[k], v)
			}
		}
	}
}

func TestParseKeras3Errors(t *testing.T) {
	layer := func(class, name, inbound string) string {
		return `{"class_name": "` + class + `", "config": {"name": "` + name + `", "kernel_size": [1, 1], "units": 2}, "name": "` + name + `", "inbound_nodes": ` + inbound + `}`
	}
	tensor := func(name string) string {
		return `{"class_name": "__keras_tensor__", "config": {"keras_history": ["` + name + `", 0, 0]}}`
	}
	node := func(args string) string { return `[{"args": [` + args + `], "kwargs": {}}]` }
	input := `{"class_name": "InputLayer", "config": {"batch_shape": [null, 4, 4, 3], "name": "in"}, "name": "in", "inbound_nodes": []}`
	functional := func(extra string, layers ...string) string {
		return `{"class_name": "Functional", "config": {"name": "f", "layers": [` + strings.Join(layers, ",") + `]` + extra + `}}`
	}
	cases := []struct {
		name, config, want string
	}{
		{"unsupported layer", functional("", input, layer("LSTM", "rnn", node(tensor("in")))),
			`layer "rnn": unsupported layer type "LSTM"`},
		{"unsupported layer in a nested block", `{"class_name": "Sequential", "config": {"layers": [{"class_name": "Sequential", "config": {"name": "pre", "layers": [
			{"class_name": "InputLayer", "config": {"batch_shape": [null, 4, 4, 3], "name": "in"}},
			{"class_name": "Normalization", "config": {"name": "norm", "axis": -1}}]}}]}}`,
			`layer "pre": layer "norm": unsupported layer type "Normalization"`},
		{"two outputs", functional(`, "output_layers": [["a", 0, 0], ["b", 0, 0]]`, input, layer("Dense", "a", node(tensor("in"))), layer("Dense", "b", node(tensor("in")))),
			"2 outputs: only single-output models are supported"},
		{"two inputs", functional(`, "input_layers": [["in", 0, 0], ["in2", 0, 0]]`, input),
			"2 inputs: only single-input models are supported"},
		{"shared layer", functional("", input, layer("Dense", "a", `[{"args": [`+tensor("in")+`]}, {"args": [`+tensor("in")+`]}]`)),
			`layer "a": called 2 times: shared layers are not supported`},
		{"tensor without history", functional("", input, layer("Dense", "a", node(`{"class_name": "__keras_tensor__", "config": {}}`))),
			`layer "a": an input tensor without keras_history`},
		{"no inbound nodes", functional("", input, layer("Dense", "a", "[]")),
			`layer "a": no inbound nodes`},
		{"bad inbound nodes", functional("", input, layer("Dense", "a", `[{"args": 3}]`)),
			`layer "a": inbound_nodes in neither the Keras 2 nor the Keras 3 form`},
		{"sequential without any input shape", `{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}`,
			`layer "d": no input shape`},
		{"models nested too deep", strings.Repeat(`{"class_name": "Sequential", "config": {"name": "s", "layers": [`, 20) + strings.Repeat(`]}}`, 20),
			"models nested more than 16 deep"},
		{"not JSON", `{"class_name": `, "not valid JSON"},
	}
	for _, tc := range cases {
		_, err := parseConfig([]byte(tc.config))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestSnakeCase(t *testing.T) {
	for class, want := range map[string]string{
		"Conv2D": "conv2d", "Dense": "dense", "MaxPooling2D": "max_pooling2d", "InputLayer": "input_layer",
		"Sequential": "sequential", "GlobalAveragePooling2D": "global_average_pooling2d", "ReLU": "re_lu",
		"BatchNormalization": "batch_normalization", "SeparableConv2D": "separable_conv2d",
	} {
		if got := snakeCase(class); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", class, got, want)
		}
	}
	for entry, want := range map[string]struct {
		base string
		k    int
	}{"conv2d": {"conv2d", 0}, "conv2d_1": {"conv2d", 1}, "max_pooling2d_12": {"max_pooling2d", 12}, "re_lu": {"re_lu", 0}, "dense_01": {"dense_01", 0}} {
		if base, k := splitCounter(entry); base != want.base || k != want.k {
			t.Errorf("splitCounter(%q) = %q, %d, want %q, %d", entry, base, k, want.base, want.k)
		}
	}
}

// FuzzKeras3Config feeds mutated Keras 3 configs to the parser: errors,
// never a panic.
func FuzzKeras3Config(f *testing.F) {
	for _, c := range []string{k3Sequential, k3Built, k3Nested, k3Functional} {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tree, layers, err := parseModel(data)
		if err != nil {
			return
		}
		groupsOf(tree)
		matchVars(tree, "layers/", map[string]varsGroup{"layers/conv2d": {path: "layers/conv2d/vars", name: "x"}}, map[*kerasNode]string{}, map[*kerasNode]string{})
		newWithSmallKernels(layers)
	})
}
