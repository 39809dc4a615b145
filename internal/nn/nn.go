package nn

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"badprune/internal/kernels"
)

// Conv applies a Keras Conv2D: x (N,H,W,C) NHWC, k (KH,KW,C,OC) HWIO, b (OC).
func Conv(x, k, b *G.Node, spec ConvSpec) (*G.Node, error) {
	return G.ApplyOp(newConvOp(spec), x, k, b)
}

// ConvPoolTrain is Conv with its ReLU and a 2x2/2 max pool fused, for a
// training graph: it keeps, per pooled value, the window entry it came
// from, so that its gradient neither stores nor searches the unpooled
// output (kernels.Conv.ForwardPoolCodes).
func ConvPoolTrain(x, k, b *G.Node, spec ConvSpec) (*G.Node, error) {
	spec.ReLU, spec.Pool = true, true
	op := newConvOp(spec)
	op.train = true
	op.name = fmt.Sprintf("ConvPoolTrain%+v", spec)
	return G.ApplyOp(op, x, k, b)
}

// MaxPool applies a Keras MaxPooling2D with output size oh x ow.
func MaxPool(x *G.Node, p kernels.Pool, oh, ow int) (*G.Node, error) {
	return G.ApplyOp(newPoolOp(p, oh, ow), x)
}

// Dense applies a Keras Dense layer: x (N,K), w (K,U), b (U); relu fuses
// the activation (inference only).
func Dense(x, w, b *G.Node, relu bool) (*G.Node, error) {
	return G.ApplyOp(newDenseOp(relu), x, w, b)
}

// DenseTrain is Dense without activation for a training graph: its product
// is kernels.DenseForward's, the one its gradients' kernels are written
// against, instead of inference's (whose bits the pruning engine matches).
func DenseTrain(x, w, b *G.Node) (*G.Node, error) {
	op := denseOp{base: newBase("Dense{train}", []int{2, 2, 1, 2}), train: true}
	return G.ApplyOp(op, x, w, b)
}

// ReLU is max(x, 0).
func ReLU(x *G.Node) (*G.Node, error) {
	return G.ApplyOp(newReLUOp(x.Dims()), x)
}

// SoftmaxCrossEntropy is the mean cross-entropy of softmax(logits) against
// targets, both (N,K); its gradient flows to the logits only.
func SoftmaxCrossEntropy(logits, targets *G.Node) (*G.Node, error) {
	return G.ApplyOp(newXentOp(), logits, targets)
}
