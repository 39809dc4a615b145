// Direct NHWC convolution as a GEMM with an implicit im2col: a tile of MR
// output pixels times NR output channels is accumulated in registers while
// walking the kernel taps, so no patch matrix is ever written. The AVX-512 or
// AVX2+FMA path is chosen at run time; all paths compute the same sums in
// the same order per output (tap-major, then input channel).
#include <float.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define MR 6     // pixels per AVX2 tile
#define MRMAX 12 // pixels per tile at most (AVX-512, narrow layers)

int bp_have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// bp_isa is the widest kernel set the CPU runs: 2 AVX-512 (F, BW, DQ, VL),
// 1 AVX2+FMA, 0 plain C. Each output's sums are the same FMAs in the same
// order on 1 and 2, so the two give identical bits.
int bp_isa(void) {
	if (!bp_have_avx2()) return 0;
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
	           ? 2
	           : 1;
}

typedef struct {
	const float *ip[MRMAX]; // input base of each pixel of the tile
	float *op[MRMAX];       // output row of each pixel
	int rows;               // valid pixels in the tile
} tile_t;

static inline void store_cols(float *o, const float *v, int ncols, int relu) {
	if (relu) {
		for (int j = 0; j < ncols; j++) o[j] = v[j] > 0 ? v[j] : 0;
	} else {
		memcpy(o, v, sizeof(float) * ncols);
	}
}

// kern_avx accumulates a register tile of mr pixels x 8*nb output channels,
// from column jb, over every kernel tap, and writes its first ncols columns.
// mr and nb are constants where it is inlined and the pragmas unroll every
// loop over them, so each accumulator becomes a register of its own (mr*nb
// of them, with the nb kernel vectors and a broadcast at most the 16 AVX
// registers); without the pragmas gcc keeps the tile in memory.
__attribute__((target("avx2,fma"), always_inline)) static inline void
kern_avx(const tile_t *t, const int *toff, int ntaps, int run, const float *kp,
         int ldk, const float *bias, int jb, int ncols, int relu, const int mr,
         const int nb) {
	__m256 c[MR][3], init[3];
#pragma GCC unroll 3
	for (int j = 0; j < nb; j++) init[j] = _mm256_loadu_ps(bias + jb + 8 * j);
#pragma GCC unroll 6
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 3
		for (int j = 0; j < nb; j++) c[r][j] = init[j];
	const float *kt = kp + jb;
	for (int tp = 0; tp < ntaps; tp++) {
		const float *a[MR];
#pragma GCC unroll 6
		for (int r = 0; r < mr; r++) a[r] = t->ip[r] + toff[tp];
		for (int ci = 0; ci < run; ci++, kt += ldk) {
			__m256 b[3];
#pragma GCC unroll 3
			for (int j = 0; j < nb; j++) b[j] = _mm256_loadu_ps(kt + 8 * j);
#pragma GCC unroll 6
			for (int r = 0; r < mr; r++) {
				const __m256 x = _mm256_broadcast_ss(a[r] + ci);
#pragma GCC unroll 3
				for (int j = 0; j < nb; j++) c[r][j] = _mm256_fmadd_ps(x, b[j], c[r][j]);
			}
		}
	}
	if (relu) {
		const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 6
		for (int r = 0; r < mr; r++)
#pragma GCC unroll 3
			for (int j = 0; j < nb; j++) c[r][j] = _mm256_max_ps(c[r][j], z);
	}
	if (ncols == 8 * nb && t->rows == mr) {
#pragma GCC unroll 6
		for (int r = 0; r < mr; r++)
#pragma GCC unroll 3
			for (int j = 0; j < nb; j++) _mm256_storeu_ps(t->op[r] + jb + 8 * j, c[r][j]);
		return;
	}
	float v[MR][24];
#pragma GCC unroll 6
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 3
		for (int j = 0; j < nb; j++) _mm256_storeu_ps(v[r] + 8 * j, c[r][j]);
	for (int r = 0; r < t->rows; r++) memcpy(t->op[r] + jb, v[r], sizeof(float) * ncols);
}

// The tiles conv_range uses: MR pixels x 16 or 8 channels, and 4 pixels x
// 24 channels for layers of 17..24 output channels (the lab's conv_1 has
// 20), one pass instead of a 16-wide and a mostly idle 8-wide.
__attribute__((target("avx2,fma"))) static void
kern_avx_16(const tile_t *t, const int *toff, int ntaps, int run,
            const float *kp, int ldk, const float *bias, int jb, int ncols, int relu) {
	kern_avx(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu, MR, 2);
}

__attribute__((target("avx2,fma"))) static void
kern_avx_8(const tile_t *t, const int *toff, int ntaps, int run,
           const float *kp, int ldk, const float *bias, int jb, int ncols, int relu) {
	kern_avx(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu, MR, 1);
}

__attribute__((target("avx2,fma"))) static void
kern_avx_24(const tile_t *t, const int *toff, int ntaps, int run,
            const float *kp, const float *bias, int ncols, int relu) {
	kern_avx(t, toff, ntaps, run, kp, 24, bias, 0, ncols, relu, 4, 3);
}

// kern_512 is kern_avx on 16-lane registers: a tile of mr pixels x 16*nb
// output channels (32 registers: mr*nb accumulators, nb kernel vectors and
// a broadcast). The last vector is masked to the ncols real columns, so
// loads never pass the end of the packed kernel or its bias.
#define T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))

// load_row512 loads nb vectors of 16 floats from p, the last masked to the
// real columns, so a load never passes the end of a row.
T512 __attribute__((always_inline)) static inline void
load_row512(__m512 *v, const float *p, const int nb, __mmask16 last) {
#pragma GCC unroll 4
	for (int j = 0; j < nb; j++)
		v[j] = j < nb - 1 ? _mm512_loadu_ps(p + 16 * j) : _mm512_maskz_loadu_ps(last, p + 16 * j);
}

T512 __attribute__((always_inline)) static inline void
kern_512(const tile_t *t, const int *toff, int ntaps, int run, const float *kp,
         int ldk, const float *bias, int jb, int ncols, int relu, const int mr,
         const int nb) {
	const __mmask16 last = (__mmask16)((1u << (ncols - 16 * (nb - 1))) - 1);
	__m512 c[MRMAX][4], init[4];
	load_row512(init, bias + jb, nb, last);
#pragma GCC unroll 12
	for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
		for (int j = 0; j < nb; j++) c[r][j] = init[j];
	const float *kt = kp + jb;
	for (int tp = 0; tp < ntaps; tp++) {
		const float *a[MRMAX];
#pragma GCC unroll 12
		for (int r = 0; r < mr; r++) a[r] = t->ip[r] + toff[tp];
		for (int ci = 0; ci < run; ci++, kt += ldk) {
			__m512 b[4];
			load_row512(b, kt, nb, last);
#pragma GCC unroll 12
			for (int r = 0; r < mr; r++) {
				const __m512 x = _mm512_set1_ps(a[r][ci]);
#pragma GCC unroll 4
				for (int j = 0; j < nb; j++) c[r][j] = _mm512_fmadd_ps(x, b[j], c[r][j]);
			}
		}
	}
	if (relu) {
		const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 12
		for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
			for (int j = 0; j < nb; j++) c[r][j] = _mm512_max_ps(c[r][j], z);
	}
#pragma GCC unroll 12
	for (int r = 0; r < mr; r++) {
		if (r >= t->rows) break;
#pragma GCC unroll 4
		for (int j = 0; j < nb; j++) {
			if (j < nb - 1)
				_mm512_storeu_ps(t->op[r] + jb + 16 * j, c[r][j]);
			else
				_mm512_mask_storeu_ps(t->op[r] + jb + 16 * j, last, c[r][j]);
		}
	}
}

#define K512(MR_, NB_)                                                                   \
	T512 static void kern_512_##MR_##_##NB_(const tile_t *t, const int *toff, int ntaps,  \
	                                        int run, const float *kp, int ldk,            \
	                                        const float *bias, int jb, int ncols, int relu) { \
		kern_512(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu, MR_, NB_);           \
	}
K512(12, 1)
K512(12, 2)
K512(8, 1)
K512(8, 2)
K512(8, 3)
K512(6, 1)
K512(6, 2)
K512(6, 3)
K512(6, 4)

// mr512 is the tile height for blocks of at most nb vectors: the most
// pixels whose accumulators fit in the 32 registers.
static int mr512(int nb) { return nb <= 2 ? 12 : nb == 3 ? 8 : 6; }

static void kern_512_any(const tile_t *t, int mr, int nb, const int *toff, int ntaps,
                         int run, const float *kp, int ldk, const float *bias,
                         int jb, int ncols, int relu) {
	switch (mr * 8 + nb) {
	case 12 * 8 + 1: kern_512_12_1(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	case 12 * 8 + 2: kern_512_12_2(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	case 8 * 8 + 1: kern_512_8_1(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	case 8 * 8 + 2: kern_512_8_2(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	case 8 * 8 + 3: kern_512_8_3(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	case 6 * 8 + 1: kern_512_6_1(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	case 6 * 8 + 2: kern_512_6_2(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	case 6 * 8 + 3: kern_512_6_3(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	default: kern_512_6_4(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu); break;
	}
}

static void kern_plain(const tile_t *t, const int *toff, int ntaps, int C,
                       const float *kp, int ldk, const float *bias, int jb,
                       int ncols, int relu) {
	for (int r = 0; r < t->rows; r++) {
		float acc[16];
		for (int j = 0; j < ncols; j++) acc[j] = bias[jb + j];
		const float *kt = kp + jb;
		for (int tp = 0; tp < ntaps; tp++) {
			const float *a = t->ip[r] + toff[tp];
			for (int ci = 0; ci < C; ci++, kt += ldk) {
				const float x = a[ci];
				for (int j = 0; j < ncols; j++) acc[j] += x * kt[j];
			}
		}
		store_cols(t->op[r] + jb, acc, ncols, relu);
	}
}

typedef struct {
	const float *in;
	int H, W, C;
	const float *kp, *bias;
	int KH, KW, OC, SH, SW, relu;
	int OH, OW;
	int ldk, run, panel, avx, isa;
	int toff[64];
} conv_t;

static void conv_init(conv_t *c, const float *in, int H, int W, int C,
                      const float *kp, const float *bias, int KH, int KW, int OC,
                      int SH, int SW, int relu, int OH, int OW, int isa) {
	*c = (conv_t){in, H, W, C, kp, bias, KH, KW, OC, SH, SW, relu, OH, OW};
	c->ldk = (OC + 7) & ~7;
	// A kernel row (kx, ci) is contiguous in NHWC input, so the taps are the
	// KH rows and each runs over KW*C values.
	c->run = KW * C;
	for (int ky = 0; ky < KH; ky++) c->toff[ky] = ky * W * C;
	// Column panels keep the kernel slice in L2 while the pixels stream by.
	const int K = KH * c->run;
	c->panel = (65536 / (K > 0 ? K : 1)) & ~15;
	if (c->panel < 16) c->panel = 16;
	c->isa = isa;
	c->avx = isa >= 1;
	if (isa == 2 && c->panel < 64) c->panel = 64; // one full 4-vector block; L2 holds 1 MB
}

// conv_range computes output pixels [q0, q1) of the batch (pixels numbered
// row-major over images, rows, columns) into out, pixel q at out[(q-q0)*OC].
static void conv_range(const conv_t *c, long q0, long q1, float *out) {
	const long per = (long)c->OH * c->OW;
	const int wide24 = c->isa == 1 && c->ldk == 24 && c->panel >= 24;
	// AVX-512: blocks of up to 64 columns, as many pixels as the widest fits.
	const int w512 = c->panel < c->OC ? c->panel : c->OC;
	const int nb512 = w512 >= 64 ? 4 : (w512 + 15) / 16;
	const int mr = c->isa == 2 ? mr512(nb512) : wide24 ? 4 : MR;
	for (int p0 = 0; p0 < c->ldk; p0 += c->panel) {
		const int p1 = p0 + c->panel < c->ldk ? p0 + c->panel : c->ldk;
		long n = q0 / per;
		int oy = (int)(q0 % per) / c->OW, ox = (int)(q0 % per) % c->OW;
		for (long q = q0; q < q1; q += mr) {
			tile_t t;
			t.rows = q1 - q < mr ? (int)(q1 - q) : mr;
			for (int r = 0; r < mr; r++) {
				if (r < t.rows) {
					t.ip[r] = c->in + (((n * c->H) + (long)oy * c->SH) * c->W + (long)ox * c->SW) * c->C;
					t.op[r] = out + (q + r - q0) * c->OC;
					if (++ox == c->OW) { // advance without division
						ox = 0;
						if (++oy == c->OH) {
							oy = 0;
							n++;
						}
					}
				} else {
					t.ip[r] = t.ip[t.rows - 1];
					t.op[r] = t.op[t.rows - 1];
				}
			}
			if (c->isa == 2) {
				for (int jb = p0; jb < p1 && jb < c->OC; jb += 64) {
					int ncols = p1 - jb < 64 ? p1 - jb : 64;
					if (ncols > c->OC - jb) ncols = c->OC - jb;
					kern_512_any(&t, mr, (ncols + 15) / 16, c->toff, c->KH, c->run, c->kp,
					             c->ldk, c->bias, jb, ncols, c->relu);
				}
				continue;
			}
			if (wide24) {
				kern_avx_24(&t, c->toff, c->KH, c->run, c->kp, c->bias, c->OC, c->relu);
				continue;
			}
			for (int jb = p0; jb < p1 && jb < c->OC;) {
				const int left = c->OC - jb; // real columns still to write
				if (c->avx && p1 - jb >= 16) {
					kern_avx_16(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, jb, left < 16 ? left : 16, c->relu);
					jb += 16;
				} else if (c->avx) {
					kern_avx_8(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, jb, left < 8 ? left : 8, c->relu);
					jb += 8;
				} else {
					int w = p1 - jb < 16 ? p1 - jb : 16;
					kern_plain(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, jb, left < w ? left : w, c->relu);
					jb += w;
				}
			}
		}
	}
}

void bp_conv2d_isa(const float *in, int N, int H, int W, int C, const float *kp,
                   const float *bias, int KH, int KW, int OC, int SH, int SW,
                   int relu, float *out, int OH, int OW, int isa) {
	conv_t c;
	if (KH > 64) return;
	conv_init(&c, in, H, W, C, kp, bias, KH, KW, OC, SH, SW, relu, OH, OW, isa);
	conv_range(&c, 0, (long)N * OH * OW, out);
}

void bp_conv2d(const float *in, int N, int H, int W, int C, const float *kp,
               const float *bias, int KH, int KW, int OC, int SH, int SW,
               int relu, float *out, int OH, int OW) {
	bp_conv2d_isa(in, N, H, W, C, kp, bias, KH, KW, OC, SH, SW, relu, out, OH, OW, bp_isa());
}

static void pool_rows_2x2(const float *restrict r0, const float *restrict r1,
                          int OW, int C, float *restrict o) {
	for (int ox = 0; ox < OW; ox++, r0 += 2 * C, r1 += 2 * C, o += C) {
		for (int c = 0; c < C; c++) {
			float a = r0[c] > r0[C + c] ? r0[c] : r0[C + c];
			float b = r1[c] > r1[C + c] ? r1[c] : r1[C + c];
			o[c] = a > b ? a : b;
		}
	}
}

void bp_conv2d_pool(const float *in, int N, int H, int W, int C, const float *kp,
                    const float *bias, int KH, int KW, int OC, int SH, int SW,
                    int relu, float *out, int OH, int OW) {
	conv_t c;
	if (KH > 64) return;
	const int CH = (H - KH) / SH + 1, CW = (W - KW) / SW + 1; // conv output size
	conv_init(&c, in, H, W, C, kp, bias, KH, KW, OC, SH, SW, relu, CH, CW, bp_isa());
	// Blocks of conv rows small enough to stay in L2 between conv and pool.
	int blk = (32768 / (CW * OC > 0 ? CW * OC : 1)) & ~1;
	if (blk < 2) blk = 2;
	if (blk > 2 * OH) blk = 2 * OH;
	float *scratch = malloc(sizeof(float) * (long)blk * CW * OC);
	for (long n = 0; n < N; n++) {
		for (int y0 = 0; y0 < 2 * OH; y0 += blk) {
			const int rows = y0 + blk < 2 * OH ? blk : 2 * OH - y0;
			const long q0 = (n * CH + y0) * (long)CW;
			conv_range(&c, q0, q0 + (long)rows * CW, scratch);
			for (int r = 0; r < rows; r += 2)
				pool_rows_2x2(scratch + (long)r * CW * OC, scratch + (long)(r + 1) * CW * OC,
				              OW, OC, out + ((n * OH) + (y0 + r) / 2) * (long)OW * OC);
		}
	}
	free(scratch);
}

// The lab's pool: 2x2 windows, stride 2, no padding, all cells in range.
static void maxpool_2x2(const float *in, int N, int H, int W, int C, float *out,
                        int OH, int OW) {
	for (long n = 0; n < N; n++) {
		const float *img = in + n * (long)H * W * C;
		for (int oy = 0; oy < OH; oy++) {
			const float *r0 = img + (long)(2 * oy) * W * C;
			pool_rows_2x2(r0, r0 + (long)W * C, OW, C, out + (n * OH + oy) * (long)OW * C);
		}
	}
}

// pool_window sets [*lo, *hi) to the cells of [0, n) under window o of
// size p, stride s and leading padding pad, in order, as both passes of a
// max pool visit them.
static inline void pool_window(int o, int s, int pad, int p, int n, int *lo, int *hi) {
	const int start = o * s - pad;
	*lo = start > 0 ? start : 0;
	*hi = start + p < n ? start + p : n;
}

void bp_maxpool(const float *in, int N, int H, int W, int C, int PH, int PW,
                int SH, int SW, int padT, int padL, float *out, int OH, int OW) {
	if (PH == 2 && PW == 2 && SH == 2 && SW == 2 && padT == 0 && padL == 0 &&
	    2 * OH <= H && 2 * OW <= W) {
		maxpool_2x2(in, N, H, W, C, out, OH, OW);
		return;
	}
	for (long n = 0; n < N; n++) {
		const float *img = in + n * (long)H * W * C;
		for (int oy = 0; oy < OH; oy++) {
			for (int ox = 0; ox < OW; ox++) {
				float *o = out + ((n * OH + oy) * (long)OW + ox) * C;
				for (int c = 0; c < C; c++) o[c] = -FLT_MAX;
				int seen = 0, y0, y1, x0, x1;
				pool_window(oy, SH, padT, PH, H, &y0, &y1);
				pool_window(ox, SW, padL, PW, W, &x0, &x1);
				for (int y = y0; y < y1; y++) {
					for (int x = x0; x < x1; x++) {
						const float *i = img + ((long)y * W + x) * C;
						if (!seen) {
							memcpy(o, i, sizeof(float) * C);
							seen = 1;
							continue;
						}
						for (int c = 0; c < C; c++) o[c] = i[c] > o[c] ? i[c] : o[c];
					}
				}
			}
		}
	}
}

// maxpool_grad_2x2 is bp_maxpool_grad for the lab's pools, walking the
// channels contiguously: the same arg-max (first maximum in row-major window
// order) and the same single addition per window.
static void maxpool_grad_2x2(const float *in, const float *dout, int N, int H, int W,
                             int C, int OH, int OW, float *din) {
	for (long n = 0; n < N; n++) {
		const float *img = in + n * (long)H * W * C;
		float *dimg = din + n * (long)H * W * C;
		for (int oy = 0; oy < OH; oy++) {
			for (int ox = 0; ox < OW; ox++) {
				const float *g = dout + ((n * OH + oy) * (long)OW + ox) * C;
				const long a = ((long)(2 * oy) * W + 2 * ox) * C, b = a + (long)W * C;
				const long at[4] = {a, a + C, b, b + C};
				for (int c = 0; c < C; c++) {
					int best = 0;
					float bv = img[a + c];
					for (int k = 1; k < 4; k++)
						if (img[at[k] + c] > bv) {
							best = k;
							bv = img[at[k] + c];
						}
					dimg[at[best] + c] += g[c];
				}
			}
		}
	}
}

void bp_maxpool_grad(const float *in, const float *dout, int N, int H, int W,
                     int C, int PH, int PW, int SH, int SW, int padT, int padL,
                     int OH, int OW, float *din) {
	if (PH == 2 && PW == 2 && SH == 2 && SW == 2 && padT == 0 && padL == 0 &&
	    2 * OH <= H && 2 * OW <= W) {
		maxpool_grad_2x2(in, dout, N, H, W, C, OH, OW, din);
		return;
	}
	for (long n = 0; n < N; n++) {
		const float *img = in + n * (long)H * W * C;
		float *dimg = din + n * (long)H * W * C;
		for (int oy = 0; oy < OH; oy++) {
			for (int ox = 0; ox < OW; ox++) {
				const float *g = dout + ((n * OH + oy) * (long)OW + ox) * C;
				int y0, y1, x0, x1;
				pool_window(oy, SH, padT, PH, H, &y0, &y1);
				pool_window(ox, SW, padL, PW, W, &x0, &x1);
				for (int c = 0; c < C; c++) {
					long best = -1;
					float bv = 0;
					for (int y = y0; y < y1; y++) {
						for (int x = x0; x < x1; x++) {
							const long at = ((long)y * W + x) * C + c;
							if (best < 0 || img[at] > bv) {
								best = at;
								bv = img[at];
							}
						}
					}
					if (best >= 0) dimg[best] += g[c];
				}
			}
		}
	}
}

// The kernel gradient dk[k][oc] = sum over output pixels p of
// x(p, k) * g(p, oc) is a matrix product with an implicit im2col: a
// register tile of 6 kernel entries x 16 (or 8) output channels is
// accumulated over every pixel of an image.
__attribute__((target("avx2,fma"))) static void
gk_tile_avx(const float *img, const long *pix, int np, const int *off, int nk,
            const float *g, int OC, int jb, int nj, float *dk) {
	__m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
	__m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
	const int o0 = off[0], o1 = off[1 < nk ? 1 : 0], o2 = off[2 < nk ? 2 : 0];
	const int o3 = off[3 < nk ? 3 : 0], o4 = off[4 < nk ? 4 : 0], o5 = off[5 < nk ? 5 : 0];
	// Masked loads cover a last block narrower than 16 channels.
	int lane[16];
	for (int j = 0; j < 16; j++) lane[j] = j < nj ? -1 : 0;
	const __m256i m0 = _mm256_loadu_si256((const __m256i *)lane);
	const __m256i m1 = _mm256_loadu_si256((const __m256i *)(lane + 8));
	for (int q = 0; q < np; q++) {
		const float *x = img + pix[q];
		const float *gp = g + (long)q * OC + jb;
		__m256 g0, g1;
		if (nj == 16) {
			g0 = _mm256_loadu_ps(gp);
			g1 = _mm256_loadu_ps(gp + 8);
		} else {
			g0 = _mm256_maskload_ps(gp, m0);
			g1 = nj > 8 ? _mm256_maskload_ps(gp + 8, m1) : _mm256_setzero_ps();
		}
		__m256 v;
		v = _mm256_broadcast_ss(x + o0); a00 = _mm256_fmadd_ps(v, g0, a00); a01 = _mm256_fmadd_ps(v, g1, a01);
		v = _mm256_broadcast_ss(x + o1); a10 = _mm256_fmadd_ps(v, g0, a10); a11 = _mm256_fmadd_ps(v, g1, a11);
		v = _mm256_broadcast_ss(x + o2); a20 = _mm256_fmadd_ps(v, g0, a20); a21 = _mm256_fmadd_ps(v, g1, a21);
		v = _mm256_broadcast_ss(x + o3); a30 = _mm256_fmadd_ps(v, g0, a30); a31 = _mm256_fmadd_ps(v, g1, a31);
		v = _mm256_broadcast_ss(x + o4); a40 = _mm256_fmadd_ps(v, g0, a40); a41 = _mm256_fmadd_ps(v, g1, a41);
		v = _mm256_broadcast_ss(x + o5); a50 = _mm256_fmadd_ps(v, g0, a50); a51 = _mm256_fmadd_ps(v, g1, a51);
	}
	float r[6][16];
	_mm256_storeu_ps(r[0], a00); _mm256_storeu_ps(r[0] + 8, a01);
	_mm256_storeu_ps(r[1], a10); _mm256_storeu_ps(r[1] + 8, a11);
	_mm256_storeu_ps(r[2], a20); _mm256_storeu_ps(r[2] + 8, a21);
	_mm256_storeu_ps(r[3], a30); _mm256_storeu_ps(r[3] + 8, a31);
	_mm256_storeu_ps(r[4], a40); _mm256_storeu_ps(r[4] + 8, a41);
	_mm256_storeu_ps(r[5], a50); _mm256_storeu_ps(r[5] + 8, a51);
	for (int i = 0; i < nk; i++)
		for (int j = 0; j < nj; j++) dk[(long)i * OC + jb + j] += r[i][j];
}

// gk_512 is gk_tile_avx on 16-lane registers: NK kernel entries x 16*NB
// output channels, the last vector masked to the ncols real ones. Each dk
// entry gets the same FMAs in the same order, so the bits equal AVX2's.
T512 __attribute__((always_inline)) static inline void
gk_512(const float *img, const long *pix, int np, const int *off, int nk,
       const float *g, int OC, int jb, int ncols, float *dk, const int NK, const int NB) {
	const __mmask16 last = (__mmask16)((1u << (ncols - 16 * (NB - 1))) - 1);
	__m512 acc[24][4];
	int o[24];
#pragma GCC unroll 24
	for (int i = 0; i < NK; i++) {
		o[i] = off[i < nk ? i : 0];
#pragma GCC unroll 4
		for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();
	}
	for (int q = 0; q < np; q++) {
		const float *x = img + pix[q];
		const float *gp = g + (long)q * OC + jb;
		__m512 gv[4];
		load_row512(gv, gp, NB, last);
#pragma GCC unroll 24
		for (int i = 0; i < NK; i++) {
			const __m512 v = _mm512_set1_ps(x[o[i]]);
#pragma GCC unroll 4
			for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(v, gv[j], acc[i][j]);
		}
	}
#pragma GCC unroll 24
	for (int i = 0; i < NK; i++) {
		if (i >= nk) break;
		float *d = dk + (long)i * OC + jb;
#pragma GCC unroll 4
		for (int j = 0; j < NB; j++) {
			const __mmask16 m = j < NB - 1 ? (__mmask16)0xFFFF : last;
			_mm512_mask_storeu_ps(d + 16 * j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + 16 * j), acc[i][j]));
		}
	}
}

#define GK512(NK_, NB_)                                                                       \
	T512 static void gk_512_##NB_(const float *img, const long *pix, int np, const int *off, \
	                              int nk, const float *g, int OC, int jb, int ncols, float *dk) { \
		gk_512(img, pix, np, off, nk, g, OC, jb, ncols, dk, NK_, NB_);                       \
	}
GK512(24, 1)
GK512(12, 2)
GK512(8, 3)
GK512(6, 4)

// gk_512_image adds one image's kernel gradient into dk: column blocks of
// up to 64 channels, each over tiles of kernel entries.
static void gk_512_image(const float *img, const long *pix, int np, const int *off,
                         int K, const float *g, int OC, float *dk) {
	for (int jb = 0; jb < OC; jb += 64) {
		const int ncols = OC - jb < 64 ? OC - jb : 64, nb = (ncols + 15) / 16;
		const int NK = nb == 1 ? 24 : nb == 2 ? 12 : nb == 3 ? 8 : 6;
		for (int k0 = 0; k0 < K; k0 += NK) {
			const int nk = K - k0 < NK ? K - k0 : NK;
			float *d = dk + (long)k0 * OC;
			switch (nb) {
			case 1: gk_512_1(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
			case 2: gk_512_2(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
			case 3: gk_512_3(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
			default: gk_512_4(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
			}
		}
	}
}

static void gk_plain(const float *in, const float *dout, int N, int H, int W, int C,
                     int KH, int KW, int OC, int SH, int SW, int OH, int OW,
                     float *dk, float *db) {
	for (long n = 0; n < N; n++) {
		for (int oy = 0; oy < OH; oy++) {
			for (int ox = 0; ox < OW; ox++) {
				const float *g = dout + ((n * OH + oy) * (long)OW + ox) * OC;
				const float *base = in + ((n * H + (long)oy * SH) * W + (long)ox * SW) * C;
				for (int ky = 0; ky < KH; ky++) {
					for (int kx = 0; kx < KW; kx++) {
						const float *a = base + ((long)ky * W + kx) * C;
						float *d = dk + (long)((ky * KW + kx) * C) * OC;
						for (int ci = 0; ci < C; ci++, d += OC) {
							const float x = a[ci];
							if (x == 0) continue;
							for (int j = 0; j < OC; j++) d[j] += x * g[j];
						}
					}
				}
			}
		}
	}
}

void bp_conv2d_grad_kernel(const float *in, const float *dout, int N, int H,
                           int W, int C, int KH, int KW, int OC, int SH, int SW,
                           int OH, int OW, float *dk, float *db) {
	bp_conv2d_grad_kernel_isa(in, dout, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, dk, db, bp_isa());
}

void bp_conv2d_grad_kernel_isa(const float *in, const float *dout, int N, int H,
                               int W, int C, int KH, int KW, int OC, int SH, int SW,
                               int OH, int OW, float *dk, float *db, int isa) {
	for (long q = 0; q < (long)N * OH * OW; q++)
		for (int j = 0; j < OC; j++) db[j] += dout[q * OC + j];
	if (isa == 0) {
		gk_plain(in, dout, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, dk, db);
		return;
	}
	const int K = KH * KW * C, P = OH * OW;
	long *pix = malloc(sizeof(long) * P);
	int *off = malloc(sizeof(int) * K);
	for (int oy = 0; oy < OH; oy++)
		for (int ox = 0; ox < OW; ox++) pix[oy * OW + ox] = ((long)oy * SH * W + (long)ox * SW) * C;
	for (int ky = 0; ky < KH; ky++)
		for (int kx = 0; kx < KW; kx++)
			for (int ci = 0; ci < C; ci++) off[(ky * KW + kx) * C + ci] = (ky * W + kx) * C + ci;
	const int wide = isa == 2;
	for (long n = 0; n < N; n++) {
		const float *img = in + n * (long)H * W * C;
		const float *g = dout + n * (long)P * OC;
		if (wide) {
			gk_512_image(img, pix, P, off, K, g, OC, dk);
			continue;
		}
		for (int k0 = 0; k0 < K; k0 += 6) {
			const int nk = K - k0 < 6 ? K - k0 : 6;
			for (int jb = 0; jb < OC; jb += 16) {
				const int nj = OC - jb < 16 ? OC - jb : 16;
				gk_tile_avx(img, pix, P, off + k0, nk, g, OC, jb, nj, dk + (long)k0 * OC);
			}
		}
	}
	free(pix);
	free(off);
}

// axpy adds s*row to g; add adds s to d. The AVX-512 forms round as the
// plain ones (a product, then a sum; no FMA), so their bits are the same.
static inline void axpy_plain(float *g, const float *row, float s, int n) {
	for (int i = 0; i < n; i++) g[i] += s * row[i];
}
static inline void add_plain(float *d, const float *s, int n) {
	for (int i = 0; i < n; i++) d[i] += s[i];
}
// gcc would fuse a vector product and sum into an FMA (-ffp-contract=fast):
// contraction off keeps the plain rounding.
#define T512NC T512 __attribute__((optimize("fp-contract=off")))
T512NC static inline void axpy_512(float *g, const float *row, float s, int n) {
	const __m512 v = _mm512_set1_ps(s);
	for (int i = 0; i < n; i += 16) {
		const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
		const __m512 p = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, row + i));
		_mm512_mask_storeu_ps(g + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, g + i), p));
	}
}
T512NC static inline void add_512(float *d, const float *s, int n) {
	for (int i = 0; i < n; i += 16) {
		const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
		_mm512_mask_storeu_ps(d + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + i), _mm512_maskz_loadu_ps(m, s + i)));
	}
}

// Per output pixel, the patch gradient g = sum_j dout[j] * k[:, j] (zero
// gradients, most after a ReLU, skipped), added back onto the input patch
// one kernel row (KW*C contiguous values in NHWC) at a time.
#define GRAD_INPUT_BODY(AXPY, ADD)                                                       \
	const int K = KH * KW * C;                                                             \
	float *kt = malloc(sizeof(float) * K * OC);                                            \
	float *g = malloc(sizeof(float) * K);                                                  \
	for (int i = 0; i < K; i++)                                                            \
		for (int j = 0; j < OC; j++) kt[(long)j * K + i] = k[(long)i * OC + j];            \
	for (long n = 0; n < N; n++) {                                                         \
		for (int oy = 0; oy < OH; oy++) {                                                    \
			for (int ox = 0; ox < OW; ox++) {                                                  \
				const float *go = dout + ((n * OH + oy) * (long)OW + ox) * OC;                   \
				memset(g, 0, sizeof(float) * K);                                                 \
				int any = 0;                                                                     \
				for (int j = 0; j < OC; j++) {                                                   \
					if (go[j] == 0) continue;                                                      \
					any = 1;                                                                       \
					AXPY(g, kt + (long)j * K, go[j], K);                                           \
				}                                                                                \
				if (!any) continue;                                                              \
				float *base = din + ((n * H + (long)oy * SH) * W + (long)ox * SW) * C;           \
				for (int ky = 0; ky < KH; ky++)                                                  \
					ADD(base + (long)ky * W * C, g + ky * KW * C, KW * C);                         \
			}                                                                                  \
		}                                                                                    \
	}                                                                                      \
	free(g);                                                                               \
	free(kt);

static void grad_input_plain(const float *dout, const float *k, int N, int H, int W, int C,
                             int KH, int KW, int OC, int SH, int SW, int OH, int OW, float *din) {
	GRAD_INPUT_BODY(axpy_plain, add_plain)
}
T512NC static void grad_input_512(const float *dout, const float *k, int N, int H, int W, int C,
                                int KH, int KW, int OC, int SH, int SW, int OH, int OW, float *din) {
	GRAD_INPUT_BODY(axpy_512, add_512)
}

void bp_conv2d_grad_input(const float *dout, const float *k, int N, int H,
                          int W, int C, int KH, int KW, int OC, int SH, int SW,
                          int OH, int OW, float *din) {
	bp_conv2d_grad_input_isa(dout, k, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, din, bp_isa());
}

void bp_conv2d_grad_input_isa(const float *dout, const float *k, int N, int H,
                              int W, int C, int KH, int KW, int OC, int SH, int SW,
                              int OH, int OW, float *din, int isa) {
	if (isa == 2)
		grad_input_512(dout, k, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, din);
	else
		grad_input_plain(dout, k, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, din);
}

// ReLU and its gradient as the graph's Go loops defined them (max(a, 0):
// NaN stays NaN, -0 becomes +0); plain loops the compiler vectorizes.
void bp_relu(const float *x, long n, float *o) {
	for (long i = 0; i < n; i++) {
		const float a = x[i];
		o[i] = a > 0 || a != a ? a : 0.0f;
	}
}

void bp_relu_grad(const float *y, const float *dy, long n, float *o) {
	for (long i = 0; i < n; i++) o[i] = y[i] > 0 ? dy[i] : 0.0f;
}
