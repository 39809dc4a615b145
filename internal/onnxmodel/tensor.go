package onnxmodel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	pb "badprune/internal/third_party/onnxpb"
)

// maxElems bounds the values of one tensor: a damaged or hostile file can
// claim any size in a few bytes.
const maxElems = 1 << 28

// tensor is a constant of the graph: an initializer, a Constant node's
// value, or a value computed from them (a shape, say).
type tensor struct {
	dims []int
	// The values: f for floating-point tensors, i for integer ones.
	f     []float32
	i     []int64
	float bool
	// batch marks the integers that stand for the batch size (the first
	// element of a Shape), whatever the file fixed it to.
	batch []bool
	// name is the initializer or Constant output the values are stored in,
	// "" when computed.
	name string
}

func (t *tensor) size() int { return product(t.dims) }

// appendTo appends t's i-th value, and its batch mark when t has them, to
// out.
func (t *tensor) appendTo(out *tensor, i int) {
	if t.float {
		out.f = append(out.f, t.f[i])
	} else {
		out.i = append(out.i, t.i[i])
	}
	if t.batch != nil {
		out.batch = append(out.batch, t.batch[i])
	}
}

// values returns t's values as float64, integers or not.
func (t *tensor) values() []float64 {
	out := make([]float64, t.size())
	for k := range out {
		if t.float {
			out[k] = float64(t.f[k])
		} else {
			out[k] = float64(t.i[k])
		}
	}
	return out
}

// ints returns the values of an integer tensor.
func (t *tensor) ints() ([]int64, error) {
	if t.float {
		return nil, errors.New("holds floating-point values where integers are needed")
	}
	return t.i, nil
}

func product(dims []int) int {
	n := 1
	for _, d := range dims {
		n *= d
	}
	return n
}

// dimsOf checks the dimensions of a stored tensor.
func dimsOf(d []int64) ([]int, error) {
	dims := make([]int, len(d))
	n := int64(1)
	for k, v := range d {
		if v < 0 || v > maxElems {
			return nil, fmt.Errorf("dimension %d", v)
		}
		n *= v
		if n > maxElems {
			return nil, fmt.Errorf("shape %v has more than %d values", d, maxElems)
		}
		dims[k] = int(v)
	}
	return dims, nil
}

// decode reads a TensorProto's values, from raw_data or the typed field,
// whichever the writer chose.
func decode(tp *pb.TensorProto, name string) (*tensor, error) {
	if tp.GetDataLocation() == pb.TensorProto_EXTERNAL {
		return nil, errors.New("stored in an external data file: not supported")
	}
	if tp.Segment != nil {
		return nil, errors.New("stored in segments: not supported")
	}
	dims, err := dimsOf(tp.Dims)
	if err != nil {
		return nil, err
	}
	t := &tensor{dims: dims, name: name}
	n := product(dims)
	raw := tp.RawData
	typ := pb.TensorProto_DataType(tp.GetDataType())
	size := map[pb.TensorProto_DataType]int{
		pb.TensorProto_FLOAT: 4, pb.TensorProto_DOUBLE: 8, pb.TensorProto_INT64: 8, pb.TensorProto_INT32: 4,
		pb.TensorProto_INT8: 1, pb.TensorProto_UINT8: 1, pb.TensorProto_BOOL: 1,
	}[typ]
	if size == 0 {
		return nil, fmt.Errorf("data type %s: not supported", typ)
	}
	if raw != nil && len(raw) != n*size {
		return nil, fmt.Errorf("%d bytes of raw data for shape %v of %s", len(raw), dims, typ)
	}
	if raw == nil {
		// The typed field must hold every value before any is copied.
		got := map[pb.TensorProto_DataType]int{pb.TensorProto_FLOAT: len(tp.FloatData), pb.TensorProto_DOUBLE: len(tp.DoubleData),
			pb.TensorProto_INT64: len(tp.Int64Data)}[typ]
		if size <= 4 && typ != pb.TensorProto_FLOAT {
			got = len(tp.Int32Data) // every type narrower than 64 bits
		}
		if got != n {
			return nil, fmt.Errorf("%d values for shape %v", got, dims)
		}
	}
	le := binary.LittleEndian
	switch typ {
	case pb.TensorProto_FLOAT, pb.TensorProto_DOUBLE:
		t.float = true
		t.f = make([]float32, n)
		switch {
		case raw != nil && size == 4:
			for k := range t.f {
				t.f[k] = math.Float32frombits(le.Uint32(raw[4*k:]))
			}
		case raw != nil:
			for k := range t.f {
				t.f[k] = float32(math.Float64frombits(le.Uint64(raw[8*k:])))
			}
		case size == 4:
			copy(t.f, tp.FloatData)
		default:
			for k, v := range tp.DoubleData {
				t.f[k] = float32(v)
			}
		}
	default:
		t.i = make([]int64, n)
		switch {
		case raw != nil:
			for k := range t.i {
				switch typ {
				case pb.TensorProto_INT64:
					t.i[k] = int64(le.Uint64(raw[8*k:]))
				case pb.TensorProto_INT32:
					t.i[k] = int64(int32(le.Uint32(raw[4*k:])))
				case pb.TensorProto_INT8:
					t.i[k] = int64(int8(raw[k]))
				default:
					t.i[k] = int64(raw[k])
				}
			}
		case typ == pb.TensorProto_INT64:
			copy(t.i, tp.Int64Data)
		default:
			for k, v := range tp.Int32Data {
				t.i[k] = int64(v)
			}
		}
	}
	return t, nil
}

// encode stores v in a FLOAT TensorProto as it stored its values before:
// raw_data stays raw_data, float_data stays float_data.
func encode(tp *pb.TensorProto, v []float32) error {
	if pb.TensorProto_DataType(tp.GetDataType()) != pb.TensorProto_FLOAT {
		return fmt.Errorf("stored as %s, want FLOAT", pb.TensorProto_DataType(tp.GetDataType()))
	}
	if tp.RawData != nil {
		if len(tp.RawData) != 4*len(v) {
			return fmt.Errorf("holds %d bytes, want %d", len(tp.RawData), 4*len(v))
		}
		for k, x := range v {
			binary.LittleEndian.PutUint32(tp.RawData[4*k:], math.Float32bits(x))
		}
		return nil
	}
	if len(tp.FloatData) != len(v) {
		return fmt.Errorf("holds %d values, want %d", len(tp.FloatData), len(v))
	}
	copy(tp.FloatData, v)
	return nil
}
