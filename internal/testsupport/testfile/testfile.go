// Package testfile reads the files tests write or check: each helper fails
// the test on an error.
package testfile

import (
	"image"
	"image/png"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "badprune/internal/third_party/onnxpb"
)

// ReadAll returns the contents of the files at paths, in order.
func ReadAll(tb testing.TB, paths []string) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// DecodePNG decodes the PNG file at path.
func DecodePNG(tb testing.TB, path string) image.Image {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return img
}

// ReadONNX parses the ONNX model file at path.
func ReadONNX(tb testing.TB, path string) *pb.ModelProto {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(data, mp); err != nil {
		tb.Fatal(err)
	}
	return mp
}
