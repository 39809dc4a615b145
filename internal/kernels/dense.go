package kernels

// #cgo LDFLAGS: -lm
// void bp_dense_mm(const float *a, long sar, long sai, int L, const float *b, int U,
//                  const float *bias, int r0, int r1, int j0, int j1, float *out, int isa);
// void bp_dense_dot(const float *a, const float *b, int L, int r0, int r1, int c0, int c1, int C,
//                   float *out, int isa);
// void bp_softmax_xent(const float *z, const float *y, int k, int r0, int r1, double *p,
//                      double *loss, int isa);
import "C"

import "unsafe"

// The dense layers' training products. Each output is one chain of fused
// multiply-adds in a fixed order (DenseGradInput's in 16 interleaved
// chains added as a tree), so the bits of finite results depend neither on
// the kernel set nor on the number of cores. Inference keeps Conv's dense path: its results
// are what the pruning engine's are checked against.

// densePanel is the columns one call of a product takes: five 16-lane
// vectors.
const densePanel = 80

// DenseForward sets y (n x u) to x (n x k) times w (k x u, row-major) plus
// b (u values): per output, an FMA chain over k in order, then the bias.
func DenseForward(x, w, b []float32, n, k, u int, y []float32) {
	denseForwardISA(x, w, b, n, k, u, y, isa())
}

func denseForwardISA(x, w, b []float32, n, k, u int, y []float32, set int) {
	if n == 0 || u == 0 {
		return
	}
	_, _ = b[u-1], y[n*u-1]
	if k > 0 { // else every output is its bias
		_, _ = x[n*k-1], w[k*u-1]
	}
	// Units of a column panel by half the batch: a panel of w is read once
	// a unit while its rows stream by.
	panels, halves := (u+densePanel-1)/densePanel, 2
	parallel(panels*halves, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p, h := i/halves, i%halves
			C.bp_dense_mm(fptr(x), C.long(k), 1, C.int(k), fptr(w), C.int(u), fptr(b),
				C.int(n*h/halves), C.int(n*(h+1)/halves), C.int(p*densePanel), C.int(min(u, (p+1)*densePanel)),
				fptr(y), C.int(set))
		}
	})
}

// DenseGradKernel sets dw (k x u) to the transpose of x (n x k) times dy
// (n x u): per entry, an FMA chain over the batch in order.
func DenseGradKernel(x, dy []float32, n, k, u int, dw []float32) {
	denseGradKernelISA(x, dy, n, k, u, dw, isa())
}

func denseGradKernelISA(x, dy []float32, n, k, u int, dw []float32, set int) {
	if k == 0 || u == 0 {
		return
	}
	if n == 0 {
		clear(dw[:k*u])
		return
	}
	_, _, _ = x[n*k-1], dy[n*u-1], dw[k*u-1]
	const rows = 64 // of dw a unit
	panels, blocks := (u+densePanel-1)/densePanel, (k+rows-1)/rows
	parallel(panels*blocks, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p, r := i/blocks, i%blocks
			C.bp_dense_mm(fptr(x), 1, C.long(k), C.int(n), fptr(dy), C.int(u), nil,
				C.int(r*rows), C.int(min(k, (r+1)*rows)), C.int(p*densePanel), C.int(min(u, (p+1)*densePanel)),
				fptr(dw), C.int(set))
		}
	})
}

// DenseGradInput sets dx (n x k) to dy (n x u) times the transpose of w
// (k x u): per entry, the dot product of a row of dy and a row of w, in 16
// interleaved FMA chains (every 16th product in order) added as a tree.
func DenseGradInput(dy, w []float32, n, k, u int, dx []float32) {
	denseGradInputISA(dy, w, n, k, u, dx, isa())
}

func denseGradInputISA(dy, w []float32, n, k, u int, dx []float32, set int) {
	if n == 0 || k == 0 {
		return
	}
	if u == 0 {
		clear(dx[:n*k])
		return
	}
	_, _, _ = dy[n*u-1], w[k*u-1], dx[n*k-1]
	const cols = 16 // of dx a unit: rows of w read once while dy's pass
	parallel((k+cols-1)/cols, 1, func(lo, hi int) {
		C.bp_dense_dot(fptr(dy), fptr(w), C.int(u), 0, C.int(n), C.int(lo*cols), C.int(min(k, hi*cols)),
			C.int(k), fptr(dx), C.int(set))
	})
}

// SoftmaxXent writes the softmax of each row of z (rows of k logits) into
// p, in float64, and each row's cross-entropy against the targets y (as z)
// into loss (one per row). Its exp is a polynomial of its own (vectorized
// on AVX-512), within 1e-14 relative of math.Exp, the same bits on every
// kernel set for finite logits.
func SoftmaxXent(z, y []float32, k int, p, loss []float64) {
	softmaxXentISA(z, y, k, p, loss, isa())
}

func softmaxXentISA(z, y []float32, k int, p, loss []float64, set int) {
	rows := len(loss)
	if rows == 0 || k == 0 {
		return
	}
	_, _, _ = z[rows*k-1], y[rows*k-1], p[rows*k-1]
	parallel(rows, 4, func(lo, hi int) {
		C.bp_softmax_xent(fptr(z), fptr(y), C.int(k), C.int(lo), C.int(hi),
			(*C.double)(unsafe.Pointer(&p[0])), (*C.double)(unsafe.Pointer(&loss[0])), C.int(set))
	})
}
