// Package kernels holds the CPU compute kernels behind badprune's network ops:
// NHWC convolution (also inference's dense layers), max pooling and their
// gradients, the dense layers' training products, in float32, spread over
// all cores.
//
// The kernels are C (cgo) with AVX-512 and AVX2+FMA paths chosen at run
// time; they are plain functions on slices so that the gorgonia ops in
// package nn and the incremental pruning engine share them.
package kernels

// #cgo CFLAGS: -O3 -std=gnu11
// #include "kernels.h"
// void bp_maxpool_grad_relu_isa(const float *in, const float *dout, int N, int H, int W,
//                               int C, int OH, int OW, float *din, int isa);
// void bp_pool_codes_grad(const unsigned char *codes, const float *dout, int N, int H, int W, int C,
//                         int OH, int OW, float *din, double *db, int isa);
// void bp_colsum(const float *x, long rows, int c, double *acc);
// void bp_colsum_isa(const float *x, long rows, int c, double *acc, int isa);
// typedef struct {
// 	float l2, b1, b2, omb1, omb2, c1, c2, neg_eta, eps;
// 	int use_l2;
// } bp_adam_coef;
// void bp_adam(float *w, float *g, float *m, float *v, long n, const bp_adam_coef *c, int isa);
import "C"

import (
	"unsafe"

	"badprune/internal/workpool"
)

// Conv is a convolution kernel packed for bp_conv2d: HWIO weights with the
// output channels padded to a multiple of 8.
type Conv struct {
	KH, KW, C, OC int
	SH, SW        int
	// Serial runs every call on the calling goroutine. It is for callers
	// that keep the cores busy themselves (the pruning steps' jobs): a
	// split there only adds goroutines for the scheduler to hand cores to.
	Serial bool
	packed []float32 // [KH*KW*C][ldk]
	bias   []float32 // [ldk]
	parts  [][]float32
	gi     []float32 // the kernel as GradInput reads it, 64-byte aligned
}

// NewConv packs an HWIO kernel (KH*KW*C*OC values) and its OC biases.
func NewConv(kernel, bias []float32, kh, kw, c, oc, sh, sw int) *Conv {
	cv := NewShape(kh, kw, c, oc, sh, sw)
	cv.Pack(kernel, bias)
	return cv
}

// NewShape is a convolution of the given geometry without weights: enough
// for GradKernel and GradInput, which take the kernel unpacked; Pack gives
// it weights for Forward.
func NewShape(kh, kw, c, oc, sh, sw int) *Conv {
	return &Conv{KH: kh, KW: kw, C: c, OC: oc, SH: sh, SW: sw}
}

// Pack packs an HWIO kernel and its biases into cv, reusing its memory:
// a layer whose weights change every training step is packed anew each
// time.
func (cv *Conv) Pack(kernel, bias []float32) {
	ldk := (cv.OC + 7) &^ 7
	k := cv.KH * cv.KW * cv.C
	if len(cv.packed) != k*ldk {
		cv.packed, cv.bias = make([]float32, k*ldk), make([]float32, ldk)
	}
	// A dense layer's kernel, packed anew at every training step, in parts
	// over the cores.
	cv.parallel(k, max(1, (1<<16)/ldk), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			copy(cv.packed[i*ldk:i*ldk+cv.OC], kernel[i*cv.OC:(i+1)*cv.OC])
		}
	})
	copy(cv.bias, bias)
}

// WithBias returns cv with other biases (nil: zero), sharing its packed
// kernel, so neither may be packed again: a layer's changes are the layer
// without its bias, and a second packing of its kernel would be a second
// copy to fault in.
func (cv *Conv) WithBias(bias []float32) *Conv {
	c := &Conv{KH: cv.KH, KW: cv.KW, C: cv.C, OC: cv.OC, SH: cv.SH, SW: cv.SW, Serial: cv.Serial, packed: cv.packed, bias: make([]float32, len(cv.bias))}
	copy(c.bias, bias)
	return c
}

// NewDense packs a Keras Dense kernel (in*out values, row-major [in][out]) as
// a 1x1 convolution over a 1x1 image with in channels.
func NewDense(kernel, bias []float32, in, out int) *Conv {
	return NewConv(kernel, bias, 1, 1, in, out, 1, 1)
}

// OutSize is the valid-padding output size of an input of size n.
func OutSize(n, k, s int) int { return (n-k)/s + 1 }

// parallel runs f over [0,n) in parts of at least minPart, one per worker.
func parallel(n, minPart int, f func(lo, hi int)) { workpool.Split(n, minPart, f) }

// parallel is parallel unless cv is Serial.
func (cv *Conv) parallel(n, minPart int, f func(lo, hi int)) {
	if cv.Serial {
		if n > 0 {
			f(0, n)
		}
		return
	}
	parallel(n, minPart, f)
}

func fptr(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

// Forward computes out = conv(in) + bias, rectified when relu is set, for an
// NHWC batch in of n images h x w x C (valid padding). out has n*oh*ow*OC
// values.
func (cv *Conv) Forward(in []float32, n, h, w int, relu bool, out []float32) {
	oh, ow := OutSize(h, cv.KH, cv.SH), OutSize(w, cv.KW, cv.SW)
	inSz, outSz := h*w*cv.C, oh*ow*cv.OC
	_ = in[n*inSz-1]
	_ = out[n*outSz-1]
	minPart := 1
	if outSz < 4096 { // small images (dense layers): keep each cgo call worth its cost
		minPart = 4096/outSz + 1
	}
	cv.parallel(n, minPart, func(lo, hi int) {
		C.bp_conv2d(fptr(in[lo*inSz:]), C.int(hi-lo), C.int(h), C.int(w), C.int(cv.C),
			fptr(cv.packed), fptr(cv.bias), C.int(cv.KH), C.int(cv.KW), C.int(cv.OC),
			C.int(cv.SH), C.int(cv.SW), cbool(relu), fptr(out[lo*outSz:]), C.int(oh), C.int(ow))
	})
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// ForwardPool is Forward followed by 2x2 max pooling with stride 2 and
// floor rounding, without writing the unpooled output. out has
// n*(oh/2)*(ow/2)*OC values.
func (cv *Conv) ForwardPool(in []float32, n, h, w int, relu bool, out []float32) {
	oh, ow := OutSize(h, cv.KH, cv.SH)/2, OutSize(w, cv.KW, cv.SW)/2
	inSz, outSz := h*w*cv.C, oh*ow*cv.OC
	_ = in[n*inSz-1]
	_ = out[n*outSz-1]
	cv.parallel(n, 1, func(lo, hi int) {
		C.bp_conv2d_pool(fptr(in[lo*inSz:]), C.int(hi-lo), C.int(h), C.int(w), C.int(cv.C),
			fptr(cv.packed), fptr(cv.bias), C.int(cv.KH), C.int(cv.KW), C.int(cv.OC),
			C.int(cv.SH), C.int(cv.SW), cbool(relu), fptr(out[lo*outSz:]), C.int(oh), C.int(ow))
	})
}

// Pool describes a max pooling window.
type Pool struct {
	PH, PW, SH, SW int
	PadT, PadL     int
}

// MaxPool computes the max pooling of an NHWC batch into out (n*oh*ow*c).
func (p Pool) MaxPool(in []float32, n, h, w, c, oh, ow int, out []float32) {
	inSz, outSz := h*w*c, oh*ow*c
	_ = in[n*inSz-1]
	_ = out[n*outSz-1]
	parallel(n, 8, func(lo, hi int) {
		C.bp_maxpool(fptr(in[lo*inSz:]), C.int(hi-lo), C.int(h), C.int(w), C.int(c),
			C.int(p.PH), C.int(p.PW), C.int(p.SH), C.int(p.SW), C.int(p.PadT), C.int(p.PadL),
			fptr(out[lo*outSz:]), C.int(oh), C.int(ow))
	})
}

// MaxPoolGrad adds the gradient dout of MaxPool(in) to din.
func (p Pool) MaxPoolGrad(in, dout []float32, n, h, w, c, oh, ow int, din []float32) {
	inSz, outSz := h*w*c, oh*ow*c
	_ = in[n*inSz-1]
	_ = din[n*inSz-1]
	_ = dout[n*outSz-1]
	parallel(n, 8, func(lo, hi int) {
		C.bp_maxpool_grad(fptr(in[lo*inSz:]), fptr(dout[lo*outSz:]), C.int(hi-lo), C.int(h),
			C.int(w), C.int(c), C.int(p.PH), C.int(p.PW), C.int(p.SH), C.int(p.SW),
			C.int(p.PadT), C.int(p.PadL), C.int(oh), C.int(ow), fptr(din[lo*inSz:]))
	})
}

// MaxPoolGradReLU sets din to the gradient of MaxPool(relu(z)) with
// respect to z, given in = relu(z) and dout; every entry is written. It
// reports false, doing nothing, unless p is a 2x2 pool of stride 2 without
// padding (in, dout and din must not overlap).
func (p Pool) MaxPoolGradReLU(in, dout []float32, n, h, w, c, oh, ow int, din []float32) bool {
	if p != (Pool{PH: 2, PW: 2, SH: 2, SW: 2}) || 2*oh > h || 2*ow > w {
		return false
	}
	inSz, outSz := h*w*c, oh*ow*c
	_ = in[n*inSz-1]
	_ = din[n*inSz-1]
	_ = dout[n*outSz-1]
	p.gradReLUISA(in, dout, n, h, w, c, oh, ow, din, isa())
	return true
}

// gradReLUISA is MaxPoolGradReLU's work with the instruction set chosen.
func (p Pool) gradReLUISA(in, dout []float32, n, h, w, c, oh, ow int, din []float32, set int) {
	inSz, outSz := h*w*c, oh*ow*c
	parallel(n, 8, func(lo, hi int) {
		C.bp_maxpool_grad_relu_isa(fptr(in[lo*inSz:]), fptr(dout[lo*outSz:]), C.int(hi-lo), C.int(h),
			C.int(w), C.int(c), C.int(oh), C.int(ow), fptr(din[lo*inSz:]), C.int(set))
	})
}

// sumParts runs part over rows [a, b) of n, spread over the cores; with
// db, in fixed parts of the rows, each adding its c column sums to its own
// c values of acc (ColSumsScratch), the parts then added in order into db:
// the same bits on any number of cores. Without db the rows are cut as the
// cores come (part gets nil).
func sumParts(n, c int, db []float32, acc []float64, part func(a, b int, db *C.double)) {
	if db == nil {
		parallel(n, 8, func(lo, hi int) { part(lo, hi, nil) })
		return
	}
	const parts = colSumParts
	if len(acc) < parts*c {
		acc = make([]float64, parts*c)
	}
	parallel(parts, 1, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			clear(acc[p*c : (p+1)*c])
			a, b := n*p/parts, n*(p+1)/parts
			if a < b {
				part(a, b, (*C.double)(unsafe.Pointer(&acc[p*c])))
			}
		}
	})
	for j := range c {
		s := 0.0
		for p := 0; p < parts; p++ {
			s += acc[p*c+j]
		}
		db[j] = float32(s)
	}
}

// ForwardPoolCodes is ForwardPool, rectified, for training: out gets the
// pooled values (those of Forward then MaxPool), codes (as many) the
// window entry each came from, 0..3 in row-major order (the first
// maximum), 4 when it is not positive and no gradient flows back through
// the ReLU. The unpooled output is never stored whole, and
// MaxPoolGradCodes need not search the windows again.
func (cv *Conv) ForwardPoolCodes(in []float32, n, h, w int, out []float32, codes []uint8) {
	cv.forwardPoolCodesISA(in, n, h, w, out, codes, isa())
}

func (cv *Conv) forwardPoolCodesISA(in []float32, n, h, w int, out []float32, codes []uint8, set int) {
	oh, ow := OutSize(h, cv.KH, cv.SH)/2, OutSize(w, cv.KW, cv.SW)/2
	inSz, outSz := h*w*cv.C, oh*ow*cv.OC
	_ = in[n*inSz-1]
	_ = out[n*outSz-1]
	_ = codes[n*outSz-1]
	cv.parallel(n, 1, func(lo, hi int) {
		C.bp_conv2d_pool_codes(fptr(in[lo*inSz:]), C.int(hi-lo), C.int(h), C.int(w), C.int(cv.C),
			fptr(cv.packed), fptr(cv.bias), C.int(cv.KH), C.int(cv.KW), C.int(cv.OC),
			C.int(cv.SH), C.int(cv.SW), fptr(out[lo*outSz:]), (*C.uchar)(&codes[lo*outSz]), C.int(oh), C.int(ow), C.int(set))
	})
}

// MaxPoolGradCodes is MaxPoolGradReLU with the windows' entries taken from
// ForwardPoolCodes's codes: din (n images of h x w x c, the convolution's
// output) gets the same bits. Unless db is nil, it also sets db (c values)
// to the sums of din's channels, the convolution's bias gradient, without
// a pass over din: summed from the routed gradients in float64, in fixed
// parts of the batch added in order (the same bits on any number of
// cores); acc is scratch of ColSumsScratch(c) values, or nil.
func MaxPoolGradCodes(codes []uint8, dout []float32, n, h, w, c, oh, ow int, din, db []float32, acc []float64) {
	maxPoolGradCodesISA(codes, dout, n, h, w, c, oh, ow, din, db, acc, isa())
}

func maxPoolGradCodesISA(codes []uint8, dout []float32, n, h, w, c, oh, ow int, din, db []float32, acc []float64, set int) {
	if 2*oh > h || 2*ow > w {
		panic("kernels: MaxPoolGradCodes: pooled output larger than half the input")
	}
	inSz, outSz := h*w*c, oh*ow*c
	if n > 0 {
		_ = din[n*inSz-1]
		_ = dout[n*outSz-1]
		_ = codes[n*outSz-1]
	}
	if db != nil {
		_ = db[c-1]
	}
	sumParts(n, c, db, acc, func(a, b int, pdb *C.double) {
		C.bp_pool_codes_grad((*C.uchar)(&codes[a*outSz]), fptr(dout[a*outSz:]), C.int(b-a), C.int(h),
			C.int(w), C.int(c), C.int(oh), C.int(ow), fptr(din[a*inSz:]), pdb, C.int(set))
	})
}

// ColSumsScratch is the length of the scratch ColSums needs for c columns.
func ColSumsScratch(c int) int { return colSumParts * c }

// colSumParts is the fixed number of parts a column sum is cut into.
const colSumParts = 8

// ColSums sets sums to the sums of the columns of x (rows of len(sums)
// values), accumulated in float64 over a fixed number of parts added in
// order: the same bits on any number of cores. acc is scratch of
// ColSumsScratch(len(sums)) values, or nil: new memory each call costs a
// training step's bias gradient more than its sums.
func ColSums(x []float32, sums []float32, acc []float64) {
	c := len(sums)
	if c == 0 {
		return
	}
	sumParts(len(x)/c, c, sums, acc, func(a, b int, pdb *C.double) {
		C.bp_colsum(fptr(x[a*c:]), C.long(b-a), C.int(c), pdb)
	})
}

// colSumsISA adds the column sums of x (rows of len(acc)) to acc in one
// call on kernel set set: tests compare the sets' bits.
func colSumsISA(x []float32, acc []float64, set int) {
	c := len(acc)
	if c == 0 || len(x) < c {
		return
	}
	C.bp_colsum_isa(fptr(x), C.long(len(x)/c), C.int(c), (*C.double)(unsafe.Pointer(&acc[0])), C.int(set))
}

// AdamCoef are one Adam step's float32 coefficients: L2 (when UseL2),
// β1, β2, 1-β1, 1-β2, the reciprocals of the bias corrections C1 and C2,
// -η and ε.
type AdamCoef struct {
	L2, B1, B2, OmB1, OmB2, C1, C2, NegEta, Eps float32
	UseL2                                       bool
}

// Adam updates the weights w from their gradients g and the moments m and
// v in place, as gorgonia's AdamSolver does on float32 (each product and
// sum rounded on its own), and zeroes g:
//
//	g' = g + L2·w;  m = g'·(1-β1) + m·β1;  v = (g'·g')·(1-β2) + v·β2
//	w += (m·C1)·(-η) / (√(v·C2) + ε)
//
// One call, one core: the caller spreads the parts.
func Adam(w, g, m, v []float32, c AdamCoef) {
	if len(w) == 0 {
		return
	}
	_, _, _ = g[len(w)-1], m[len(w)-1], v[len(w)-1]
	adamISA(w, g, m, v, c, isa())
}

func adamISA(w, g, m, v []float32, c AdamCoef, set int) {
	cc := C.bp_adam_coef{l2: C.float(c.L2), b1: C.float(c.B1), b2: C.float(c.B2), omb1: C.float(c.OmB1),
		omb2: C.float(c.OmB2), c1: C.float(c.C1), c2: C.float(c.C2), neg_eta: C.float(c.NegEta),
		eps: C.float(c.Eps), use_l2: cbool(c.UseL2)}
	C.bp_adam(fptr(w), fptr(g), fptr(m), fptr(v), C.long(len(w)), &cc, C.int(set))
}

// GradKernel sets dk (KH*KW*C*OC) and db (OC) to the gradients of
// Forward's loss with respect to the HWIO kernel and the bias, given the
// input and the output gradient dout; db may be nil. The batch is cut into a fixed
// number of parts summed in order, so the result does not depend on the
// number of cores. The parts' memory stays in cv: one call at a time.
func (cv *Conv) GradKernel(in, dout []float32, n, h, w int, dk, db []float32) {
	oh, ow := OutSize(h, cv.KH, cv.SH), OutSize(w, cv.KW, cv.SW)
	inSz, outSz := h*w*cv.C, oh*ow*cv.OC
	_ = in[n*inSz-1]
	_ = dout[n*outSz-1]
	nk := cv.KH * cv.KW * cv.C * cv.OC
	_ = dk[nk-1]
	if db != nil {
		_ = db[cv.OC-1]
	}
	// Parts to spread over the cores; a dense layer's partial kernels are
	// as large as the work of a part, so it gets fewer.
	parts := 8
	if h*w == 1 {
		parts = 2
	}
	if len(cv.parts) != parts || len(cv.parts[1]) != nk+cv.OC {
		cv.parts = make([][]float32, parts) // the first part needs none
		for p := 1; p < parts; p++ {
			cv.parts[p] = make([]float32, nk+cv.OC)
		}
	}
	cv.parallel(parts, 1, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			if p == 0 { // cleared here, not by the caller alone on one core
				clear(dk[:nk])
				if db != nil {
					clear(db[:cv.OC])
				}
			}
			a, b := n*p/parts, n*(p+1)/parts
			if a == b {
				continue
			}
			// The first part adds into dk and db themselves, the others into
			// their own memory.
			pk, pb := fptr(dk), fptr(db)
			if p > 0 {
				part := cv.parts[p]
				clear(part)
				pk, pb = fptr(part[:nk]), nil
				if db != nil {
					pb = fptr(part[nk:])
				}
			}
			C.bp_conv2d_grad_kernel(fptr(in[a*inSz:]), fptr(dout[a*outSz:]), C.int(b-a),
				C.int(h), C.int(w), C.int(cv.C), C.int(cv.KH), C.int(cv.KW), C.int(cv.OC),
				C.int(cv.SH), C.int(cv.SW), C.int(oh), C.int(ow), pk, pb)
		}
	})
	// The parts are summed in their order whatever the number of cores.
	cv.parallel(nk+cv.OC, 1<<14, func(lo, hi int) {
		for p := 1; p < parts; p++ {
			if n*p/parts == n*(p+1)/parts {
				continue
			}
			part := cv.parts[p]
			for i := lo; i < min(hi, nk); i++ {
				dk[i] += part[i]
			}
			for i := max(lo, nk); i < hi && db != nil; i++ {
				db[i-nk] += part[i]
			}
		}
	})
}

// GradInput sets din to the gradient of Forward's loss with respect to its
// input, given the HWIO kernel k and the output gradient dout.
func (cv *Conv) GradInput(dout, k []float32, n, h, w int, din []float32) {
	oh, ow := OutSize(h, cv.KH, cv.SH), OutSize(w, cv.KW, cv.SW)
	inSz, outSz := h*w*cv.C, oh*ow*cv.OC
	_ = din[n*inSz-1]
	_ = dout[n*outSz-1]
	_ = k[cv.KH*cv.KW*cv.C*cv.OC-1]
	set := C.int(isa())
	// Packed once here, not by each part: for a dense layer the packing
	// costs as much as a part's products.
	if need := int(C.bp_gi_packed_len(C.int(cv.KH), C.int(cv.KW), C.int(cv.C), C.int(cv.OC), set)); need > 0 {
		cv.gi = aligned64(cv.gi, need+16)
		C.bp_gi_pack(fptr(k), C.int(cv.KH), C.int(cv.KW), C.int(cv.C), C.int(cv.OC), set, fptr(cv.gi))
	}
	cv.parallel(n, 4, func(lo, hi int) {
		clear(din[lo*inSz : hi*inSz]) // by each part, not by the caller alone on one core
		C.bp_conv2d_grad_input_packed(fptr(dout[lo*outSz:]), fptr(k), fptr(cv.gi), C.int(hi-lo), C.int(h),
			C.int(w), C.int(cv.C), C.int(cv.KH), C.int(cv.KW), C.int(cv.OC), C.int(cv.SH),
			C.int(cv.SW), C.int(oh), C.int(ow), fptr(din[lo*inSz:]), set)
	})
}

// aligned64 returns n floats starting on a 64-byte boundary: buf if it is
// such, else new memory.
func aligned64(buf []float32, n int) []float32 {
	if len(buf) == n && uintptr(unsafe.Pointer(&buf[0]))%64 == 0 {
		return buf
	}
	b := make([]float32, n+16)
	off := 0
	for uintptr(unsafe.Pointer(&b[off]))%64 != 0 {
		off++
	}
	return b[off : off+n : off+n]
}

// ConvGeom is a convolution's geometry for SparseConv.
type ConvGeom struct {
	H, W, C    int // input
	KH, KW, OC int
	SH, SW     int
	PadT, PadL int
	OH, OW     int // output
}

// SparseConv adds conv(din) (no bias) to dout for rows samples, with the
// HWIO kernel k, visiting the inputs listed for each row
// (idx[ptr[r]:ptr[r+1]]; a row whose list is not ascending is scanned for
// its non-zero inputs instead, with the same result).
func SparseConv(rows int, ptr, idx []int32, din []float32, g ConvGeom, k []float32, dout []float32) {
	sparseConv(rows, ptr, idx, din, g, k, dout, isa())
}

func sparseConv(rows int, ptr, idx []int32, din []float32, g ConvGeom, k []float32, dout []float32, set int) {
	if rows == 0 {
		return
	}
	_ = din[rows*g.H*g.W*g.C-1]
	_ = k[g.KH*g.KW*g.C*g.OC-1]
	_ = dout[rows*g.OH*g.OW*g.OC-1]
	_ = ptr[rows]
	if n := ptr[rows]; n > 0 {
		_ = idx[n-1]
	}
	for _, i := range idx[:ptr[rows]] {
		if i < 0 || int(i) >= g.H*g.W*g.C {
			panic("kernels: SparseConv index out of range")
		}
	}
	C.bp_sparse_conv_list(C.int(rows), iptr(ptr), iptr(idx), fptr(din), C.int(g.H), C.int(g.W), C.int(g.C), fptr(k),
		C.int(g.KH), C.int(g.KW), C.int(g.OC), C.int(g.SH), C.int(g.SW), C.int(g.PadT),
		C.int(g.PadL), C.int(g.OH), C.int(g.OW), fptr(dout), C.int(set))
}

// CSRDense adds din·W to dout for rows samples (din rows×k, W k×u
// row-major, dout rows×u), visiting only the inputs listed for each row:
// row r's are idx[ptr[r]:ptr[r+1]].
func CSRDense(rows int, ptr, idx []int32, din []float32, k int, w []float32, u int, dout []float32) {
	csrDense(rows, ptr, idx, din, k, w, u, dout, isa())
}

func csrDense(rows int, ptr, idx []int32, din []float32, k int, w []float32, u int, dout []float32, set int) {
	if rows == 0 || ptr[rows] == 0 {
		return
	}
	_ = din[rows*k-1]
	_ = w[k*u-1]
	_ = dout[rows*u-1]
	_ = idx[ptr[rows]-1]
	C.bp_csr_dense(C.int(rows), (*C.int)(unsafe.Pointer(&ptr[0])), (*C.int)(unsafe.Pointer(&idx[0])),
		fptr(din), C.int(k), fptr(w), C.int(u), fptr(dout), C.int(set))
}

func iptr(s []int32) *C.int {
	if len(s) == 0 {
		return nil
	}
	return (*C.int)(unsafe.Pointer(&s[0]))
}

func lptr(s []int) *C.long {
	if len(s) == 0 {
		return nil
	}
	return (*C.long)(unsafe.Pointer(&s[0]))
}

// rowLists checks the lengths ReLUApply and AddIndex rely on before C
// writes through d, idx and ptr; with no rows it sets the empty listing
// and reports false, as there is nothing to call C for.
func rowLists(rows []int, size int, d []float32, idx, ptr []int32) bool {
	if len(rows) == 0 {
		ptr[0] = 0
		return false
	}
	_ = d[len(rows)*size-1]
	_ = idx[len(rows)*size-1]
	_ = ptr[len(rows)]
	return true
}

// ReLUApply adds the pre-activation change d (one row per entry of rows,
// size values each) to the state rows pre[rows[r]], rectifies into out,
// leaves in d the change of out, and lists each row's moved entries in idx
// (at least len(d) long) with ptr (len(rows)+1). It returns how many.
func ReLUApply(rows []int, size int, d, pre, out []float32, idx, ptr []int32) int {
	return reluApply(rows, size, d, pre, out, idx, ptr, isa())
}

func reluApply(rows []int, size int, d, pre, out []float32, idx, ptr []int32, set int) int {
	if !rowLists(rows, size, d, idx, ptr) {
		return 0
	}
	return int(C.bp_relu_apply(C.int(len(rows)), lptr(rows), C.int(size), fptr(d), fptr(pre), fptr(out), iptr(idx), iptr(ptr), C.int(set)))
}

// AddIndex adds d's rows to the state rows (unless state is nil) and
// lists each row's non-zero entries like ReLUApply.
func AddIndex(rows []int, size int, d, state []float32, idx, ptr []int32) int {
	return addIndex(rows, size, d, state, idx, ptr, isa())
}

func addIndex(rows []int, size int, d, state []float32, idx, ptr []int32, set int) int {
	if !rowLists(rows, size, d, idx, ptr) {
		return 0
	}
	return int(C.bp_add_index(C.int(len(rows)), lptr(rows), C.int(size), fptr(d), fptr(state), iptr(idx), iptr(ptr), C.int(set)))
}

// AddRows adds b to a (len(b) values).
func AddRows(a, b []float32) {
	if len(b) == 0 {
		return
	}
	_ = a[len(b)-1]
	C.bp_add_rows(fptr(a), fptr(b), C.long(len(b)))
}

// ReLUFrom sets the state rows out[rows[r]] to max(src[rows[r]], 0) (NaN
// kept), leaves their change in d's rows and lists the moved entries like
// AddIndex.
func ReLUFrom(rows []int, size int, src, out, d []float32, idx, ptr []int32) int {
	if !rowLists(rows, size, d, idx, ptr) {
		return 0
	}
	for _, r := range rows {
		_ = src[(r+1)*size-1]
		_ = out[(r+1)*size-1]
	}
	return int(C.bp_relu_from(C.int(len(rows)), lptr(rows), C.int(size), fptr(src), fptr(out), fptr(d), iptr(idx), iptr(ptr)))
}

// TopN fills idx and val with the len(idx) largest values of z, largest
// first, equal values in index order, and returns how many it filled.
func TopN(z []float32, idx []int32, val []float32) int {
	_ = val[len(idx)-1]
	return int(C.bp_topn(fptr(z), C.int(len(z)), C.int(len(idx)), iptr(idx), fptr(val)))
}

// TopMoves sets dv[k] = wt[top[k]]·(a-b) for each tracked class (wt holds
// one row of len(a) weights per class) and returns |a-b|²; tmp is scratch
// of len(a).
func TopMoves(a, b, wt []float32, top []int32, dv, tmp []float32) float64 {
	_ = b[len(a)-1]
	_ = tmp[len(a)-1]
	_ = dv[len(top)-1]
	return float64(C.bp_top_moves(C.int(len(a)), fptr(a), fptr(b), fptr(wt), iptr(top), C.int(len(top)), fptr(dv), fptr(tmp)))
}

// Convert turns n images stored in src ([]uint8, []float32 or []float64;
// channels-first when cf) into NHWC float32 times scale in dst. It returns
// the index of the first image holding a non-finite value, or -1.
func Convert(src any, n, c, hw int, cf bool, scale float32, dst []float32) int {
	return convertISA(src, n, c, hw, cf, scale, dst, isa())
}

// convertISA is Convert on kernel set set, for tests.
func convertISA(src any, n, c, hw int, cf bool, scale float32, dst []float32, set int) int {
	p, kind := rawPointer(src, n*c*hw)
	_ = dst[n*c*hw-1]
	return int(C.bp_convert_isa(p, kind, C.int(n), C.int(c), C.int(hw), cbool(cf), C.float(scale), fptr(dst), C.int(set)))
}

// Narrow copies n images stored in src (as Convert's) into NHWC bytes in
// dst and reports true when every pixel is an integer 0..255; at the first
// that is not it reports false, dst then partly written.
func Narrow(src any, n, c, hw int, cf bool, dst []uint8) bool {
	if n == 0 {
		return true
	}
	p, kind := rawPointer(src, n*c*hw)
	_ = dst[n*c*hw-1]
	return C.bp_narrow(p, kind, C.int(n), C.int(c), C.int(hw), cbool(cf), (*C.uchar)(&dst[0])) == 1
}

// rawPointer is the address and bp_convert_isa kind of a stored-values slice
// of at least n elements.
func rawPointer(src any, n int) (unsafe.Pointer, C.int) {
	switch s := src.(type) {
	case []uint8:
		_ = s[n-1]
		return unsafe.Pointer(&s[0]), 0
	case []float32:
		_ = s[n-1]
		return unsafe.Pointer(&s[0]), 1
	case []float64:
		_ = s[n-1]
		return unsafe.Pointer(&s[0]), 2
	}
	panic("kernels: stored values of an unknown type")
}

// isa is the kernel set the CPU runs: 2 AVX-512, 1 AVX2+FMA, 0 plain C.
func isa() int { return int(C.bp_isa()) }

// forwardISA is Forward in one call (no threads) with the given
// kernel set, at most isa(): tests compare the sets with each other.
func (cv *Conv) forwardISA(in []float32, n, h, w int, relu bool, out []float32, set int) {
	oh, ow := OutSize(h, cv.KH, cv.SH), OutSize(w, cv.KW, cv.SW)
	_ = in[n*h*w*cv.C-1]
	_ = out[n*oh*ow*cv.OC-1]
	C.bp_conv2d_isa(fptr(in), C.int(n), C.int(h), C.int(w), C.int(cv.C),
		fptr(cv.packed), fptr(cv.bias), C.int(cv.KH), C.int(cv.KW), C.int(cv.OC),
		C.int(cv.SH), C.int(cv.SW), cbool(relu), fptr(out), C.int(oh), C.int(ow), C.int(set))
}

// gradISA is GradKernel and GradInput in one call each (no threads) with
// the given kernel set, at most isa(), for tests.
func (cv *Conv) gradISA(in, dout, k []float32, n, h, w int, dk, db, din []float32, set int) {
	oh, ow := OutSize(h, cv.KH, cv.SH), OutSize(w, cv.KW, cv.SW)
	_ = in[n*h*w*cv.C-1]
	_ = din[n*h*w*cv.C-1]
	_ = dout[n*oh*ow*cv.OC-1]
	_ = k[cv.KH*cv.KW*cv.C*cv.OC-1]
	_ = dk[cv.KH*cv.KW*cv.C*cv.OC-1]
	_ = db[cv.OC-1]
	C.bp_conv2d_grad_kernel_isa(fptr(in), fptr(dout), C.int(n), C.int(h), C.int(w), C.int(cv.C),
		C.int(cv.KH), C.int(cv.KW), C.int(cv.OC), C.int(cv.SH), C.int(cv.SW), C.int(oh), C.int(ow),
		fptr(dk), fptr(db), C.int(set))
	C.bp_conv2d_grad_input_isa(fptr(dout), fptr(k), C.int(n), C.int(h), C.int(w), C.int(cv.C),
		C.int(cv.KH), C.int(cv.KW), C.int(cv.OC), C.int(cv.SH), C.int(cv.SW), C.int(oh), C.int(ow),
		fptr(din), C.int(set))
}

// ReLU sets o to max(x, 0) elementwise, as Go's max does (NaN stays NaN).
func ReLU(x, o []float32) {
	if len(x) == 0 {
		return
	}
	_ = o[len(x)-1]
	parallel(len(x), 1<<16, func(lo, hi int) {
		C.bp_relu(fptr(x[lo:]), C.long(hi-lo), fptr(o[lo:]))
	})
}

// ReLUGrad sets o to dy where y > 0, else 0.
func ReLUGrad(y, dy, o []float32) {
	if len(y) == 0 {
		return
	}
	_ = dy[len(y)-1]
	_ = o[len(y)-1]
	parallel(len(y), 1<<16, func(lo, hi int) {
		C.bp_relu_grad(fptr(y[lo:]), fptr(dy[lo:]), C.long(hi-lo), fptr(o[lo:]))
	})
}
