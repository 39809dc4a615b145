// Package onnxmodel reads ONNX models (as torch.onnx.export writes CNN
// classifiers, opsets 9 to 17) into badprune's network, and writes copies
// of an ONNX file with chosen layers' weights replaced. Importing it
// registers the format with package model, as image/png does with image:
//
//	import _ "badprune/internal/onnxmodel"
//
// The graph's nodes become the network's Keras-kind layers in NHWC
// layout: Conv is Conv2D (or DepthwiseConv2D) with its OIHW weight as an
// HWIO kernel, Gemm and MatMul (with a following bias Add) are Dense with
// an [in][out] kernel, a Relu after a layer becomes its activation, a
// final Softmax the output's. The NCHW layout stays in the adapter: a
// flatten of a feature map keeps PyTorch's C, H, W order of features by
// permuting the rows of the Dense kernel that reads it.
package onnxmodel

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"badprune/internal/model"
	pb "badprune/internal/third_party/onnxpb"
)

// FormatName is the name Model.Format reports for an ONNX model.
const FormatName = "onnx"

func init() {
	model.RegisterFormat(model.Format{Name: FormatName, Ext: ".onnx", Match: match, Load: load, WriteCopy: writeCopy})
}

// match tells an ONNX file by its first field: a ModelProto starts with
// its ir_version (field 1, a small number), as every protobuf writer puts
// fields in their numbers' order. ONNX has no magic; Load checks the rest.
func match(head []byte) bool {
	num, typ, n := protowire.ConsumeTag(head)
	if n < 0 || num != 1 || typ != protowire.VarintType {
		return false
	}
	v, m := protowire.ConsumeVarint(head[n:])
	return m > 0 && v >= 1 && v <= 100
}

// maxFile bounds the size of a model file read whole.
const maxFile = 2 << 30

// read decodes the ModelProto in the file at path.
func read(path string) (*pb.ModelProto, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, errors.Unwrap(err)
	}
	if st.Size() > maxFile {
		return nil, fmt.Errorf("%d bytes: ONNX files over 2 GB keep their weights outside the file, which is not supported", st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Unwrap(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		return nil, fmt.Errorf("not an ONNX model: %v", err)
	}
	if mp.IrVersion == nil || mp.Graph == nil {
		return nil, errors.New("not an ONNX model: no ir_version or no graph")
	}
	return mp, nil
}

func load(path string) (*model.Model, error) {
	mp, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	layers, src, err := convert(mp)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := model.New(path, layers)
	if err != nil {
		return nil, err
	}
	m.Source = src
	return m, nil
}
