package model

import (
	"fmt"
	"math"
	"slices"
)

// perChannel reports whether l acts on each channel of its single input
// alone: elementwise activations, BatchNormalization, Rescaling, pooling
// (global pooling too), zero padding, dropout and identity layers.
func (l *Layer) perChannel() bool {
	switch l.Kind {
	case MaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool, ZeroPad, Dropout, Identity, BatchNorm, Rescaling,
		ReLU, LeakyReLU, ELU:
		return true
	case Activation:
		return l.Act != "softmax"
	}
	return false
}

// zeroOf is what l, a per-channel layer, maps a zero channel to with its
// weights as they are, when that is one number (NaN otherwise).
func (l *Layer) zeroOf() float64 {
	switch l.Kind {
	case Activation, ReLU, LeakyReLU, ELU:
		if z, ok := activationZero(l.Act, l.Alpha, l.Threshold); ok {
			return z
		}
		return math.NaN()
	case Rescaling:
		if slices.ContainsFunc(l.Offset, func(v float32) bool { return v != 0 }) {
			return math.NaN()
		}
	case BatchNorm:
		return math.NaN()
	}
	return 0
}

// KeepsZero reports whether l acts on each channel of its single input
// alone and maps a zero channel to zero: the layers through which a
// pruned channel stays pruned (pooling, dropout, an activation with
// f(0) = 0, a Rescaling without offset), and BatchNormalization, whose
// weights of a pruned channel pruning zeroes too (PruneChannels).
func (l *Layer) KeepsZero() bool {
	return l.perChannel() && (l.Kind == BatchNorm || l.zeroOf() == 0)
}

// PerChannel returns the layers after the named one that carry its
// channels one to one: the chain of sole consumers that KeepsZero, in
// order. It is the one definition of where a pruned channel can be read
// (ranked, masked) downstream of the layer that computes it, and of the
// layers whose weights pruning changes besides it.
func (m *Model) PerChannel(name string) []*Layer {
	var out []*Layer
	for cur := name; ; {
		c := m.Consumers(cur)
		if len(c) != 1 || !c[0].KeepsZero() {
			return out
		}
		out = append(out, c[0])
		cur = c[0].Name
	}
}

// Pruned names the layers whose weights pruning channels of the named one
// changes (PruneChannels), the layer first: the weights to write into B'.
func (m *Model) Pruned(name string) []string {
	out := []string{name}
	for _, l := range m.PerChannel(name) {
		if l.Kind == BatchNorm {
			out = append(out, l.Name)
		}
	}
	return out
}

// CheckPruning reports why pruning channels of the named layer would not
// remove them: its own activation, or a per-channel layer reading them
// after it (on the PerChannel chain or on any branch through per-channel
// layers), maps a zeroed channel to a non-zero value, so that the
// "pruned" channel would still send a constant downstream (a sigmoid, a
// Rescaling with an offset, a BatchNormalization whose weights pruning
// does not reach).
func (m *Model) CheckPruning(name string) error {
	l := m.Layer(name)
	if l == nil {
		return fmt.Errorf("no layer %q", name)
	}
	if z, ok := activationZero(m.Applied(l), l.Alpha, l.Threshold); !ok {
		return fmt.Errorf("activation %q is not supported", l.Act)
	} else if z != 0 {
		return fmt.Errorf("its activation %s maps a pruned channel to %.4g, not 0: the channel would not be removed", l.Act, z)
	}
	chain := map[string]bool{}
	for _, c := range m.PerChannel(name) {
		chain[c.Name] = true
	}
	seen := map[string]bool{}
	todo := []string{name}
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		for _, c := range m.Consumers(cur) {
			if seen[c.Name] || !c.perChannel() {
				continue
			}
			seen[c.Name] = true
			if !chain[c.Name] && c.zeroOf() != 0 {
				what := fmt.Sprintf("maps a zero channel to %.4g", c.zeroOf())
				if math.IsNaN(c.zeroOf()) {
					what = "maps a zero channel to non-zero values"
				}
				return fmt.Errorf("layer %q (%s) after it %s: its pruned channels would not be removed", c.Name, c.describe(), what)
			}
			todo = append(todo, c.Name)
		}
	}
	return nil
}

// describe names l's class, and its activation for an Activation layer.
func (l *Layer) describe() string {
	if l.Kind == Activation {
		return fmt.Sprintf("Activation %s", l.Act)
	}
	return l.KerasClass()
}

// Compatible reports whether r can stand beside m in a GoodNet: the same
// input shape and the same classes.
func (m *Model) Compatible(r *Model) error {
	bh, bw, bc := m.InputShape()
	rh, rw, rc := r.InputShape()
	if bh != rh || bw != rw || bc != rc {
		return fmt.Errorf("%s: takes %dx%dx%d inputs but B (%s) takes %dx%dx%d", r.Path, rh, rw, rc, m.Path, bh, bw, bc)
	}
	if m.Classes != r.Classes {
		return fmt.Errorf("%s: has %d classes but B (%s) has %d", r.Path, r.Classes, m.Path, m.Classes)
	}
	return nil
}
