// Kernels only training uses: the gradient of a 2x2/2 max pool over
// rectified values (the rectifier's included), column sums for bias
// gradients, and the Adam step.
#include <immintrin.h>
#include <string.h>

int bp_isa(void);

// colsum_512 is bp_colsum on 8 columns at a time: each column's sum is
// taken in the same order, so the bits are the same. Up to 64 columns at a
// time stay in registers over all the rows: a sum kept in memory would wait
// on its own store at every row.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void
colsum_512(const float *x, long rows, int c, double *acc) {
	for (int j0 = 0; j0 < c; j0 += 64) {
		const int nv = (c - j0 + 7) / 8 < 8 ? (c - j0 + 7) / 8 : 8;
		__mmask8 t[8];
		__m512d a[8];
		for (int v = 0; v < 8; v++) {
			const int left = c - j0 - 8 * v;
			t[v] = v >= nv ? 0 : left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1);
			a[v] = _mm512_maskz_loadu_pd(t[v], acc + j0 + 8 * v);
		}
		const float *r = x + j0;
#define COLSUM_ROWS(NV)                                                                            \
	for (long i = 0; i < rows; i++, r += c)                                                        \
		for (int v = 0; v < NV; v++)                                                               \
			a[v] = _mm512_add_pd(a[v], _mm512_cvtps_pd(_mm256_maskz_loadu_ps(t[v], r + 8 * v)));
		switch (nv) { // a constant count keeps a[] in registers
		case 1: COLSUM_ROWS(1) break;
		case 2: COLSUM_ROWS(2) break;
		case 3: COLSUM_ROWS(3) break;
		case 4: COLSUM_ROWS(4) break;
		case 5: COLSUM_ROWS(5) break;
		case 6: COLSUM_ROWS(6) break;
		case 7: COLSUM_ROWS(7) break;
		default: COLSUM_ROWS(8) break;
		}
#undef COLSUM_ROWS
		for (int v = 0; v < nv; v++) _mm512_mask_storeu_pd(acc + j0 + 8 * v, t[v], a[v]);
	}
}

// bp_colsum adds the sums of the columns of x (rows x c, row-major) to acc,
// in double precision, row after row; bp_colsum_isa on kernel set isa (2:
// AVX-512, else plain C), so that tests can compare the two.
void bp_colsum_isa(const float *x, long rows, int c, double *acc, int isa) {
	if (isa == 2) {
		colsum_512(x, rows, c, acc);
		return;
	}
	for (long i = 0; i < rows; i++) {
		const float *r = x + i * c;
		for (int j = 0; j < c; j++) acc[j] += (double)r[j];
	}
}

void bp_colsum(const float *x, long rows, int c, double *acc) { bp_colsum_isa(x, rows, c, acc, bp_isa()); }

// A row function sets the gradient of a row of OW 2x2 windows over all C
// channels: x points at the first window's top-left pixel, the pixel to its
// right is C floats on, the one below is row floats on, the next window 2C
// floats on; g holds the windows' gradients, C each; d is laid out as x.
typedef void row_fn(const float *x, long row, int C, int OW, const float *g, float *d);

// row_plain finds the arg-max of each channel in each window (the first
// maximum in row-major order: strict >, false for NaN) and routes g there
// when the maximum is positive.
static void row_plain(const float *x, long row, int C, int OW, const float *g, float *d) {
	const long at[4] = {0, C, row, row + C};
	for (int ox = 0; ox < OW; ox++) {
		const float *xw = x + (long)2 * ox * C;
		float *dw = d + (long)2 * ox * C;
		for (int c = 0; c < C; c++) {
			int best = 0;
			float bv = xw[c];
			for (int k = 1; k < 4; k++)
				if (xw[at[k] + c] > bv) best = k, bv = xw[at[k] + c];
			const float routed = bv > 0 ? g[(long)ox * C + c] : 0.0f;
			for (int k = 0; k < 4; k++) dw[at[k] + c] = k == best ? routed : 0.0f;
		}
	}
}

// add_sums_512 adds the 16 channel sums s0 (channels 0-7) and s1 (8-15),
// those of mask t, to db.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static inline void
add_sums_512(double *db, __mmask16 t, __m512d s0, __m512d s1) {
	const __mmask8 t0 = (__mmask8)t, t1 = (__mmask8)(t >> 8);
	_mm512_mask_storeu_pd(db, t0, _mm512_add_pd(_mm512_maskz_loadu_pd(t0, db), s0));
	if (t1) _mm512_mask_storeu_pd(db + 8, t1, _mm512_add_pd(_mm512_maskz_loadu_pd(t1, db + 8), s1));
}

// row_512 is row_plain on 16 channels at a time, the same comparisons in
// the same order as masks: the same bits. A channel group runs along the
// row (faster than all channels window after window).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void
row_512(const float *x, long row, int C, int OW, const float *g, float *d) {
	const long at[4] = {0, C, row, row + C};
	for (int c = 0; c < C; c += 16) {
		const __mmask16 t = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
		for (int ox = 0; ox < OW; ox++) {
			const float *xw = x + (long)2 * ox * C + c;
			float *dw = d + (long)2 * ox * C + c;
			__m512 m = _mm512_maskz_loadu_ps(t, xw);
			__mmask16 k[4] = {0};
			for (int j = 1; j < 4; j++) {
				const __m512 v = _mm512_maskz_loadu_ps(t, xw + at[j]);
				k[j] = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ);
				m = _mm512_mask_mov_ps(m, k[j], v);
			}
			const __mmask16 pos = _mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ);
			const __m512 gv = _mm512_maskz_loadu_ps(t & pos, g + (long)ox * C + c);
			// The last window entry that beat the running maximum is the arg-max.
			const __mmask16 sel[4] = {~(k[1] | k[2] | k[3]), k[1] & ~k[2] & ~k[3], k[2] & ~k[3], k[3]};
			for (int j = 0; j < 4; j++) _mm512_mask_storeu_ps(dw + at[j], t, _mm512_maskz_mov_ps(sel[j], gv));
		}
	}
}

// bp_maxpool_grad_relu_isa sets din (N,H,W,C) to the gradient of
// maxpool(relu(z)) with respect to z, given dout (N,OH,OW,C) and in, the
// pool's input relu(z): dout goes to the window's arg-max (the first
// maximum in row-major window order, as bp_maxpool_grad) when that maximum
// is positive, every other entry of din is zero. Writing din whole spares
// the caller a pass that clears it and the ReLU gradient's pass.
// isa chooses the instruction set (2: AVX-512, else plain C), so tests can
// compare the two.
void bp_maxpool_grad_relu_isa(const float *in, const float *dout, int N, int H, int W, int C,
                              int OH, int OW, float *din, int isa) {
	row_fn *fn = isa == 2 ? row_512 : row_plain;
	const long row = (long)W * C;
	for (long n = 0; n < N; n++) {
		const float *img = in + n * H * row;
		float *dimg = din + n * H * row;
		for (int oy = 0; oy < OH; oy++) {
			const long a = 2 * oy * row;
			fn(img + a, row, C, OW, dout + (n * OH + oy) * (long)OW * C, dimg + a);
			if (2 * OW < W) // a last column no window covers
				for (int r = 0; r < 2; r++)
					memset(dimg + (2 * oy + r) * row + (long)2 * OW * C, 0, sizeof(float) * (W - 2 * OW) * C);
		}
		if (2 * OH < H) memset(dimg + 2 * OH * row, 0, sizeof(float) * (H - 2 * OH) * row); // last rows
	}
}

// codes_row_plain is row_plain with the arg-max of each window given, as
// bp_conv2d_pool_codes kept it (4: nothing routed): the same gradient.
// db, unless NULL, gets each channel's routed gradients summed over the
// row (in double precision, from zero, window after window) added: the
// bias gradient of the convolution below, without a pass over d.
static void codes_row_plain(const unsigned char *cd, long row, int C, int OW, const float *g, float *d, double *db) {
	const long at[4] = {0, C, row, row + C};
	for (int c = 0; c < C; c++) {
		double sum = 0;
		for (int ox = 0; ox < OW; ox++) {
			float *dw = d + (long)2 * ox * C;
			const int best = cd[(long)ox * C + c];
			const float routed = best < 4 ? g[(long)ox * C + c] : 0.0f;
			for (int k = 0; k < 4; k++) dw[at[k] + c] = k == best ? routed : 0.0f;
			sum += (double)routed;
		}
		if (db) db[c] += sum;
	}
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void
codes_row_512(const unsigned char *cd, long row, int C, int OW, const float *g, float *d, double *db) {
	const long at[4] = {0, C, row, row + C};
	for (int c = 0; c < C; c += 16) {
		const __mmask16 t = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
		__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
		for (int ox = 0; ox < OW; ox++) {
			const __m512i code = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(t, cd + (long)ox * C + c));
			const __mmask16 routed = _mm512_cmplt_epi32_mask(code, _mm512_set1_epi32(4));
			const __m512 gv = _mm512_maskz_loadu_ps(t & routed, g + (long)ox * C + c);
			float *dw = d + (long)2 * ox * C + c;
			for (int j = 0; j < 4; j++)
				_mm512_mask_storeu_ps(dw + at[j], t, _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(code, _mm512_set1_epi32(j)), gv));
			s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(gv)));
			s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(gv, 1)));
		}
		if (db) add_sums_512(db + c, t, s0, s1);
	}
}

// bp_pool_codes_grad is bp_maxpool_grad_relu_isa with the windows' arg-max
// given as codes (N,OH,OW,C) instead of found in the pool's input: din
// (N,H,W,C) is set whole, db (unless NULL) gets the routed sums added.
void bp_pool_codes_grad(const unsigned char *codes, const float *dout, int N, int H, int W, int C,
                        int OH, int OW, float *din, double *db, int isa) {
	const long row = (long)W * C;
	for (long n = 0; n < N; n++) {
		float *dimg = din + n * H * row;
		for (int oy = 0; oy < OH; oy++) {
			const long p = (n * OH + oy) * (long)OW * C;
			(isa == 2 ? codes_row_512 : codes_row_plain)(codes + p, row, C, OW, dout + p, dimg + 2 * oy * row, db);
			if (2 * OW < W) // a last column no window covers
				for (int r = 0; r < 2; r++)
					memset(dimg + (2 * oy + r) * row + (long)2 * OW * C, 0, sizeof(float) * (W - 2 * OW) * C);
		}
		if (2 * OH < H) memset(dimg + 2 * OH * row, 0, sizeof(float) * (H - 2 * OH) * row); // last rows
	}
}

// bp_adam_coef are one Adam step's float32 coefficients (package train
// computes them as gorgonia does).
typedef struct {
	float l2, b1, b2, omb1, omb2, c1, c2, neg_eta, eps;
	int use_l2;
} bp_adam_coef;

// adam_plain is gorgonia's Adam update of n weights, each float32 product
// and sum rounded on its own (contraction off: no FMA), in gorgonia's order.
__attribute__((optimize("fp-contract=off"))) static void
adam_plain(float *w, float *g, float *m, float *v, long n, const bp_adam_coef *c) {
	for (long i = 0; i < n; i++) {
		float gi = g[i];
		if (c->use_l2) gi += w[i] * c->l2;
		const float mi = gi * c->omb1 + m[i] * c->b1;
		const float vi = (gi * gi) * c->omb2 + v[i] * c->b2;
		m[i] = mi, v[i] = vi;
		const float root = _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(vi * c->c2))); // no libm
		w[i] += (mi * c->c1) * c->neg_eta / (root + c->eps);
		g[i] = 0;
	}
}

// adam_512 is adam_plain on 16 lanes: the same operations, so the same
// bits (vector square root and division are correctly rounded, as the
// scalar ones).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), optimize("fp-contract=off"))) static void
adam_512(float *w, float *g, float *m, float *v, long n, const bp_adam_coef *c) {
	const __m512 l2 = _mm512_set1_ps(c->l2), b1 = _mm512_set1_ps(c->b1), b2 = _mm512_set1_ps(c->b2);
	const __m512 omb1 = _mm512_set1_ps(c->omb1), omb2 = _mm512_set1_ps(c->omb2);
	const __m512 c1 = _mm512_set1_ps(c->c1), c2 = _mm512_set1_ps(c->c2);
	const __m512 ne = _mm512_set1_ps(c->neg_eta), eps = _mm512_set1_ps(c->eps);
	for (long i = 0; i < n; i += 16) {
		const __mmask16 t = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
		const __m512 wi = _mm512_maskz_loadu_ps(t, w + i);
		__m512 gi = _mm512_maskz_loadu_ps(t, g + i);
		if (c->use_l2) gi = _mm512_add_ps(gi, _mm512_mul_ps(wi, l2));
		const __m512 mi = _mm512_add_ps(_mm512_mul_ps(gi, omb1), _mm512_mul_ps(_mm512_maskz_loadu_ps(t, m + i), b1));
		const __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(gi, gi), omb2),
		                                _mm512_mul_ps(_mm512_maskz_loadu_ps(t, v + i), b2));
		_mm512_mask_storeu_ps(m + i, t, mi);
		_mm512_mask_storeu_ps(v + i, t, vi);
		const __m512 d = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, c2)), eps);
		const __m512 up = _mm512_div_ps(_mm512_mul_ps(_mm512_mul_ps(mi, c1), ne), d);
		_mm512_mask_storeu_ps(w + i, t, _mm512_add_ps(wi, up));
		_mm512_mask_storeu_ps(g + i, t, _mm512_setzero_ps());
	}
}

void bp_adam(float *w, float *g, float *m, float *v, long n, const bp_adam_coef *c, int isa) {
	if (isa == 2)
		adam_512(w, g, m, v, n, c);
	else
		adam_plain(w, g, m, v, n, c);
}
