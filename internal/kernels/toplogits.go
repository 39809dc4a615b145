package kernels

// #include "kernels.h"
import "C"

import (
	"math"
	"slices"
	"unsafe"
)

// TopLogits finds a Dense classifier's largest logits, with the bits of
// its Forward (each logit its bias, then one FMA per input in order),
// without computing every logit exactly: a first pass on bfloat16 copies
// of the weights and inputs bounds every logit, and only the classes that
// could be among the largest get the exact sum. It needs AVX-512 BF16.
type TopLogits struct {
	hdim, k int
	wt      []float32 // k rows of hdim: class j's weights at j*hdim
	bias    []float32
	packed  []uint32
	nrm     []float32 // per class: at least |w_j|
	absb    []float32 // per class: |b_j|
	// the largest of nrm and absb: rows whose sums could overflow are left
	maxNrm, maxAbsB float64
}

// NewTopLogits prepares a Dense classifier's kernel (hdim rows of k
// weights) and bias (k values; nil: zeros) for Settle. It returns nil
// when the CPU lacks AVX-512 BF16 or a weight is not finite: callers then
// compute every logit.
func NewTopLogits(kernel, bias []float32, hdim, k int) *TopLogits {
	return newTopLogits(kernel, bias, hdim, k, C.bp_have_bf16() != 0)
}

func newTopLogits(kernel, bias []float32, hdim, k int, have bool) *TopLogits {
	if !have || hdim < 1 || k < 1 || len(kernel) != hdim*k || bias != nil && len(bias) != k {
		return nil
	}
	if bias == nil {
		bias = make([]float32, k)
	}
	bias = slices.Clone(bias) // the bounds are of these values
	t := &TopLogits{hdim: hdim, k: k, wt: make([]float32, k*hdim), bias: bias, nrm: make([]float32, k), absb: make([]float32, k)}
	sq := make([]float64, k)
	for i := 0; i < hdim; i++ {
		for j, v := range kernel[i*k : (i+1)*k] {
			t.wt[j*hdim+i] = v
			sq[j] += float64(v) * float64(v)
		}
	}
	for j, b := range bias {
		n := math.Sqrt(sq[j])
		if !(n < 1e30) || math.IsNaN(float64(b)) || math.IsInf(float64(b), 0) {
			return nil // a weight or bias not finite, or near overflow
		}
		t.nrm[j] = math.Nextafter32(float32(n), float32(math.Inf(1)))
		t.absb[j] = float32(math.Abs(float64(b)))
		t.maxNrm, t.maxAbsB = max(t.maxNrm, float64(t.nrm[j])), max(t.maxAbsB, float64(t.absb[j]))
	}
	t.packed = make([]uint32, int(C.bp_bf16_packed(C.int(hdim), C.int(k))))
	C.bp_bf16_pack(fptr(kernel), C.int(hdim), C.int(k), (*C.unsigned)(unsafe.Pointer(&t.packed[0])))
	return t
}

// ScratchSize is how many floats Settle's scratch needs.
func (t *TopLogits) ScratchSize() int { return int(C.bp_logits_scratch(C.int(t.hdim), C.int(t.k))) }

// Settle sets, for each of the n rows of x (hdim inputs each) it can
// settle, the m = len(idx)/n largest logits into idx and val (row r's at
// r*m, largest first, equal values in class order, as TopN over every
// logit) and, with labels, the label's logit into zy[r]; ok[r] says
// whether row r was settled (a row with a non-finite input, values whose
// sums could overflow, or too many classes near the top is not; its idx
// and val are scratch). m is 1..16. It returns how many rows it settled.
func (t *TopLogits) Settle(x []float32, n int, labels []int, idx []int32, val, zy []float32, ok []uint8, scratch []float32) int {
	if n == 0 {
		return 0
	}
	m := len(idx) / n
	if m < 1 || m > 16 || m*n != len(idx) {
		panic("kernels: Settle: len(idx) is not n*m with m in 1..16")
	}
	_ = x[n*t.hdim-1]
	_ = val[n*m-1]
	_ = ok[n-1]
	_ = scratch[t.ScratchSize()-1]
	var lp *C.long
	var zp *C.float
	if labels != nil {
		_ = labels[n-1]
		_ = zy[n-1]
		for _, y := range labels[:n] {
			if y < 0 || int(y) >= t.k {
				panic("kernels: Settle: label out of range")
			}
		}
		lp, zp = lptr(labels), fptr(zy)
	}
	return int(C.bp_logits_top(C.int(n), C.int(t.hdim), C.int(t.k), fptr(x), fptr(t.wt), fptr(t.bias),
		(*C.unsigned)(unsafe.Pointer(&t.packed[0])), fptr(t.nrm), fptr(t.absb), C.double(t.maxNrm), C.double(t.maxAbsB), C.int(m), lp,
		iptr(idx), fptr(val), zp, (*C.uchar)(unsafe.Pointer(&ok[0])), fptr(scratch)))
}
