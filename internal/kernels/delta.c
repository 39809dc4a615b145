// Sparse update kernels for the incremental pruning engine: when a few
// inputs of a layer change, add their effect to its pre-activations
// instead of recomputing the layer. Zero entries of the input change are
// skipped, so the work follows what changed.
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#include "kernels.h"

// Sparse update of a convolution: for each of rows samples, add the
// effect of the input change din to the output pre-activations dout,
// visiting the changed inputs listed for the row (idx[ptr[r]:ptr[r+1]])
// when the list is ascending, else scanning the row for non-zero inputs:
// the same inputs in the same order either way, so the same sums.
#define CONV_ONE(AXPY)                                                         \
	{                                                                            \
		const float v = d[i];                                                      \
		if (v == 0) continue;                                                      \
		const int ci = i % C, px = (i / C) % Wd, py = i / (C * Wd);                \
		for (int ky = 0; ky < KH; ky++) {                                          \
			const int ty = py + padT - ky;                                           \
			if (ty < 0 || ty % SH) continue;                                         \
			const int oy = ty / SH;                                                  \
			if (oy >= OH) continue;                                                  \
			for (int kx = 0; kx < KW; kx++) {                                        \
				const int tx = px + padL - kx;                                         \
				if (tx < 0 || tx % SW) continue;                                       \
				const int ox = tx / SW;                                                \
				if (ox >= OW) continue;                                                \
				AXPY(v, k + ((size_t)(ky * KW + kx) * C + ci) * OC, o + ((size_t)oy * OW + ox) * OC, OC); \
			}                                                                        \
		}                                                                          \
	}

#define BODY_CONV_LIST(AXPY)                                                   \
	const int isz = H * Wd * C, osz = OH * OW * OC;                              \
	for (int r = 0; r < rows; r++) {                                             \
		const float *d = din + (size_t)r * isz;                                    \
		float *o = dout + (size_t)r * osz;                                         \
		const int *ix = idx + ptr[r], n = ptr[r + 1] - ptr[r];                     \
		int sorted = 1;                                                            \
		for (int t = 1; t < n && sorted; t++) sorted = ix[t] > ix[t - 1];          \
		if (sorted) {                                                              \
			for (int t = 0; t < n; t++) {                                            \
				const int i = ix[t];                                                   \
				CONV_ONE(AXPY)                                                         \
			}                                                                        \
		} else {                                                                   \
			for (int i = 0; i < isz; i++) CONV_ONE(AXPY)                             \
		}                                                                          \
	}

static inline void axpy_plain(float v, const float *restrict w, float *restrict o, int n) {
	for (int u = 0; u < n; u++) o[u] += v * w[u];
}

// Compiled for AVX2+FMA, each term is one fused multiply-add, as in
// axpy_512: the two sets give the same bits.
__attribute__((target("avx2,fma"))) static inline void
axpy_avx(float v, const float *restrict w, float *restrict o, int n) {
	for (int u = 0; u < n; u++) o[u] += v * w[u];
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static inline void
axpy_512(float v, const float *restrict w, float *restrict o, int n) {
	const __m512 vv = _mm512_set1_ps(v);
	int u = 0;
	for (; u + 16 <= n; u += 16)
		_mm512_storeu_ps(o + u, _mm512_fmadd_ps(vv, _mm512_loadu_ps(w + u), _mm512_loadu_ps(o + u)));
	if (u < n) {
		const __mmask16 m = (__mmask16)((1u << (n - u)) - 1);
		_mm512_mask_storeu_ps(o + u, m, _mm512_fmadd_ps(vv, _mm512_maskz_loadu_ps(m, w + u), _mm512_maskz_loadu_ps(m, o + u)));
	}
}

static void conv_list_plain(int rows, const int *ptr, const int *idx, const float *din, int H, int Wd, int C,
                            const float *k, int KH, int KW, int OC, int SH, int SW, int padT, int padL, int OH,
                            int OW, float *dout) {
	BODY_CONV_LIST(axpy_plain)
}

__attribute__((target("avx2,fma"))) static void
conv_list_avx(int rows, const int *ptr, const int *idx, const float *din, int H, int Wd, int C, const float *k,
              int KH, int KW, int OC, int SH, int SW, int padT, int padL, int OH, int OW, float *dout) {
	BODY_CONV_LIST(axpy_avx)
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void
conv_list_512(int rows, const int *ptr, const int *idx, const float *din, int H, int Wd, int C, const float *k,
              int KH, int KW, int OC, int SH, int SW, int padT, int padL, int OH, int OW, float *dout) {
	BODY_CONV_LIST(axpy_512)
}

void bp_sparse_conv_list(int rows, const int *ptr, const int *idx, const float *din, int H, int W, int C,
                         const float *k, int KH, int KW, int OC, int SH, int SW, int padT, int padL, int OH, int OW,
                         float *dout, int set) {
	switch (set) {
	case 2:
		conv_list_512(rows, ptr, idx, din, H, W, C, k, KH, KW, OC, SH, SW, padT, padL, OH, OW, dout);
		return;
	case 1:
		conv_list_avx(rows, ptr, idx, din, H, W, C, k, KH, KW, OC, SH, SW, padT, padL, OH, OW, dout);
		return;
	}
	conv_list_plain(rows, ptr, idx, din, H, W, C, k, KH, KW, OC, SH, SW, padT, padL, OH, OW, dout);
}

// csr_block adds the row's n listed inputs to output columns [u0, u0+8*nb)
// of o, accumulated in nb registers: nb is a constant at each call and the
// pragmas unroll the loops over it, so no accumulator leaves its register.
__attribute__((target("avx2,fma"), always_inline)) static inline void
csr_block(const float *d, const int *nz, int n, const float *W, int U, int u0,
          float *o, const int nb) {
	__m256 a[8];
#pragma GCC unroll 8
	for (int b = 0; b < nb; b++) a[b] = _mm256_loadu_ps(o + u0 + 8 * b);
	for (int t = 0; t < n; t++) {
		const __m256 v = _mm256_broadcast_ss(d + nz[t]);
		const float *w = W + (size_t)nz[t] * U + u0;
#pragma GCC unroll 8
		for (int b = 0; b < nb; b++) a[b] = _mm256_fmadd_ps(v, _mm256_loadu_ps(w + 8 * b), a[b]);
	}
#pragma GCC unroll 8
	for (int b = 0; b < nb; b++) _mm256_storeu_ps(o + u0 + 8 * b, a[b]);
}

// CSR_ROWS runs its body for each row with inputs d, outputs o and its n
// listed inputs nz, skipping rows that list none.
#define CSR_ROWS(...)                                                          \
	for (int r = 0; r < rows; r++) {                                             \
		const float *d = din + (size_t)r * K;                                      \
		float *o = dout + (size_t)r * U;                                           \
		const int *nz = idx + ptr[r];                                              \
		const int n = ptr[r + 1] - ptr[r];                                         \
		if (n == 0) continue;                                                      \
		__VA_ARGS__                                                                \
	}

// bp_csr_dense adds, for each row r, sum over its listed inputs k of
// din[r*K+k] * W[k][:] to dout[r][:]. The lists come from whoever made the
// change, so nothing is scanned; each 64-wide block of the output row is
// accumulated in registers across all of the row's inputs.
__attribute__((target("avx2,fma"))) static void
csr_avx(int rows, const int *ptr, const int *idx, const float *din, int K,
        const float *W, int U, float *dout) {
	CSR_ROWS(
		int u0 = 0;
		for (; u0 + 64 <= U; u0 += 64) csr_block(d, nz, n, W, U, u0, o, 8);
		for (; u0 + 32 <= U; u0 += 32) csr_block(d, nz, n, W, U, u0, o, 4);
		for (int t = 0; t < n; t++) {
			const float v = d[nz[t]];
			const float *w = W + (size_t)nz[t] * U;
			for (int u = u0; u < U; u++) o[u] += v * w[u];
		})
}

static void csr_plain(int rows, const int *ptr, const int *idx, const float *din,
                      int K, const float *W, int U, float *dout) {
	for (int r = 0; r < rows; r++) {
		const float *d = din + (size_t)r * K;
		float *o = dout + (size_t)r * U;
		for (int t = ptr[r]; t < ptr[r + 1]; t++) {
			const float v = d[idx[t]];
			const float *w = W + (size_t)idx[t] * U;
			for (int u = 0; u < U; u++) o[u] += v * w[u];
		}
	}
}

// csr_block_512 is csr_block with nb 16-wide registers and a mask on the
// last (lanes past the row's end are neither read nor written).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline)) static inline void
csr_block_512(const float *d, const int *nz, int n, const float *W, int U, int u0, float *o, const int nb,
              __mmask16 last) {
	__m512 a[10];
#pragma GCC unroll 10
	for (int b = 0; b < nb; b++) a[b] = _mm512_maskz_loadu_ps(b == nb - 1 ? last : 0xffff, o + u0 + 16 * b);
	for (int t = 0; t < n; t++) {
		const __m512 v = _mm512_set1_ps(d[nz[t]]);
		const float *w = W + (size_t)nz[t] * U + u0;
#pragma GCC unroll 10
		for (int b = 0; b < nb; b++)
			a[b] = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(b == nb - 1 ? last : 0xffff, w + 16 * b), a[b]);
	}
#pragma GCC unroll 10
	for (int b = 0; b < nb; b++) _mm512_mask_storeu_ps(o + u0 + 16 * b, b == nb - 1 ? last : 0xffff, a[b]);
}

// csr_512 is csr_avx with 16-wide registers: each output sums the same
// terms in the same order with fused multiply-adds, so the same bits.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void
csr_512(int rows, const int *ptr, const int *idx, const float *din, int K, const float *W, int U, float *dout) {
	CSR_ROWS(
		int u0 = 0;
		// 160 outputs (the lab's dense layers) in one pass over the list
		for (; u0 + 160 <= U; u0 += 160) csr_block_512(d, nz, n, W, U, u0, o, 10, 0xffff);
		for (; u0 + 128 <= U; u0 += 128) csr_block_512(d, nz, n, W, U, u0, o, 8, 0xffff);
		for (; u0 + 64 <= U; u0 += 64) csr_block_512(d, nz, n, W, U, u0, o, 4, 0xffff);
		for (; u0 + 16 <= U; u0 += 16) csr_block_512(d, nz, n, W, U, u0, o, 1, 0xffff);
		if (u0 < U) csr_block_512(d, nz, n, W, U, u0, o, 1, (__mmask16)((1u << (U - u0)) - 1));)
}

void bp_csr_dense(int rows, const int *ptr, const int *idx, const float *din,
                  int K, const float *W, int U, float *dout, int set) {
	switch (set) {
	case 2:
		csr_512(rows, ptr, idx, din, K, W, U, dout);
		return;
	case 1:
		csr_avx(rows, ptr, idx, din, K, W, U, dout);
		return;
	}
	csr_plain(rows, ptr, idx, din, K, W, U, dout);
}

// bp_relu_apply adds the pre-activation change d (na rows of size) to the
// state rows pre[rows[r]], rectifies into out, leaves in d the change of
// out, and lists the moved entries of each row (ptr has na+1 entries).
// Returns the number listed.
// relu_one applies a pre-activation change to one entry and lists it if
// the output moved.
static inline void relu_one(float *dr, float *pr, float *o, int j, int *idx, int *n) {
	const float v = dr[j];
	if (v == 0) return;
	const float p = pr[j] + v;
	pr[j] = p;
	const float nv = p > 0 ? p : 0;
	const float dv = nv - o[j];
	dr[j] = dv;
	o[j] = nv;
	if (dv != 0) idx[(*n)++] = j;
}

static int relu_plain(int na, const long *rows, int size, float *d, float *pre,
                      float *out, int *idx, int *ptr) {
	int n = 0;
	ptr[0] = 0;
	for (int r = 0; r < na; r++) {
		float *dr = d + (size_t)r * size;
		float *pr = pre + (size_t)rows[r] * size;
		float *o = out + (size_t)rows[r] * size;
		for (int j = 0; j < size; j++) relu_one(dr, pr, o, j, idx, &n);
		ptr[r + 1] = n;
	}
	return n;
}

// Eight entries at a time; the moved ones are listed from a bit mask.
__attribute__((target("avx2,fma"))) static int
relu_avx(int na, const long *rows, int size, float *d, float *pre, float *out,
         int *idx, int *ptr) {
	int n = 0;
	ptr[0] = 0;
	const __m256 z = _mm256_setzero_ps();
	for (int r = 0; r < na; r++) {
		float *dr = d + (size_t)r * size;
		float *pr = pre + (size_t)rows[r] * size;
		float *o = out + (size_t)rows[r] * size;
		int j = 0;
		for (; j + 8 <= size; j += 8) {
			const __m256 v = _mm256_loadu_ps(dr + j);
			if (_mm256_movemask_ps(_mm256_cmp_ps(v, z, _CMP_NEQ_UQ)) == 0) continue;
			const __m256 p = _mm256_add_ps(_mm256_loadu_ps(pr + j), v);
			_mm256_storeu_ps(pr + j, p);
			const __m256 nv = _mm256_max_ps(p, z);
			const __m256 dv = _mm256_sub_ps(nv, _mm256_loadu_ps(o + j));
			_mm256_storeu_ps(o + j, nv);
			_mm256_storeu_ps(dr + j, dv);
			unsigned m = _mm256_movemask_ps(_mm256_cmp_ps(dv, z, _CMP_NEQ_UQ));
			while (m) {
				idx[n++] = j + __builtin_ctz(m);
				m &= m - 1;
			}
		}
		for (; j < size; j++) relu_one(dr, pr, o, j, idx, &n);
		ptr[r + 1] = n;
	}
	return n;
}

// list16 appends to idx[*n] the indices j.. of the lanes set in m:
// compressed in a register, written with a masked store (a compressing
// store to memory is slow on AMD).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline)) static inline void
list16(__mmask16 m, int j, int *idx, int *n) {
	if (!m) return;
	const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const __m512i c = _mm512_maskz_compress_epi32(m, _mm512_add_epi32(iota, _mm512_set1_epi32(j)));
	const int k = __builtin_popcount(m);
	_mm512_mask_storeu_epi32(idx + *n, (__mmask16)((1u << k) - 1), c);
	*n += k;
}

// relu_512 is relu_avx sixteen entries at a time, touching only the
// entries that change (relu_avx adds zero to the others: the same values).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static int
relu_512(int na, const long *rows, int size, float *d, float *pre, float *out, int *idx, int *ptr) {
	int n = 0;
	ptr[0] = 0;
	const __m512 z = _mm512_setzero_ps();
	for (int r = 0; r < na; r++) {
		float *dr = d + (size_t)r * size;
		float *pr = pre + (size_t)rows[r] * size;
		float *o = out + (size_t)rows[r] * size;
		for (int j = 0; j < size; j += 16) {
			const __mmask16 in = size - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (size - j)) - 1);
			const __m512 v = _mm512_maskz_loadu_ps(in, dr + j);
			const __mmask16 m = _mm512_mask_cmp_ps_mask(in, v, z, _CMP_NEQ_UQ);
			if (!m) continue;
			const __m512 p = _mm512_add_ps(_mm512_maskz_loadu_ps(m, pr + j), v);
			_mm512_mask_storeu_ps(pr + j, m, p);
			const __m512 nv = _mm512_max_ps(p, z);
			const __m512 dv = _mm512_sub_ps(nv, _mm512_maskz_loadu_ps(m, o + j));
			_mm512_mask_storeu_ps(o + j, m, nv);
			_mm512_mask_storeu_ps(dr + j, m, dv);
			list16(_mm512_mask_cmp_ps_mask(m, dv, z, _CMP_NEQ_UQ), j, idx, &n);
		}
		ptr[r + 1] = n;
	}
	return n;
}

int bp_relu_apply(int na, const long *rows, int size, float *d, float *pre,
                  float *out, int *idx, int *ptr, int set) {
	switch (set) {
	case 2:
		return relu_512(na, rows, size, d, pre, out, idx, ptr);
	case 1:
		return relu_avx(na, rows, size, d, pre, out, idx, ptr);
	}
	return relu_plain(na, rows, size, d, pre, out, idx, ptr);
}

// bp_add_index adds d's rows to the state rows and lists the non-zero
// entries of each row of d.
static int add_index_plain(int na, const long *rows, int size, const float *d, float *state, int *idx, int *ptr) {
	int n = 0;
	ptr[0] = 0;
	for (int r = 0; r < na; r++) {
		const float *dr = d + (size_t)r * size;
		float *s = state ? state + (size_t)rows[r] * size : 0;
		for (int j = 0; j < size; j++) {
			if (dr[j] == 0) continue;
			if (s) s[j] += dr[j];
			idx[n++] = j;
		}
		ptr[r + 1] = n;
	}
	return n;
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static int
add_index_512(int na, const long *rows, int size, const float *d, float *state, int *idx, int *ptr) {
	int n = 0;
	ptr[0] = 0;
	const __m512 z = _mm512_setzero_ps();
	for (int r = 0; r < na; r++) {
		const float *dr = d + (size_t)r * size;
		float *s = state ? state + (size_t)rows[r] * size : 0;
		for (int j = 0; j < size; j += 16) {
			const __mmask16 in = size - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (size - j)) - 1);
			const __m512 v = _mm512_maskz_loadu_ps(in, dr + j);
			const __mmask16 m = _mm512_mask_cmp_ps_mask(in, v, z, _CMP_NEQ_UQ);
			if (!m) continue;
			if (s) _mm512_mask_storeu_ps(s + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, s + j), v));
			list16(m, j, idx, &n);
		}
		ptr[r + 1] = n;
	}
	return n;
}

int bp_add_index(int na, const long *rows, int size, const float *d,
                 float *state, int *idx, int *ptr, int set) {
	if (set == 2) return add_index_512(na, rows, size, d, state, idx, ptr);
	return add_index_plain(na, rows, size, d, state, idx, ptr);
}

// bp_add_rows adds n values of b to a.
void bp_add_rows(float *a, const float *b, long n) {
	for (long j = 0; j < n; j++) a[j] += b[j];
}

// bp_relu_from sets, for the state rows rows[r], out to max(src, 0) (NaN
// kept), d to the change of out and lists the moved entries like
// bp_add_index.
int bp_relu_from(int na, const long *rows, int size, const float *src, float *out, float *d, int *idx, int *ptr) {
	for (int r = 0; r < na; r++) {
		const float *sr = src + (size_t)rows[r] * size;
		float *o = out + (size_t)rows[r] * size;
		float *dr = d + (size_t)r * size;
		for (int j = 0; j < size; j++) {
			const float v = sr[j];
			const float nv = v != v ? v : (v > 0 ? v : 0);
			dr[j] = nv - o[j];
			o[j] = nv;
		}
	}
	return bp_add_index(na, rows, size, d, 0, idx, ptr, bp_isa());
}

// topn_insert adds z[j] to the m (at most k) values kept in val, largest
// first, equal values in index order, and returns the new count.
static inline int topn_insert(float v, int j, int m, int k, int *idx, float *val) {
	int p = m < k ? m : k - 1;
	while (p > 0 && val[p - 1] < v) {
		if (p < k) {
			val[p] = val[p - 1];
			idx[p] = idx[p - 1];
		}
		p--;
	}
	val[p] = v;
	idx[p] = j;
	return m < k ? m + 1 : m;
}

// topn_scan_512 is bp_topn testing 16 values at once against the smallest
// kept one: !(v <= smallest), as the scalar test (NaN gets in), lane by lane
// in index order, so the result is the same.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static int
topn_scan_512(const float *z, int n, int k, int *idx, float *val) {
	int m = 0, j = 0;
	for (; j < n && m < k; j++) m = topn_insert(z[j], j, m, k, idx, val);
	for (; j + 16 <= n; j += 16) {
		const __m512 v = _mm512_loadu_ps(z + j);
		__mmask16 in = _mm512_cmp_ps_mask(v, _mm512_set1_ps(val[k - 1]), _CMP_NLE_UQ);
		while (in) {
			const int b = __builtin_ctz(in);
			m = topn_insert(z[j + b], j + b, m, k, idx, val);
			// The smallest kept value rose: test the later lanes again.
			in = _mm512_cmp_ps_mask(v, _mm512_set1_ps(val[k - 1]), _CMP_NLE_UQ) & (__mmask16)(~0u << (b + 1));
		}
	}
	for (; j < n; j++)
		if (!(z[j] <= val[k - 1])) m = topn_insert(z[j], j, m, k, idx, val);
	return m;
}

// topn_512 is bp_topn in two passes. The maxima of the 16 lanes over z's
// whole vectors are 16 of its values, so their k-th largest, T, is at most
// z's k-th largest: only values >= T can be among the k largest. Those few
// are then inserted in index order, as by the scan, with the same result;
// the scan's repeated insertions into the kept values (every value larger
// than the smallest kept, about k ln(n/k) of them) were most of its time.
// With a NaN, whose place depends on the order of insertion, it scans.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static int
topn_512(const float *z, int n, int k, int *idx, float *val) {
	if (k > 16 || n < 32) return topn_scan_512(z, n, k, idx, val);
	__m512 mx = _mm512_loadu_ps(z);
	__mmask16 nan = _mm512_cmp_ps_mask(mx, mx, _CMP_UNORD_Q);
	int j = 16;
	for (; j + 16 <= n; j += 16) {
		const __m512 v = _mm512_loadu_ps(z + j);
		nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
		mx = _mm512_max_ps(mx, v);
	}
	for (int i = j; i < n; i++)
		if (z[i] != z[i]) nan = 1;
	if (nan) return topn_scan_512(z, n, k, idx, val);
	float lane[16], tv[16];
	int ti[16], m = 0;
	_mm512_storeu_ps(lane, mx);
	for (int i = 0; i < 16; i++)
		if (!(m == k && lane[i] <= tv[k - 1])) m = topn_insert(lane[i], i, m, k, ti, tv);
	const float T = tv[k - 1];
	const __m512 t = _mm512_set1_ps(T);
	m = 0;
	for (j = 0; j + 16 <= n; j += 16) {
		for (__mmask16 in = _mm512_cmp_ps_mask(_mm512_loadu_ps(z + j), t, _CMP_GE_OQ); in; in &= in - 1) {
			const int b = __builtin_ctz(in);
			if (!(m == k && z[j + b] <= val[k - 1])) m = topn_insert(z[j + b], j + b, m, k, idx, val);
		}
	}
	for (; j < n; j++)
		if (z[j] >= T && !(m == k && z[j] <= val[k - 1])) m = topn_insert(z[j], j, m, k, idx, val);
	return m;
}

// bp_topn fills idx, val with the k largest values of z (largest first,
// equal values in index order) and returns how many it filled.
int bp_topn(const float *z, int n, int k, int *idx, float *val) {
	if (k > 0 && bp_isa() == 2) return topn_512(z, n, k, idx, val);
	int m = 0;
	for (int j = 0; j < n; j++) {
		if (m == k && z[j] <= val[k - 1]) continue;
		m = topn_insert(z[j], j, m, k, idx, val);
	}
	return m;
}

// sub_norm2 sets tmp = a - b and returns |a - b|^2. Always inlined, it is
// compiled for its caller's target: on the AVX2+FMA path each square is
// added with a fused multiply-add, on the plain path it is not.
__attribute__((always_inline)) static inline double
sub_norm2(int hdim, const float *a, const float *b, float *tmp) {
	double d2 = 0;
	for (int i = 0; i < hdim; i++) {
		tmp[i] = a[i] - b[i];
		d2 += (double)tmp[i] * tmp[i];
	}
	return d2;
}

// bp_top_moves sets dv[t] = wt[top[t]] . (a - b) for the t tracked classes
// and returns |a - b|^2.
__attribute__((target("avx2,fma"))) static double
moves_avx(int hdim, const float *a, const float *b, const float *wt,
          const int *top, int t, float *dv, float *tmp) {
	const double d2 = sub_norm2(hdim, a, b, tmp);
	for (int k = 0; k < t; k++) {
		const float *w = wt + (size_t)top[k] * hdim;
		__m256 s = _mm256_setzero_ps();
		int i = 0;
		for (; i + 8 <= hdim; i += 8)
			s = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(tmp + i), s);
		float buf[8];
		_mm256_storeu_ps(buf, s);
		float r = buf[0] + buf[1] + buf[2] + buf[3] + buf[4] + buf[5] + buf[6] + buf[7];
		for (; i < hdim; i++) r += w[i] * tmp[i];
		dv[k] = r;
	}
	return d2;
}

static double moves_plain(int hdim, const float *a, const float *b, const float *wt,
                          const int *top, int t, float *dv, float *tmp) {
	const double d2 = sub_norm2(hdim, a, b, tmp);
	for (int k = 0; k < t; k++) {
		const float *w = wt + (size_t)top[k] * hdim;
		float r = 0;
		for (int i = 0; i < hdim; i++) r += w[i] * tmp[i];
		dv[k] = r;
	}
	return d2;
}

// moves_512 is moves_avx sixteen lanes wide, |a - b|^2 summed in eight
// double lanes instead of one chain (the square of a float difference is
// exact in double; only the order of the sum differs).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static double
moves_512(int hdim, const float *a, const float *b, const float *wt, const int *top, int t, float *dv,
          float *tmp) {
	__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
	int i = 0;
	for (; i + 16 <= hdim; i += 16) {
		const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
		_mm512_storeu_ps(tmp + i, d);
		const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
		const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
		s0 = _mm512_fmadd_pd(lo, lo, s0);
		s1 = _mm512_fmadd_pd(hi, hi, s1);
	}
	double d2 = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
	for (; i < hdim; i++) {
		tmp[i] = a[i] - b[i];
		d2 += (double)tmp[i] * tmp[i];
	}
	for (int k = 0; k < t; k++) {
		const float *w = wt + (size_t)top[k] * hdim;
		__m512 acc = _mm512_setzero_ps();
		int j = 0;
		for (; j + 16 <= hdim; j += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(tmp + j), acc);
		if (j < hdim) {
			const __mmask16 m = (__mmask16)((1u << (hdim - j)) - 1);
			acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + j), _mm512_maskz_loadu_ps(m, tmp + j), acc);
		}
		dv[k] = _mm512_reduce_add_ps(acc);
	}
	return d2;
}

double bp_top_moves(int hdim, const float *a, const float *b, const float *wt,
                    const int *top, int t, float *dv, float *tmp) {
	switch (bp_isa()) {
	case 2:
		return moves_512(hdim, a, b, wt, top, t, dv, tmp);
	case 1:
		return moves_avx(hdim, a, b, wt, top, t, dv, tmp);
	}
	return moves_plain(hdim, a, b, wt, top, t, dv, tmp);
}

// raw_value is stored value (c, p) of image i (C channels of HW pixels,
// channels-first when cf) of uint8 (kind 0), float32 (1) or float64 (2)
// values: exactly, as a double.
static inline double raw_value(const void *src, int kind, int i, int c, int p, int C, int HW, int cf) {
	const size_t s = (size_t)i * C * HW + (cf ? (size_t)c * HW + p : (size_t)p * C + c);
	switch (kind) {
	case 0: return ((const unsigned char *)src)[s];
	case 1: return ((const float *)src)[s];
	}
	return ((const double *)src)[s];
}

// narrow_f64_512 is bp_narrow's loop on m float64 values stored in dst's
// order, eight at a time: the same test (an integer 0..255, by truncation)
// and the same bytes. A twentieth of fine-tuning's run went to the plain
// loop on the lab's float64 sets.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static int
narrow_f64_512(const double *s, size_t m, unsigned char *d) {
	const __m512d lo = _mm512_setzero_pd(), hi = _mm512_set1_pd(255);
	size_t i = 0;
	for (; i + 8 <= m; i += 8) {
		const __m512d v = _mm512_loadu_pd(s + i);
		const __m512d t = _mm512_roundscale_pd(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
		const __mmask8 ok = _mm512_cmp_pd_mask(v, lo, _CMP_GE_OQ) & _mm512_cmp_pd_mask(v, hi, _CMP_LE_OQ) &
		                    _mm512_cmp_pd_mask(v, t, _CMP_EQ_OQ);
		if (ok != 0xFF) return 0;
		_mm_storel_epi64((__m128i *)(d + i), _mm256_cvtepi32_epi8(_mm512_cvttpd_epi32(v)));
	}
	for (; i < m; i++) {
		const double v = s[i];
		if (!(v >= 0 && v <= 255) || v != (double)(int)v) return 0;
		d[i] = (unsigned char)v;
	}
	return 1;
}

// narrow_cf3_512 is bp_narrow's loop on n channels-first 3-channel images
// of float64 (the lab's sets): each plane tested and narrowed eight values
// at a time, the bytes interleaved.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static int
narrow_cf3_512(const double *s, int n, int HW, unsigned char *d) {
	const __m512d lo = _mm512_setzero_pd(), hi = _mm512_set1_pd(255);
	for (long i = 0; i < n; i++) {
		const double *pl = s + i * 3 * HW;
		unsigned char *o = d + i * 3 * HW;
		int p = 0;
		for (; p + 8 <= HW; p += 8) {
			unsigned char b[3][16];
			for (int c = 0; c < 3; c++) {
				const __m512d v = _mm512_loadu_pd(pl + (long)c * HW + p);
				const __m512d t = _mm512_roundscale_pd(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
				const __mmask8 ok = _mm512_cmp_pd_mask(v, lo, _CMP_GE_OQ) & _mm512_cmp_pd_mask(v, hi, _CMP_LE_OQ) &
				                    _mm512_cmp_pd_mask(v, t, _CMP_EQ_OQ);
				if (ok != 0xFF) return 0;
				_mm_storeu_si128((__m128i *)b[c], _mm256_cvtepi32_epi8(_mm512_cvttpd_epi32(v)));
			}
			for (int k = 0; k < 8; k++) {
				o[3 * (p + k)] = b[0][k];
				o[3 * (p + k) + 1] = b[1][k];
				o[3 * (p + k) + 2] = b[2][k];
			}
		}
		for (; p < HW; p++)
			for (int c = 0; c < 3; c++) {
				const double v = pl[(long)c * HW + p];
				if (!(v >= 0 && v <= 255) || v != (double)(int)v) return 0;
				o[3 * p + c] = (unsigned char)v;
			}
	}
	return 1;
}

// bp_narrow copies n images stored as bp_convert_isa's src into NHWC bytes
// when every pixel is an integer 0..255, and returns 1; it returns 0 (dst
// then partly written) at the first that is not (NaN and infinities are
// not).
int bp_narrow(const void *src, int kind, int n, int C, int HW, int cf, unsigned char *dst) {
	const size_t sz = (size_t)C * HW;
	if (kind == 0 && (!cf || C == 1)) {
		memcpy(dst, src, sz * n);
		return 1;
	}
	if (kind == 2 && (!cf || C == 1) && bp_isa() == 2) return narrow_f64_512(src, sz * n, dst);
	if (kind == 2 && cf && C == 3 && bp_isa() == 2) return narrow_cf3_512(src, n, HW, dst);
	for (int i = 0; i < n; i++) {
		unsigned char *o = dst + (size_t)i * sz;
		for (int c = 0; c < C; c++) {
			for (int p = 0; p < HW; p++) {
				const double v = raw_value(src, kind, i, c, p, C, HW, cf);
				if (!(v >= 0 && v <= 255) || v != (double)(int)v) return 0;
				o[(size_t)p * C + c] = (unsigned char)v;
			}
		}
	}
	return 1;
}

// convert3_512 is bp_convert_isa's plain loop on one channels-first 3-channel image of
// float32 (kind 1) or float64 (kind 2) on 16 pixels at a time: the same
// conversions and products, so the same bits, with the three planes
// interleaved in registers. It returns whether every value is finite.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static int
convert3_512(const void *src, int kind, long HW, float scale, float *o) {
	int a1[16], b1[16], a2[16], b2[16], a3[16], b3[16]; // the interleaving permutes
	for (int j = 0; j < 16; j++) {
		// lane j of output vector k is pixel (16k+j)/3's channel (16k+j)%3:
		// channels 0 and 1 come from the first permute, 2 from the second.
		int *first[3] = {a1, a2, a3}, *second[3] = {b1, b2, b3};
		for (int k = 0; k < 3; k++) {
			const int g = 16 * k + j, p = g / 3, c = g % 3;
			first[k][j] = c == 1 ? 16 + p : p;
			second[k][j] = c == 2 ? 16 + p : j;
		}
	}
	const __m512i i1[3] = {_mm512_loadu_si512(a1), _mm512_loadu_si512(a2), _mm512_loadu_si512(a3)};
	const __m512i i2[3] = {_mm512_loadu_si512(b1), _mm512_loadu_si512(b2), _mm512_loadu_si512(b3)};
	const __m512 sc = _mm512_set1_ps(scale), zero = _mm512_setzero_ps();
	__mmask16 finite = 0xFFFF;
	for (long p = 0; p < HW; p += 16) {
		const int left = HW - p < 16 ? (int)(HW - p) : 16;
		const __mmask16 m = left == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
		__m512 v[3];
		for (int c = 0; c < 3; c++) {
			if (kind == 1) {
				v[c] = _mm512_maskz_loadu_ps(m, (const float *)src + c * HW + p);
			} else {
				const double *d = (const double *)src + c * HW + p;
				const __m256 lo = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)m, d));
				const __m256 hi = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m >> 8), d + 8));
				v[c] = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
			}
			// v - v is 0 for finite values (masked lanes are 0).
			finite &= _mm512_cmp_ps_mask(_mm512_sub_ps(v[c], v[c]), zero, _CMP_EQ_OQ);
			v[c] = _mm512_mul_ps(v[c], sc);
		}
		const int n = 3 * left; // floats to store
		float *d = o + 3 * p;
		for (int k = 0; k < 3; k++) {
			const int rest = n - 16 * k;
			if (rest <= 0) break;
			const __mmask16 sm = rest >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rest) - 1);
			const __m512 t = _mm512_permutex2var_ps(v[0], i1[k], v[1]);
			_mm512_mask_storeu_ps(d + 16 * k, sm, _mm512_permutex2var_ps(t, i2[k], v[2]));
		}
	}
	return finite == 0xFFFF;
}

// bp_convert_isa turns n images stored as uint8 (kind 0), float32 (1) or
// float64 (2), channels-first or last, into NHWC float32 times scale, on
// kernel set isa (2: AVX-512 for channels-first RGB floats, else plain C;
// tests compare them). It returns the index of the first image holding a
// non-finite value, or -1.
int bp_convert_isa(const void *src, int kind, int n, int C, int HW, int cf,
                   float scale, float *dst, int isa) {
	const int sz = C * HW;
	int bad = -1;
	if (isa == 2 && cf && C == 3 && kind >= 1) {
		const size_t es = kind == 1 ? sizeof(float) : sizeof(double);
		for (int i = 0; i < n; i++)
			if (!convert3_512((const char *)src + (size_t)i * sz * es, kind, HW, scale, dst + (size_t)i * sz) && bad < 0)
				bad = i;
		return bad;
	}
	for (int i = 0; i < n; i++) {
		float *o = dst + (size_t)i * sz;
		int finite = 1;
		for (int c = 0; c < C; c++) {
			for (int p = 0; p < HW; p++) {
				const float v = (float)raw_value(src, kind, i, c, p, C, HW, cf);
				finite &= (v - v == 0);
				o[(size_t)p * C + c] = v * scale;
			}
		}
		if (!finite && bad < 0) bad = i;
	}
	return bad;
}

// Settling a dense classifier's top logits from bfloat16 products.
//
// A recount needs the classifier's m largest logits exactly (bp_conv2d's
// bits: each logit its bias, then one FMA per input in order) and, for a
// labelled sample, the label's. A first pass on bfloat16 copies of the
// weights and inputs (vdpbf16ps: two products a lane per instruction, and
// half the weights' bytes) gives each logit a_j to within E_j, a bound
// from the weights' and the inputs' magnitudes; only the classes whose
// upper bound a_j + E_j reaches the m-th largest lower bound a_i - E_i
// can be among the m largest (every class whose exact logit reaches the
// m-th largest does), and only those get the exact chain. A row it cannot
// settle (a non-finite input, values near overflow, more than LB_MAXC
// classes reaching the first threshold) is left to the full product.

#define LB_BLK 64   // classes a block of the packed weights
#define LB_ROWS 6   // rows a tile of the first pass
#define LB_MAXC 256 // classes a row at most whose upper bound reaches T (lb_row)

// bf16 rounds a finite float to the nearest bfloat16, ties to even.
static inline unsigned bf16(float f) {
	unsigned u;
	memcpy(&u, &f, 4);
	return (u + 0x7FFF + ((u >> 16) & 1)) >> 16;
}

// bp_bf16_pack packs w (hdim rows of k weights, as a Dense kernel) for
// bp_logits_top: per block of 64 classes, per pair of inputs, 64 words of
// two bfloat16 weights (the pair's first input in the low half); zeros
// past k and hdim. out holds bp_bf16_packed(hdim, k) words.
long bp_bf16_packed(int hdim, int k) { return (long)((k + LB_BLK - 1) / LB_BLK) * ((hdim + 1) / 2) * LB_BLK; }

void bp_bf16_pack(const float *w, int hdim, int k, unsigned *out) {
	const int hp = (hdim + 1) / 2, nblk = (k + LB_BLK - 1) / LB_BLK;
	for (int b = 0; b < nblk; b++)
		for (int p = 0; p < hp; p++)
			for (int l = 0; l < LB_BLK; l++) {
				const int j = b * LB_BLK + l;
				unsigned lo = 0, hi = 0;
				if (j < k) {
					lo = bf16(w[(long)(2 * p) * k + j]);
					if (2 * p + 1 < hdim) hi = bf16(w[(long)(2 * p + 1) * k + j]);
				}
				out[((long)b * hp + p) * LB_BLK + l] = lo | hi << 16;
			}
}

int bp_have_bf16(void) { return bp_isa() == 2 && __builtin_cpu_supports("avx512bf16"); }

#define TBF __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

// lb_tile sets, for LB_ROWS rows of paired inputs xp (hp words a row),
// the lower and upper bounds a_j -+ E_j of every logit, lo[r][j] and
// hi[r][j] (ld apart), a_j the bfloat16 approximation and E_j = al[r] *
// nrm[j] + be * absb[j] + c[r] its error bound (lb_row), and mx[r] the
// lanes' maxima of the row's lower bounds (-inf for lanes past k).
TBF static void lb_tile(const unsigned *xp, int hp, const unsigned *wp, const float *bias, int k,
                        const float *nrm, const float *absb, const float *al, const float *c, float be,
                        float *lo, float *hi, int ld, __m512 *mx) {
	const int nblk = (k + LB_BLK - 1) / LB_BLK;
#pragma GCC unroll 6
	for (int r = 0; r < LB_ROWS; r++) mx[r] = _mm512_set1_ps(-__builtin_inff());
	for (int b = 0; b < nblk; b++) {
		__m512 acc[LB_ROWS][4];
		__mmask16 mk[4];
#pragma GCC unroll 4
		for (int v = 0; v < 4; v++) {
			const int j = b * LB_BLK + 16 * v;
			const int left = k - j;
			mk[v] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
			const __m512 bv = _mm512_maskz_loadu_ps(mk[v], bias + j);
#pragma GCC unroll 6
			for (int r = 0; r < LB_ROWS; r++) acc[r][v] = bv;
		}
		const unsigned *wb = wp + (long)b * hp * LB_BLK;
		for (int p = 0; p < hp; p++, wb += LB_BLK) {
			__m512bh w[4];
#pragma GCC unroll 4
			for (int v = 0; v < 4; v++) w[v] = (__m512bh)_mm512_loadu_si512(wb + 16 * v);
#pragma GCC unroll 6
			for (int r = 0; r < LB_ROWS; r++) {
				const __m512bh x = (__m512bh)_mm512_set1_epi32((int)xp[r * hp + p]);
#pragma GCC unroll 4
				for (int v = 0; v < 4; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], w[v], x);
			}
		}
#pragma GCC unroll 4
		for (int v = 0; v < 4; v++) {
			const int j = b * LB_BLK + 16 * v;
			const __m512 n = _mm512_maskz_loadu_ps(mk[v], nrm + j), bb = _mm512_mul_ps(_mm512_set1_ps(be), _mm512_maskz_loadu_ps(mk[v], absb + j));
#pragma GCC unroll 6
			for (int r = 0; r < LB_ROWS; r++) {
				const __m512 e = _mm512_fmadd_ps(_mm512_set1_ps(al[r]), n, _mm512_add_ps(bb, _mm512_set1_ps(c[r])));
				const __m512 l = _mm512_sub_ps(acc[r][v], e);
				_mm512_storeu_ps(lo + (long)r * ld + j, l);
				_mm512_storeu_ps(hi + (long)r * ld + j, _mm512_add_ps(acc[r][v], e));
				mx[r] = _mm512_mask_max_ps(mx[r], mk[v], mx[r], l);
			}
		}
	}
}

// tr16 transposes 16 rows of 16 floats: r[i] lane j becomes r[j] lane i.
TBF static inline void tr16(__m512 r[16]) {
	__m512 t[16];
#pragma GCC unroll 8
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
	// r[4i+j], 128-bit lane L: rows 4i..4i+3 of column 4L+j
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++) {
		r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
		r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
		r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
		r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
	}
#pragma GCC unroll 4
	for (int j = 0; j < 4; j++) {
		t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
		t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
		t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
		t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
	}
#pragma GCC unroll 4
	for (int j = 0; j < 4; j++) {
		r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
		r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
		r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
		r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
	}
}

// lb_exact sets ex[i] to the exact logit of class cand[i], i < nc: its
// bias, then fma(x[i], w[i][j], .) for i in order, as bp_conv2d's kernels.
// wt holds each class's hdim weights together: sixteen classes' rows,
// transposed 16 inputs at a time, feed one vector of chains (a gather per
// input, from classes far apart, was slower than the full product; eight
// scalar chains side by side took twice as long for the usual ten).
TBF static void lb_exact(const float *x, int hdim, const float *wt, const float *bias,
                         const int *cand, int nc, float *ex) {
	for (int g = 0; g < nc; g += 16) {
		const int cnt = nc - g < 16 ? nc - g : 16;
		const __mmask16 mc = (__mmask16)((1u << cnt) - 1);
		const float *p[16];
		float b[16];
#pragma GCC unroll 16
		for (int r = 0; r < 16; r++) {
			const int j = cand[g + (r < cnt ? r : cnt - 1)]; // a short group repeats its last class
			p[r] = wt + (long)j * hdim;
			b[r] = bias[j];
		}
		__m512 acc = _mm512_loadu_ps(b);
		for (int i0 = 0; i0 < hdim; i0 += 16) {
			const int kn = hdim - i0 < 16 ? hdim - i0 : 16;
			const __mmask16 mk = (__mmask16)((1u << kn) - 1);
			__m512 v[16];
#pragma GCC unroll 16
			for (int r = 0; r < 16; r++) v[r] = _mm512_maskz_loadu_ps(mk, p[r] + i0);
			tr16(v);
			if (kn == 16) {
#pragma GCC unroll 16
				for (int i = 0; i < 16; i++) acc = _mm512_fmadd_ps(_mm512_set1_ps(x[i0 + i]), v[i], acc);
			} else {
				for (int i = 0; i < kn; i++) acc = _mm512_fmadd_ps(_mm512_set1_ps(x[i0 + i]), v[i], acc);
			}
		}
		_mm512_mask_storeu_ps(ex + g, mc, acc);
	}
}

// lb_row settles one row from the bounds of its logits, lo and hi (k
// values each; mx their lanes' maxima of lo): the m largest exact logits
// into idx, val (largest first, equal values in class order, as bp_topn),
// the label's into *zy (label >= 0). It returns 0 when the row needs the
// full product.
TBF static int lb_row(const float *x, int hdim, int k, const float *wt, const float *bias, int m,
                      const float *lo, const float *hi, __m512 mx, int label,
                      int *idx, float *val, float *zy, int *cand, float *ex) {
	// Every class whose exact logit reaches the m-th largest has hi_j at
	// least L, the m-th largest lo_i. The lanes' maxima are lo values of
	// 16 classes: their m-th largest, T, is at most L. One pass keeps the
	// largest lo values that reach T, and the classes whose hi does.
	float lane[16], top[16];
	_mm512_storeu_ps(lane, mx);
	int got = 0;
	for (int i = 0; i < 16; i++)
		if (!(got == m && lane[i] <= top[m - 1])) got = topn_insert(lane[i], i, got, m, idx, top);
	if (got < m || !(top[m - 1] > -__builtin_inff())) return 0;
	const __m512 t = _mm512_set1_ps(top[m - 1]);
	const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	got = 0;
	int nc = 0;
	for (int j = 0; j < k; j += 16) {
		const __mmask16 mk = k - j >= 16 ? 0xFFFF : (__mmask16)((1u << (k - j)) - 1);
		const __m512 h = _mm512_maskz_loadu_ps(mk, hi + j);
		const __mmask16 in = _mm512_mask_cmp_ps_mask(mk, h, t, _CMP_GE_OQ);
		if (!in) continue; // then no lo_j reaches T either
		for (__mmask16 q = _mm512_mask_cmp_ps_mask(in, _mm512_loadu_ps(lo + j), t, _CMP_GE_OQ); q; q &= q - 1) {
			const float v = lo[j + __builtin_ctz(q)];
			if (!(got == m && v <= top[m - 1])) got = topn_insert(v, 0, got, m, idx, top);
		}
		const int cnt = __builtin_popcount(in);
		if (nc + cnt > LB_MAXC) return 0;
		// compressed in registers, written with masked stores (a
		// compressing store to memory is slow on AMD)
		_mm512_mask_storeu_epi32(cand + nc, (__mmask16)((1u << cnt) - 1),
		                         _mm512_maskz_compress_epi32(in, _mm512_add_epi32(_mm512_set1_epi32(j), iota)));
		_mm512_mask_storeu_ps(ex + nc, (__mmask16)((1u << cnt) - 1), _mm512_maskz_compress_ps(in, h));
		nc += cnt;
	}
	// Now top[m-1] is L: keep the classes whose hi reaches it.
	int w = 0;
	for (int i = 0; i < nc; i++)
		if (ex[i] >= top[m - 1]) cand[w++] = cand[i];
	nc = w;
	// The label among the candidates, in class order: a class below the
	// m-th largest changes nothing in the top m.
	int at = -1;
	if (label >= 0) {
		int p = 0;
		while (p < nc && cand[p] < label) p++;
		if (p == nc || cand[p] != label) {
			memmove(cand + p + 1, cand + p, sizeof(int) * (nc - p));
			cand[p] = label;
			nc++;
		}
		at = p;
	}
	lb_exact(x, hdim, wt, bias, cand, nc, ex);
	got = 0;
	for (int r = 0; r < nc; r++)
		if (!(got == m && ex[r] <= val[m - 1])) got = topn_insert(ex[r], cand[r], got, m, idx, val);
	if (got < m) return 0;
	if (at >= 0) *zy = ex[at];
	return 1;
}

// bp_logits_scratch is the floats of scratch bp_logits_top needs.
long bp_logits_scratch(int hdim, int k) {
	const int kpad = (k + LB_BLK - 1) / LB_BLK * LB_BLK;
	return 2L * LB_ROWS * kpad + (long)LB_ROWS * ((hdim + 1) / 2) + 2 * (LB_MAXC + 16);
}

// bp_logits_top settles n rows of x (hdim values each) of the classifier
// with weights wt (k rows of hdim: class j's at j*hdim), bias, packed wp
// (bp_bf16_pack), nrm[j] >= |w_j| and absb[j] = |bias[j]|, the largest of
// them maxnrm and maxabsb: row r's m largest logits go to idx, val[r*m...]
// and the label's to zy[r] (labels and zy NULL: no label), and ok[r] says
// whether the row was settled. It returns how many rows it settled.
TBF int bp_logits_top(int n, int hdim, int k, const float *x, const float *wt, const float *bias,
                      const unsigned *wp, const float *nrm, const float *absb, double maxnrm, double maxabsb,
                      int m, const long *labels,
                      int *idx, float *val, float *zy, unsigned char *ok, float *scratch) {
	if (m < 1 || m > 16 || k < m) {
		memset(ok, 0, n);
		return 0;
	}
	const int kpad = (k + LB_BLK - 1) / LB_BLK * LB_BLK, hp = (hdim + 1) / 2;
	float *lo = scratch, *hi = lo + (long)LB_ROWS * kpad;
	unsigned *xp = (unsigned *)(hi + (long)LB_ROWS * kpad);
	int *cand = (int *)(xp + LB_ROWS * hp);
	float *ex = (float *)(cand + LB_MAXC + 16); // room for a last compressed store
	// g: the float32 roundings of a chain of hdim+1 terms, and 4 more of
	// a_j's size for the roundings of E_j and a_j -+ E_j themselves.
	const double g = 1.05 * (hdim + 1) * 0x1p-24 + 0x1p-22, sub = 1.05 * sqrt((double)hdim) * 0x1p-126;
	int settled = 0;
	for (int r0 = 0; r0 < n; r0 += LB_ROWS) {
		const int rows = n - r0 < LB_ROWS ? n - r0 : LB_ROWS;
		float al[LB_ROWS], c[LB_ROWS];
		int fine[LB_ROWS];
		for (int r = 0; r < LB_ROWS; r++) {
			// Rounded to nearest, ties to even (subnormals to zero), as
			// bf16; a row with a non-finite input is given up.
			const float *xr = x + (long)(r0 + (r < rows ? r : 0)) * hdim;
			__m512d q0 = _mm512_setzero_pd(), q1 = _mm512_setzero_pd(); // |x|^2, in double: no underflow
			for (int i = 0; i < 2 * hp; i += 32) {
				const int left = hdim - i;
				const __mmask16 m0 = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
				const __mmask16 m1 = left >= 32 ? 0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
				const __m512 a = _mm512_maskz_loadu_ps(m0, xr + i), b = _mm512_maskz_loadu_ps(m1, xr + i + 16);
				const __m512d a0 = _mm512_cvtps_pd(_mm512_castps512_ps256(a)), a1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1));
				const __m512d b0 = _mm512_cvtps_pd(_mm512_castps512_ps256(b)), b1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(b, 1));
				q0 = _mm512_fmadd_pd(a0, a0, _mm512_fmadd_pd(b0, b0, q0));
				q1 = _mm512_fmadd_pd(a1, a1, _mm512_fmadd_pd(b1, b1, q1));
				const int words = hp - i / 2 < 16 ? hp - i / 2 : 16;
				_mm512_mask_storeu_epi32(xp + r * hp + i / 2, (__mmask16)((1u << words) - 1), (__m512i)_mm512_cvtne2ps_pbh(b, a));
			}
			// |a_j - z_j| <= E_j = al*|w_j| + be*|b_j| + c, where
			// sum_i |w_ji x_i| <= |w_j||x|: the bfloat16 roundings of
			// weight and input (2^-8 each, relative); both sums' float32
			// roundings (at most hdim+1 each, 2^-24 relative: g); inputs
			// flushed to zero below 2^-126 (sub) and products and sums
			// flushed or rounded there (hdim+2 of them); 2% slack for the
			// rounding of |x| and of al, be, c.
			const double xn = sqrt(_mm512_reduce_add_pd(q0) + _mm512_reduce_add_pd(q1));
			// No partial sum of either chain can overflow (a non-finite
			// input fails this too).
			fine[r] = xn * maxnrm + maxabsb < 1e37;
			al[r] = fine[r] ? (float)(1.02 * (xn * (0x1p-7 + 0x1p-16 + g) + sub)) : 0;
			c[r] = fine[r] ? (float)(1.02 * (sub * xn + (hdim + 2) * 0x1p-126)) : 0;
		}
		__m512 mx[LB_ROWS];
		lb_tile(xp, hp, wp, bias, k, nrm, absb, al, c, (float)(1.02 * g), lo, hi, kpad, mx);
		for (int r = 0; r < rows; r++) {
			const int row = r0 + r;
			ok[row] = fine[r] && lb_row(x + (long)row * hdim, hdim, k, wt, bias, m, lo + (long)r * kpad, hi + (long)r * kpad,
			                            mx[r], labels ? (int)labels[row] : -1, idx + (long)row * m, val + (long)row * m,
			                            labels ? zy + row : NULL, cand, ex);
			settled += ok[row];
		}
	}
	return settled;
}
