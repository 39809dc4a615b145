package model

import (
	"fmt"
	"math"
)

// KerasClass is the Keras class of l: its Kind, or for an Identity layer
// the class it stands for.
func (l *Layer) KerasClass() string {
	if l.Kind == Identity && l.Class != "" {
		return l.Class
	}
	return string(l.Kind)
}

// identityClass reports whether a Keras layer class passes its input
// through unchanged at inference. Resizing and RandomCrop do only when
// their size is the input's, which shape inference checks.
func identityClass(class string) bool {
	switch class {
	case "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
		"ActivityRegularization",
		"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
		"RandomCrop", "Resizing":
		return true
	}
	return false
}

// activationZero is f(0) of an activation function, and whether badprune
// computes the function at all. Softmax is not elementwise; it is allowed
// only as the last layer, where it is left out (see Model.Applied).
func activationZero(act string, alpha, threshold float64) (float64, bool) {
	switch act {
	case "linear", "relu6", "elu", "selu", "tanh", "swish", "silu", "softsign", "gelu", "leaky_relu":
		return 0, true
	case "relu":
		// Keras's relu: x where x > threshold, less alpha·relu(threshold - x).
		if threshold > 0 {
			return -alpha * threshold, true
		}
		return 0, true
	case "sigmoid":
		return 0.5, true
	case "softplus":
		return math.Ln2, true
	case "softmax":
		return math.NaN(), true
	}
	return 0, false
}

// Activations are the names Act may hold, in Keras's spelling.
func Activations() []string {
	return []string{"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "swish", "silu",
		"softplus", "softsign", "gelu", "softmax"}
}

// Applied is the activation a layer's graph applies: l.Act, but "linear"
// for the model's output when its activation is softmax or sigmoid, which
// keep the order of the classes: the model's output is then the logits,
// and the class their argmax.
func (m *Model) Applied(l *Layer) string {
	if l == m.Output && (l.Act == "softmax" || l.Act == "sigmoid") {
		return "linear"
	}
	if l.Act == "" {
		return "linear"
	}
	return l.Act
}

// Norm returns a BatchNormalization layer's gamma and beta (nil when the
// layer has none: scale or center false), moving mean and moving variance.
// Gamma lives in Kernel and beta in Bias, the weights WriteCopy writes, so
// that a pruned channel's zeroed gamma and beta reach the file. A layer
// without gamma keeps its moving mean in Kernel instead: with no gamma to
// zero, a zero mean and beta are what make its output for a zero input
// zero.
func (l *Layer) Norm() (gamma, beta, mean, variance []float32) {
	if l.HasGamma {
		gamma, mean = l.Kernel, l.Mean
	} else {
		mean = l.Kernel
	}
	if l.HasBeta {
		beta = l.Bias
	}
	return gamma, beta, mean, l.Var
}

// Affine returns, for a BatchNormalization (at inference) or Rescaling
// layer, the per-channel a and b with output a·x + b.
func (l *Layer) Affine() (a, b []float64) {
	c := l.Channels()
	a, b = make([]float64, c), make([]float64, c)
	switch l.Kind {
	case BatchNorm:
		gamma, beta, mean, variance := l.Norm()
		for i := range a {
			a[i] = 1 / math.Sqrt(float64(variance[i])+l.Eps)
			if gamma != nil {
				a[i] *= float64(gamma[i])
			}
			b[i] = -float64(mean[i]) * a[i]
			if beta != nil {
				b[i] += float64(beta[i])
			}
		}
	case Rescaling:
		for i := range a {
			a[i] = float64(l.Scale[i%len(l.Scale)])
			b[i] = float64(l.Offset[i%len(l.Offset)])
		}
	default:
		panic(fmt.Sprintf("model: Affine of a %s layer", l.Kind))
	}
	return a, b
}

// convLike reports whether l computes output channels from windows of its
// input with weights: what pruning can apply to.
func (l *Layer) convLike() bool {
	return l.Kind == Conv2D || l.Kind == SeparableConv2D || l.Kind == DepthwiseConv2D
}

// Weight is one stored weight of a layer: its Keras 2 name ("kernel",
// "gamma", ...), values and shape.
type Weight struct {
	Name   string
	Values []float32
	Shape  []int
}

// Weights lists l's weights in Keras's order, the order of its
// weight_names in HDF5 and of its vars in a .keras archive; a weight the
// layer does without (a bias with use_bias false) is left out.
func (l *Layer) Weights() []Weight {
	var out []Weight
	for _, r := range l.weightRoles() {
		v, shape := r.get()
		if v == nil && r.optional {
			continue
		}
		out = append(out, Weight{r.names[0], v, shape})
	}
	return out
}

// WeightsGroup is the name Keras 3 gives the weights group of the first
// layer of a class in a .keras archive (layers/<group>/vars); the next
// ones of the class add "_1", "_2", ...
func WeightsGroup(class string) string { return snakeCase(class) }
