// Direct NHWC convolution as a GEMM with an implicit im2col: a tile of MR
// output pixels times NR output channels is accumulated in registers while
// walking the kernel taps, so no patch matrix is ever written. The AVX2+FMA
// path is chosen at run time; the portable path computes the same sums in the
// same order per output (tap-major, then input channel).
#include <float.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define MR 6

int bp_have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

typedef struct {
	const float *ip[MR]; // input base of each pixel of the tile
	float *op[MR];       // output row of each pixel
	int rows;            // valid pixels in the tile
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
	int ldk, run, panel, avx;
	int toff[64];
} conv_t;

static void conv_init(conv_t *c, const float *in, int H, int W, int C,
                      const float *kp, const float *bias, int KH, int KW, int OC,
                      int SH, int SW, int relu, int OH, int OW) {
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
	c->avx = bp_have_avx2();
}

// conv_range computes output pixels [q0, q1) of the batch (pixels numbered
// row-major over images, rows, columns) into out, pixel q at out[(q-q0)*OC].
static void conv_range(const conv_t *c, long q0, long q1, float *out) {
	const long per = (long)c->OH * c->OW;
	const int wide24 = c->avx && c->ldk == 24 && c->panel >= 24;
	const int mr = wide24 ? 4 : MR;
	for (int p0 = 0; p0 < c->ldk; p0 += c->panel) {
		const int p1 = p0 + c->panel < c->ldk ? p0 + c->panel : c->ldk;
		long n = q0 / per;
		int oy = (int)(q0 % per) / c->OW, ox = (int)(q0 % per) % c->OW;
		for (long q = q0; q < q1; q += mr) {
			tile_t t;
			t.rows = q1 - q < mr ? (int)(q1 - q) : mr;
			for (int r = 0; r < MR; r++) {
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

void bp_conv2d(const float *in, int N, int H, int W, int C, const float *kp,
               const float *bias, int KH, int KW, int OC, int SH, int SW,
               int relu, float *out, int OH, int OW) {
	conv_t c;
	if (KH > 64) return;
	conv_init(&c, in, H, W, C, kp, bias, KH, KW, OC, SH, SW, relu, OH, OW);
	conv_range(&c, 0, (long)N * OH * OW, out);
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
	conv_init(&c, in, H, W, C, kp, bias, KH, KW, OC, SH, SW, relu, CH, CW);
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

void bp_maxpool_grad(const float *in, const float *dout, int N, int H, int W,
                     int C, int PH, int PW, int SH, int SW, int padT, int padL,
                     int OH, int OW, float *din) {
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
	for (long q = 0; q < (long)N * OH * OW; q++)
		for (int j = 0; j < OC; j++) db[j] += dout[q * OC + j];
	if (!bp_have_avx2()) {
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
	for (long n = 0; n < N; n++) {
		const float *img = in + n * (long)H * W * C;
		const float *g = dout + n * (long)P * OC;
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

void bp_conv2d_grad_input(const float *dout, const float *k, int N, int H,
                          int W, int C, int KH, int KW, int OC, int SH, int SW,
                          int OH, int OW, float *din) {
	const int K = KH * KW * C;
	// kt[j][k] = k[k][j]: each output gradient then adds a contiguous row.
	float *kt = malloc(sizeof(float) * K * OC);
	float *g = malloc(sizeof(float) * K);
	for (int i = 0; i < K; i++)
		for (int j = 0; j < OC; j++) kt[(long)j * K + i] = k[(long)i * OC + j];
	for (long n = 0; n < N; n++) {
		for (int oy = 0; oy < OH; oy++) {
			for (int ox = 0; ox < OW; ox++) {
				const float *go = dout + ((n * OH + oy) * (long)OW + ox) * OC;
				memset(g, 0, sizeof(float) * K);
				int any = 0;
				for (int j = 0; j < OC; j++) {
					const float s = go[j];
					if (s == 0) continue;
					any = 1;
					const float *row = kt + (long)j * K;
					for (int i = 0; i < K; i++) g[i] += s * row[i];
				}
				if (!any) continue;
				float *base = din + ((n * H + (long)oy * SH) * W + (long)ox * SW) * C;
				for (int ky = 0; ky < KH; ky++)
					for (int kx = 0; kx < KW; kx++) {
						float *d = base + ((long)ky * W + kx) * C;
						const float *s = g + (ky * KW + kx) * C;
						for (int ci = 0; ci < C; ci++) d[ci] += s[ci];
					}
			}
		}
	}
	free(g);
	free(kt);
}
