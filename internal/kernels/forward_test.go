package kernels

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// fwdCases are forward convolutions for the golden bit check: the lab's
// DeepID layers, channel counts around the vector widths, odd sizes and
// strides, single channels and dense layers.
var fwdCases = append(append([]convCase{}, convCases...), []convCase{
	{3, 11, 9, 3, 4, 4, 20, 1, 1},
	{2, 27, 23, 20, 3, 3, 40, 1, 1},
	{2, 13, 11, 40, 3, 3, 60, 1, 1},
	{2, 55, 47, 3, 4, 4, 20, 2, 2},
	{2, 20, 17, 3, 4, 4, 5, 1, 1},
	{2, 10, 9, 3, 3, 3, 24, 1, 1},
	{2, 10, 9, 3, 4, 4, 17, 1, 1},
	{2, 9, 40, 3, 4, 4, 20, 1, 1},
	{2, 6, 70, 3, 4, 4, 20, 1, 1},
	{1, 12, 10, 40, 3, 3, 60, 1, 1},
	{3, 12, 10, 40, 3, 3, 64, 1, 1},
	{2, 12, 10, 40, 3, 3, 100, 1, 1},
	{2, 8, 8, 7, 2, 2, 48, 1, 1},
	{2, 30, 30, 1, 5, 5, 20, 1, 1},
	{2, 9, 12, 6, 1, 3, 12, 1, 1},
	{2, 7, 20, 3, 4, 4, 32, 1, 1},
	{2, 8, 21, 3, 4, 4, 40, 1, 1},
	{3, 6, 5, 20, 3, 3, 40, 1, 1},
	{2, 26, 22, 20, 3, 3, 20, 1, 1},
	{2, 26, 22, 20, 3, 3, 60, 1, 1},
	{2, 12, 10, 40, 3, 3, 40, 1, 1},
	{2, 12, 11, 8, 3, 3, 33, 1, 1},
	{2, 11, 14, 20, 3, 3, 37, 1, 1},
	{2, 12, 10, 60, 3, 3, 60, 1, 1},
	{2, 5, 4, 60, 2, 2, 81, 1, 1},
	{2, 3, 300, 2, 2, 3, 9, 1, 2},
}...)

// fwdData draws an input with exact zeros and negative values (and NaN
// when nan is set), a kernel with zeros and biases with +0 and -0.
func fwdData(r *rand.Rand, tc convCase, nan bool) (in []float32, cv *Conv) {
	in = randSlice(r, tc.n*tc.h*tc.w*tc.c, -1, 1)
	for i := range in {
		switch u := r.IntN(10); {
		case u < 2:
			in[i] = 0
		case u < 3:
			in[i] = float32(math.Copysign(0, -1))
		case u < 4 && nan && r.IntN(50) == 0:
			in[i] = float32(math.NaN())
		}
	}
	k := randSlice(r, tc.kh*tc.kw*tc.c*tc.oc, -1, 1)
	for i := range k {
		if r.IntN(8) == 0 {
			k[i] = 0
		}
	}
	b := randSlice(r, tc.oc, -1, 1)
	for i := range b {
		switch r.IntN(5) {
		case 0:
			b[i] = 0
		case 1:
			b[i] = float32(math.Copysign(0, -1))
		}
	}
	return in, NewConv(k, b, tc.kh, tc.kw, tc.c, tc.oc, tc.sh, tc.sw)
}

// fwdOutputs runs every forward entry point on the cases and returns all
// output bits in one stream.
func fwdOutputs(t *testing.T) []byte {
	var buf bytes.Buffer
	r := rand.New(rand.NewPCG(21, 22))
	put := func(s []float32) {
		for _, v := range s {
			binary.Write(&buf, binary.LittleEndian, math.Float32bits(v))
		}
	}
	for ci, tc := range fwdCases {
		for _, nan := range []bool{false, true} {
			in, cv := fwdData(r, tc, nan)
			oh, ow := OutSize(tc.h, tc.kh, tc.sh), OutSize(tc.w, tc.kw, tc.sw)
			for _, relu := range []bool{false, true} {
				got := make([]float32, tc.n*oh*ow*tc.oc)
				cv.forwardISA(in, tc.n, tc.h, tc.w, relu, got, isa())
				put(got)
				if isa() == 2 { // the AVX2 set computes each output the same way
					avx := make([]float32, len(got))
					cv.forwardISA(in, tc.n, tc.h, tc.w, relu, avx, 1)
					for i := range avx {
						if math.Float32bits(avx[i]) != math.Float32bits(got[i]) {
							t.Fatalf("case %d %v relu %v nan %v: AVX-512 [%d] %g, AVX2 %g", ci, tc, relu, nan, i, got[i], avx[i])
						}
					}
				}
				thr := make([]float32, len(got))
				cv.Forward(in, tc.n, tc.h, tc.w, relu, thr)
				for i := range thr {
					if math.Float32bits(thr[i]) != math.Float32bits(got[i]) {
						t.Fatalf("case %d %v: Forward[%d] %g, one call %g", ci, tc, i, thr[i], got[i])
					}
				}
				if oh < 2 || ow < 2 {
					continue
				}
				pooled := make([]float32, tc.n*(oh/2)*(ow/2)*tc.oc)
				cv.ForwardPool(in, tc.n, tc.h, tc.w, relu, pooled)
				put(pooled)
				ref := make([]float32, len(pooled))
				Pool{2, 2, 2, 2, 0, 0}.MaxPool(got, tc.n, oh, ow, tc.oc, oh/2, ow/2, ref)
				for i := range ref {
					if math.Float32bits(ref[i]) != math.Float32bits(pooled[i]) {
						t.Fatalf("case %d %v relu %v nan %v: ForwardPool[%d] %g, Forward+MaxPool %g", ci, tc, relu, nan, i, pooled[i], ref[i])
					}
				}
			}
		}
	}
	return buf.Bytes()
}

// TestForwardGolden: on every case, the AVX-512 convolution has the AVX2
// set's bits, Forward (threads) those of one call, and ForwardPool those
// of Forward then MaxPool, with and without ReLU, NaN and -0 included.
// With BP_FWD_GOLDEN=write:FILE the outputs' bits are saved, with
// BP_FWD_GOLDEN=FILE they must match the saved ones (to check a kernel
// change against the code before it).
func TestForwardGolden(t *testing.T) {
	spec := os.Getenv("BP_FWD_GOLDEN")
	out := fwdOutputs(t)
	if spec == "" {
		return
	}
	if f, ok := bytes.CutPrefix([]byte(spec), []byte("write:")); ok {
		if err := os.WriteFile(string(f), out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(out) {
		t.Fatalf("golden %d bytes, got %d", len(want), len(out))
	}
	for i := 0; i < len(out); i += 4 {
		if !bytes.Equal(out[i:i+4], want[i:i+4]) {
			t.Fatalf("word %d: %x, golden %x", i/4, out[i:i+4], want[i:i+4])
		}
	}
	fmt.Println("golden: all", len(out)/4, "values match")
}
