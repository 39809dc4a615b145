package onnxmodel

import (
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/proto"

	"badprune/internal/model"
	pb "badprune/internal/third_party/onnxpb"
)

// writeCopy writes the ModelProto m was read from with the weights of the
// named layers replaced by m's, each stored as before (raw_data or
// float_data), every other field as it was. A tensor that several layers
// share stays shared while they agree on its values; a layer that came to
// differ gets a tensor of its own, read by its node.
func writeCopy(m *model.Model, w io.Writer, layers []string) error {
	src, ok := m.Source.(*source)
	if !ok {
		return fmt.Errorf("not read as an ONNX model")
	}
	mp, err := read(m.Path)
	if err != nil {
		return err
	}
	f := newFile(mp)
	type write struct {
		l *model.Layer
		r weightRef
		v []float32
	}
	var tensors []string
	writes := map[string][]write{}
	for _, name := range layers {
		l := m.Layer(name)
		refs := src.weights[name]
		if len(refs) == 0 {
			return fmt.Errorf("layer %q has no weights stored in the file", name)
		}
		for _, r := range refs {
			if f.stored[r.tensor] == nil {
				return fmt.Errorf("layer %q: weight %q is no longer in the file", name, r.tensor)
			}
			if writes[r.tensor] == nil {
				tensors = append(tensors, r.tensor)
			}
			writes[r.tensor] = append(writes[r.tensor], write{l, r, r.stored(l)})
		}
	}
	for _, t := range tensors {
		tp, ws := f.stored[t], writes[t]
		keep := ws[0].v
		if users := src.users[t]; len(users) > 1 {
			old, err := decode(tp, t)
			if err != nil {
				return fmt.Errorf("weight %q: %w", t, err)
			}
			// The tensor keeps its values while a layer not written needs
			// them, else takes those of the layer that reads it directly.
			keep = old.f
			if len(ws) == len(users) {
				keep = ws[0].v
				for _, x := range ws {
					if f.readsDirectly(x.r) {
						keep = x.v
						break
					}
				}
			}
		}
		if err := encode(tp, keep); err != nil {
			return fmt.Errorf("layer %q: weight %q: %w", ws[0].l.Name, t, err)
		}
		for _, x := range ws {
			if slices.Equal(x.v, keep) {
				continue
			}
			own, err := f.untie(x.r, x.l)
			if err == nil {
				err = encode(own, x.v)
			}
			if err != nil {
				return fmt.Errorf("layer %q: weight %q: %w", x.l.Name, t, err)
			}
		}
	}
	b, err := proto.Marshal(mp)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// file is a ModelProto being written, with where its tensors are stored.
type file struct {
	mp     *pb.ModelProto
	stored map[string]*pb.TensorProto // initializers and Constant values
	names  map[string]bool            // every name in the graph
}

func newFile(mp *pb.ModelProto) *file {
	f := &file{mp: mp, stored: map[string]*pb.TensorProto{}, names: map[string]bool{}}
	g := mp.GetGraph()
	for _, t := range g.GetInitializer() {
		f.stored[t.GetName()] = t
		f.names[t.GetName()] = true
	}
	for _, in := range g.GetInput() {
		f.names[in.GetName()] = true
	}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			f.names[o] = true
		}
		if n.GetOpType() != "Constant" || len(n.GetOutput()) == 0 {
			continue
		}
		for _, a := range n.GetAttribute() {
			if a.GetName() == "value" && a.GetT() != nil {
				f.stored[n.GetOutput()[0]] = a.GetT()
			}
		}
	}
	return f
}

// suffixes name a layer's own copy of a weight as PyTorch names its
// parameters.
var suffixes = map[field]string{kernel: ".weight", bias: ".bias", mean: ".running_mean", variance: ".running_var"}

// node is the node that reads weight r.
func (f *file) node(r weightRef) *pb.NodeProto {
	for _, n := range f.mp.GetGraph().GetNode() {
		if len(n.GetOutput()) > 0 && n.GetOutput()[0] == r.node && r.input < len(n.GetInput()) {
			return n
		}
	}
	return nil
}

// readsDirectly reports whether r's node reads r's tensor by its name, not
// through an Identity.
func (f *file) readsDirectly(r weightRef) bool {
	n := f.node(r)
	return n != nil && n.GetInput()[r.input] == r.tensor
}

// untie makes a new initializer for layer l's weight r, a copy of the
// shared one, and points l's node at it.
func (f *file) untie(r weightRef, l *model.Layer) (*pb.TensorProto, error) {
	g := f.mp.GetGraph()
	n := f.node(r)
	if n == nil {
		return nil, fmt.Errorf("its node %q is no longer in the file", r.node)
	}
	name := l.Name + suffixes[r.field]
	if alias := n.Input[r.input]; alias != r.tensor && f.dropIdentity(alias, r.tensor) {
		// PyTorch's deduplication left alias = Identity(tensor): alias
		// becomes the layer's own initializer again.
		name = alias
	} else {
		for k := 1; f.names[name]; k++ {
			name = fmt.Sprintf("%s%s_%d", l.Name, suffixes[r.field], k)
		}
	}
	f.names[name] = true
	shared := f.stored[r.tensor]
	t := proto.Clone(shared).(*pb.TensorProto)
	t.Name = proto.String(name)
	i := slices.Index(g.Initializer, shared)
	g.Initializer = slices.Insert(g.Initializer, i+1, t) // after the shared one; at the end for a Constant's
	// IR 3 lists the initializers among the graph's inputs too.
	for k, in := range g.GetInput() {
		if in.GetName() == r.tensor {
			vi := proto.Clone(in).(*pb.ValueInfoProto)
			vi.Name = proto.String(name)
			g.Input = slices.Insert(g.Input, k+1, vi)
			break
		}
	}
	n.Input[r.input] = name
	f.stored[name] = t
	return t, nil
}

// dropIdentity removes the Identity node that makes alias of tensor when
// one node alone reads alias, and reports whether it did.
func (f *file) dropIdentity(alias, tensor string) bool {
	g := f.mp.GetGraph()
	at, uses := -1, 0
	for k, n := range g.GetNode() {
		if n.GetOpType() == "Identity" && slices.Equal(n.GetOutput(), []string{alias}) && slices.Equal(n.GetInput(), []string{tensor}) {
			at = k
		}
		for _, in := range n.GetInput() {
			if in == alias {
				uses++
			}
		}
	}
	for _, o := range g.GetOutput() {
		if o.GetName() == alias {
			uses++
		}
	}
	if at < 0 || uses != 1 {
		return false
	}
	g.Node = slices.Delete(g.Node, at, at+1)
	return true
}

// stored is the weight r refers to, from l's current values in the file's
// layout: the inverse of what the converter did.
func (r weightRef) stored(l *model.Layer) []float32 {
	v := map[field][]float32{kernel: l.Kernel, bias: l.Bias, mean: l.Mean, variance: l.Var}[r.field]
	row := func(i int) int {
		if r.rows != nil {
			return r.rows[i]
		}
		return i
	}
	switch r.layout {
	case convOIHW:
		d := r.dims
		return hwioToOIHW(v, d[0], d[1], d[2], d[3])
	case denseOutIn, plain:
		if len(r.dims) == 2 && r.field == kernel {
			in, out := r.dims[0], r.dims[1]
			if r.layout == denseOutIn {
				in, out = out, in
			}
			dst := make([]float32, in*out)
			for i := 0; i < in; i++ {
				for o := 0; o < out; o++ {
					x := v[row(i)*out+o]
					if r.layout == denseOutIn {
						dst[o*in+i] = x
					} else {
						dst[i*out+o] = x
					}
				}
			}
			return dst
		}
	}
	dst := make([]float32, len(v))
	for i := range dst {
		dst[i] = v[row(i)]
	}
	return dst
}
