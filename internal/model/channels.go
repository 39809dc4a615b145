package model

import "fmt"

// KeepsZero reports whether l acts on each channel of its single input
// alone and maps a zero channel to zero: the layers through which a pruned
// channel stays pruned (max pooling, Dropout, a ReLU or linear Activation).
func (l *Layer) KeepsZero() bool {
	switch l.Kind {
	case MaxPool, Dropout:
		return true
	case Activation:
		return l.Act == "relu" || l.Act == "linear"
	}
	return false
}

// PerChannel returns the layers after the named one that carry its
// channels one to one: the chain of sole consumers that KeepsZero, in
// order. It is the one definition of where a pruned channel can be read
// (ranked, masked) downstream of the layer that computes it.
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
