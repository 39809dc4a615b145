// Dense layers' training products on a batch held row-major: the forward
// product, the kernel's gradient and the input's gradient. Each output is
// one chain of fused multiply-adds in a fixed order, whatever the kernel
// set and however the caller cuts the work, so every set and any number of
// cores give the same bits (for finite values: which NaN comes out of
// NaN operands may differ).
#include <immintrin.h>
#include <math.h>

#define T512D __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define TAVXD __attribute__((target("avx2,fma")))

// A product tile is MR rows of the output by up to 16*NV columns.
enum { MR = 4, NVMAX = 5, PANEL = 16 * NVMAX };

// mm_plain sets out[r][j] = fma chain over i of A(r,i)*b[i][j], from zero,
// plus bias[j] when bias is set, for rows r0..r1 and columns j0..j1;
// A(r,i) = a[r*sar + i*sai]. fmaf rounds once, as the vector FMA.
#define MM_PLAIN(NAME, ATTR)                                                                      \
	ATTR static void NAME(const float *a, long sar, long sai, int L, const float *b, long ldb,     \
	                      const float *bias, int r0, int r1, int j0, int j1, float *out, long ldo) { \
		for (int r = r0; r < r1; r++)                                                             \
			for (int j = j0; j < j1; j++) {                                                       \
				float s = 0;                                                                      \
				for (int i = 0; i < L; i++) s = fmaf(a[r * sar + i * sai], b[(long)i * ldb + j], s); \
				out[(long)r * ldo + j] = bias ? s + bias[j] : s;                                  \
			}                                                                                     \
	}
MM_PLAIN(mm_plain, )

// mm_avx2 is mm on 8-lane vectors: tiles of MR rows by 16 columns.
TAVXD static void mm_avx2(const float *a, long sar, long sai, int L, const float *b, long ldb,
                          const float *bias, int r0, int r1, int j0, int j1, float *out, long ldo) {
	for (int j = j0; j < j1; j += 16) {
		const int nc = j1 - j < 16 ? j1 - j : 16;
		int mi[16];
		for (int l = 0; l < 16; l++) mi[l] = l < nc ? -1 : 0;
		const __m256i m0 = _mm256_loadu_si256((const __m256i *)mi), m1 = _mm256_loadu_si256((const __m256i *)(mi + 8));
		for (int r = r0; r < r1; r += MR) {
			const int mr = r1 - r < MR ? r1 - r : MR;
			const float *ar[MR];
			for (int q = 0; q < MR; q++) ar[q] = a + (long)(r + (q < mr ? q : 0)) * sar;
			__m256 acc[MR][2];
			for (int q = 0; q < MR; q++) acc[q][0] = acc[q][1] = _mm256_setzero_ps();
			const float *bj = b + j;
			for (int i = 0; i < L; i++, bj += ldb) {
				const __m256 b0 = _mm256_maskload_ps(bj, m0), b1 = _mm256_maskload_ps(bj + 8, m1);
				for (int q = 0; q < MR; q++) {
					const __m256 sv = _mm256_set1_ps(ar[q][i * sai]);
					acc[q][0] = _mm256_fmadd_ps(sv, b0, acc[q][0]);
					acc[q][1] = _mm256_fmadd_ps(sv, b1, acc[q][1]);
				}
			}
			for (int q = 0; q < mr; q++) {
				float *o = out + (long)(r + q) * ldo + j;
				__m256 y0 = acc[q][0], y1 = acc[q][1];
				if (bias) {
					y0 = _mm256_add_ps(y0, _mm256_maskload_ps(bias + j, m0));
					y1 = _mm256_add_ps(y1, _mm256_maskload_ps(bias + j + 8, m1));
				}
				_mm256_maskstore_ps(o, m0, y0);
				_mm256_maskstore_ps(o + 8, m1, y1);
			}
		}
	}
}

// mm_512 is one tile of mm: rows r..r+mr-1 (mr <= MR; the missing rows
// read row r and are not stored), columns j..j+ncols-1 in NV vectors, the
// last masked.
T512D __attribute__((always_inline)) static inline void
mm_512(const float *a, long sar, long sai, int L, const float *b, long ldb, const float *bias,
       int r, int mr, int j, int ncols, float *out, long ldo, const int NV) {
	const __mmask16 last = (__mmask16)(ncols - 16 * (NV - 1) >= 16 ? 0xFFFF : (1u << (ncols - 16 * (NV - 1))) - 1);
	const float *ar[MR];
	for (int q = 0; q < MR; q++) ar[q] = a + (long)(r + (q < mr ? q : 0)) * sar;
	__m512 acc[MR][NVMAX];
#pragma GCC unroll 4
	for (int q = 0; q < MR; q++)
#pragma GCC unroll 5
		for (int v = 0; v < NV; v++) acc[q][v] = _mm512_setzero_ps();
	const float *bj = b + j;
	for (int i = 0; i < L; i++, bj += ldb) {
		__m512 bv[NVMAX];
#pragma GCC unroll 5
		for (int v = 0; v < NV; v++)
			bv[v] = v < NV - 1 ? _mm512_loadu_ps(bj + 16 * v) : _mm512_maskz_loadu_ps(last, bj + 16 * v);
#pragma GCC unroll 4
		for (int q = 0; q < MR; q++) {
			const __m512 s = _mm512_set1_ps(ar[q][i * sai]);
#pragma GCC unroll 5
			for (int v = 0; v < NV; v++) acc[q][v] = _mm512_fmadd_ps(s, bv[v], acc[q][v]);
		}
	}
#pragma GCC unroll 4
	for (int q = 0; q < MR; q++) {
		if (q >= mr) break;
		float *o = out + (long)(r + q) * ldo + j;
#pragma GCC unroll 5
		for (int v = 0; v < NV; v++) {
			const __mmask16 m = v < NV - 1 ? (__mmask16)0xFFFF : last;
			__m512 y = acc[q][v];
			if (bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, bias + j + 16 * v));
			_mm512_mask_storeu_ps(o + 16 * v, m, y);
		}
	}
}

#define MM512(NV_)                                                                              \
	T512D static void mm_512_##NV_(const float *a, long sar, long sai, int L, const float *b,     \
	                               long ldb, const float *bias, int r, int mr, int j, int ncols, \
	                               float *out, long ldo) {                                       \
		mm_512(a, sar, sai, L, b, ldb, bias, r, mr, j, ncols, out, ldo, NV_);                     \
	}
MM512(1)
MM512(2)
MM512(3)
MM512(4)
MM512(5)

// bp_dense_mm computes rows r0..r1, columns j0..j1 of out (U columns) =
// A·b (+ bias): A(r,i) = a[r*sar + i*sai] for i < L, b is L x U row-major.
// Column panels of 80 outer, row tiles inner, so a panel of b is read from
// cache by every row tile.
void bp_dense_mm(const float *a, long sar, long sai, int L, const float *b, int U,
                 const float *bias, int r0, int r1, int j0, int j1, float *out, int isa) {
	if (isa == 0) {
		mm_plain(a, sar, sai, L, b, U, bias, r0, r1, j0, j1, out, U);
		return;
	}
	if (isa == 1) {
		mm_avx2(a, sar, sai, L, b, U, bias, r0, r1, j0, j1, out, U);
		return;
	}
	typedef void fn(const float *, long, long, int, const float *, long, const float *, int, int, int, int, float *, long);
	static fn *const tiles[NVMAX] = {mm_512_1, mm_512_2, mm_512_3, mm_512_4, mm_512_5};
	for (int j = j0; j < j1; j += PANEL) {
		const int ncols = j1 - j < PANEL ? j1 - j : PANEL;
		fn *f = tiles[(ncols + 15) / 16 - 1];
		for (int r = r0; r < r1; r += MR) f(a, sar, sai, L, b, U, bias, r, r1 - r < MR ? r1 - r : MR, j, ncols, out, U);
	}
}

// The input gradient's products are dot products along the rows of both
// operands: 16 lanes each summing the products of every 16th pair in order
// (an FMA chain from zero), then the lanes added as a tree, l and l+8,
// then l and l+4, l+2, l+1.
static inline float tree16(const float *s) {
	float t8[8], t4[4];
	for (int l = 0; l < 8; l++) t8[l] = s[l] + s[l + 8];
	for (int l = 0; l < 4; l++) t4[l] = t8[l] + t8[l + 4];
	return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

#define DOT_PLAIN(NAME, ATTR)                                                                \
	ATTR static void NAME(const float *a, const float *b, int L, int r0, int r1, int c0, int c1, \
	                      float *out, long ldo) {                                               \
		for (int r = r0; r < r1; r++)                                                           \
			for (int c = c0; c < c1; c++) {                                                     \
				float s[16] = {0};                                                              \
				for (int j = 0; j < L; j++)                                                     \
					s[j % 16] = fmaf(a[(long)r * L + j], b[(long)c * L + j], s[j % 16]);         \
				out[(long)r * ldo + c] = tree16(s);                                             \
			}                                                                                   \
	}
DOT_PLAIN(dot_plain, )

// dot_avx2 is the dot products on 8-lane vectors, a pair per sum (lanes
// 0-7 and 8-15), in tiles of 2 x 2.
TAVXD static void dot_avx2(const float *a, const float *b, int L, int r0, int r1, int c0, int c1,
                           float *out, long ldo) {
	for (int c = c0; c < c1; c += 2)
		for (int r = r0; r < r1; r += 2) {
			const int nr = r1 - r < 2 ? r1 - r : 2, nc = c1 - c < 2 ? c1 - c : 2;
			const float *ar[2] = {a + (long)r * L, a + (long)(r + nr - 1) * L};
			const float *br[2] = {b + (long)c * L, b + (long)(c + nc - 1) * L};
			__m256 acc[2][2][2];
			for (int p = 0; p < 2; p++)
				for (int q = 0; q < 2; q++) acc[p][q][0] = acc[p][q][1] = _mm256_setzero_ps();
			for (int j = 0; j < L; j += 16) {
				int mi[16];
				const int left = L - j;
				for (int l = 0; l < 16; l++) mi[l] = l < left ? -1 : 0;
				for (int h = 0; h < 2; h++) {
					const __m256i m = _mm256_loadu_si256((const __m256i *)(mi + 8 * h));
					const __m256 a0 = _mm256_maskload_ps(ar[0] + j + 8 * h, m), a1 = _mm256_maskload_ps(ar[1] + j + 8 * h, m);
					const __m256 b0 = _mm256_maskload_ps(br[0] + j + 8 * h, m), b1 = _mm256_maskload_ps(br[1] + j + 8 * h, m);
					const __m256 keep = _mm256_castsi256_ps(m);
					// Lanes past the end keep their sums, as in the plain loop.
					acc[0][0][h] = _mm256_blendv_ps(acc[0][0][h], _mm256_fmadd_ps(a0, b0, acc[0][0][h]), keep);
					acc[0][1][h] = _mm256_blendv_ps(acc[0][1][h], _mm256_fmadd_ps(a0, b1, acc[0][1][h]), keep);
					acc[1][0][h] = _mm256_blendv_ps(acc[1][0][h], _mm256_fmadd_ps(a1, b0, acc[1][0][h]), keep);
					acc[1][1][h] = _mm256_blendv_ps(acc[1][1][h], _mm256_fmadd_ps(a1, b1, acc[1][1][h]), keep);
				}
			}
			for (int p = 0; p < nr; p++)
				for (int q = 0; q < nc; q++) {
					float s[16];
					_mm256_storeu_ps(s, acc[p][q][0]);
					_mm256_storeu_ps(s + 8, acc[p][q][1]);
					out[(long)(r + p) * ldo + c + q] = tree16(s);
				}
		}
}

// hsum_512 is tree16 on a vector's lanes.
T512D static inline float hsum_512(__m512 v) {
	const __m256 t8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
	const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
	const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4)); // t4[0]+t4[2], t4[1]+t4[3]
	return _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps(t2, t2, 1)));
}

// dot_512 is a tile of MR rows of a by MR rows of b (rows past nr or nc
// read the tile's first row and are not stored).
T512D static void dot_512(const float *a, const float *b, int L, int r, int nr, int c, int nc,
                          float *out, long ldo) {
	const float *ar[MR], *br[MR];
	for (int q = 0; q < MR; q++) {
		ar[q] = a + (long)(r + (q < nr ? q : 0)) * L;
		br[q] = b + (long)(c + (q < nc ? q : 0)) * L;
	}
	__m512 acc[MR][MR];
#pragma GCC unroll 4
	for (int p = 0; p < MR; p++)
#pragma GCC unroll 4
		for (int q = 0; q < MR; q++) acc[p][q] = _mm512_setzero_ps();
	for (int j = 0; j < L; j += 16) {
		const __mmask16 m = L - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (L - j)) - 1);
		__m512 av[MR], bv[MR];
#pragma GCC unroll 4
		for (int q = 0; q < MR; q++) {
			av[q] = _mm512_maskz_loadu_ps(m, ar[q] + j);
			bv[q] = _mm512_maskz_loadu_ps(m, br[q] + j);
		}
		// Lanes past the end keep their sums (a masked FMA), as the plain
		// loop never touches them.
#pragma GCC unroll 4
		for (int p = 0; p < MR; p++)
#pragma GCC unroll 4
			for (int q = 0; q < MR; q++) acc[p][q] = _mm512_mask3_fmadd_ps(av[p], bv[q], acc[p][q], m);
	}
	// Constant bounds keep the sums in registers (a runtime index would
	// have the compiler store them all at every step).
#pragma GCC unroll 4
	for (int p = 0; p < MR; p++)
#pragma GCC unroll 4
		for (int q = 0; q < MR; q++)
			if (p < nr && q < nc) out[(long)(r + p) * ldo + c + q] = hsum_512(acc[p][q]);
}

// bp_dense_dot sets out[r][c] (ldo = C columns) for rows r0..r1 of a and
// columns c0..c1 (rows of b) to the dot product of a's row r and b's row c,
// both L long. The columns' tiles are outer: a tile of b's rows is read
// once while a's rows pass.
void bp_dense_dot(const float *a, const float *b, int L, int r0, int r1, int c0, int c1, int C,
                  float *out, int isa) {
	if (isa == 0) {
		dot_plain(a, b, L, r0, r1, c0, c1, out, C);
		return;
	}
	if (isa == 1) {
		dot_avx2(a, b, L, r0, r1, c0, c1, out, C);
		return;
	}
	for (int c = c0; c < c1; c += MR)
		for (int r = r0; r < r1; r += MR)
			dot_512(a, b, L, r, r1 - r < MR ? r1 - r : MR, c, c1 - c < MR ? c1 - c : MR, out, C);
}

// The softmax cross-entropy of logit rows, in double precision. exp is
// evaluated the same way on every path, so that every kernel set gives the
// same bits: x = n·ln2 + r with n = round(x/ln2) (two-part ln2, as fdlibm),
// e^r by its Taylor polynomial to degree 13 (Horner, FMAs; the remainder
// is under 1e-17 relative for |r| <= ln2/2), scaled by 2^n (one rounding).
// Sums run in 8 lanes (every 8th term in order) added as a tree.
static const double exp_c[14] = {
	1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
	1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0,
};
static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                    log2e = 1.44269504088896338700e+00, exp_min = -745.2;

// exp_neg is e^x for x <= 0 (NaN stays NaN).
static inline double exp_neg(double x) {
	if (x != x) return x;
	if (x < exp_min) x = exp_min;
	const double n = nearbyint(x * log2e);
	const double r = fma(-n, ln2_lo, fma(-n, ln2_hi, x));
	double p = exp_c[13];
	for (int i = 12; i >= 0; i--) p = fma(p, r, exp_c[i]);
	return scalbn(p, (int)n);
}

static inline double tree8(const double *s) {
	return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

// softmax_row_plain writes the softmax of z (k logits) into p and returns
// the cross-entropy against y. Contraction off: a build for a CPU with FMA
// must not fuse the loss's products and sums, which the vector path keeps
// apart.
__attribute__((optimize("fp-contract=off"))) static double softmax_row_plain(const float *z, const float *y, int k, double *p) {
	float m = z[0];
	for (int j = 1; j < k; j++) m = z[j] > m || z[j] != z[j] ? z[j] : m;
	double s[8] = {0};
	for (int j = 0; j < k; j++) {
		p[j] = exp_neg((double)z[j] - (double)m);
		s[j % 8] += p[j];
	}
	const double sum = tree8(s), lse = (double)m + log(sum);
	double loss = 0;
	for (int j = 0; j < k; j++) {
		p[j] /= sum;
		if (y[j] != 0) loss += (double)y[j] * (lse - (double)z[j]);
	}
	return loss;
}

T512D static inline __m512d exp_neg_512(__m512d x) {
	x = _mm512_max_pd(_mm512_set1_pd(exp_min), x); // max returns its second operand, x, for NaN
	const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	const __m512d r = _mm512_fmadd_pd(_mm512_sub_pd(_mm512_setzero_pd(), n), _mm512_set1_pd(ln2_lo),
	                                  _mm512_fmadd_pd(_mm512_sub_pd(_mm512_setzero_pd(), n), _mm512_set1_pd(ln2_hi), x));
	__m512d p = _mm512_set1_pd(exp_c[13]);
	for (int i = 12; i >= 0; i--) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(exp_c[i]));
	return _mm512_scalef_pd(p, n);
}

// Contraction off: the loss's products and sums round apart, as in the
// plain path.
T512D __attribute__((optimize("fp-contract=off"))) static double softmax_row_512(const float *z, const float *y, int k, double *p) {
	float m = z[0];
	for (int j = 1; j < k; j++) m = z[j] > m || z[j] != z[j] ? z[j] : m;
	const __m512d mv = _mm512_set1_pd((double)m);
	__m512d s = _mm512_setzero_pd();
	for (int j = 0; j < k; j += 8) {
		const __mmask8 t = k - j >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (k - j)) - 1);
		const __m512d e = exp_neg_512(_mm512_sub_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(t, z + j)), mv));
		_mm512_mask_storeu_pd(p + j, t, e);
		s = _mm512_mask_add_pd(s, t, s, e);
	}
	double sl[8];
	_mm512_storeu_pd(sl, s);
	const double sum = tree8(sl), lse = (double)m + log(sum);
	const __m512d sv = _mm512_set1_pd(sum);
	double loss = 0;
	for (int j = 0; j < k; j += 8) {
		const __mmask8 t = k - j >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (k - j)) - 1);
		_mm512_mask_storeu_pd(p + j, t, _mm512_div_pd(_mm512_maskz_loadu_pd(t, p + j), sv));
		const __mmask8 hot = _mm512_mask_cmp_ps_mask(t, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(t, y + j)),
		                                             _mm512_setzero_ps(), _CMP_NEQ_UQ);
		for (__mmask8 h = hot; h; h &= h - 1) { // the few non-zero targets, in order
			const int q = j + __builtin_ctz(h);
			loss += (double)y[q] * (lse - (double)z[q]);
		}
	}
	return loss;
}

// bp_softmax_xent writes the softmax of rows r0..r1 of z (k logits each)
// into p and each row's cross-entropy against the targets y into loss.
void bp_softmax_xent(const float *z, const float *y, int k, int r0, int r1, double *p, double *loss, int isa) {
	for (int r = r0; r < r1; r++) {
		const long o = (long)r * k;
		loss[r] = isa == 2 ? softmax_row_512(z + o, y + o, k, p + o) : softmax_row_plain(z + o, y + o, k, p + o);
	}
}
