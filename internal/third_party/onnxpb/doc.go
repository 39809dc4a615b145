// Package onnxpb holds the Go types of the ONNX protobuf schema
// (ModelProto, GraphProto, NodeProto, TensorProto, ...), generated, not
// written by hand.
//
// onnx-ml.proto is the official schema as python3-onnx 1.12 ships it
// (/usr/lib/python3/dist-packages/onnx/onnx-ml.proto in Debian 12), the
// superset of onnx.proto that also declares the ML types, so every ONNX
// file decodes. It is proto2: fields keep their presence, so a decoded
// model marshals back with the fields it had. onnx-ml.pb.go is generated
// from it by protoc (Debian's protobuf-compiler) with protoc-gen-go built
// from the google.golang.org/protobuf version in go.mod:
//
//	make onnxpb
//
// which copies the schema from python3-onnx when installed and runs the
// go:generate line below. Building and testing need neither protoc nor
// python3-onnx.
package onnxpb

//go:generate protoc --plugin=protoc-gen-go=../../../.cache/protoc-gen-go --go_out=. --go_opt=paths=source_relative --go_opt=Monnx-ml.proto=badprune/internal/third_party/onnxpb onnx-ml.proto
