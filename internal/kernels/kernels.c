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

// With pool set, the tile is mr/4 pool windows: pixels 2i, 2i+1 the upper
// row of window i, mr/2+2i, mr/2+2i+1 its lower row; it writes the
// windows' maxima (as pool_rows_2x2: max_ps(a, b) is a > b ? a : b) to
// op[i], i < rows, instead of the pixels.
T512 __attribute__((always_inline)) static inline void
kern_512(const tile_t *t, const int *toff, int ntaps, int run, const float *kp,
         int ldk, const float *bias, int jb, int ncols, int relu, const int mr,
         const int nb, const int pool) {
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
	if (pool) {
#pragma GCC unroll 3
		for (int i = 0; i < mr / 4; i++) {
			if (i >= t->rows) break;
#pragma GCC unroll 4
			for (int j = 0; j < nb; j++) {
				const __m512 a = _mm512_max_ps(c[2 * i][j], c[2 * i + 1][j]);
				const __m512 b = _mm512_max_ps(c[mr / 2 + 2 * i][j], c[mr / 2 + 2 * i + 1][j]);
				if (j < nb - 1)
					_mm512_storeu_ps(t->op[i] + jb + 16 * j, _mm512_max_ps(a, b));
				else
					_mm512_mask_storeu_ps(t->op[i] + jb + 16 * j, last, _mm512_max_ps(a, b));
			}
		}
		return;
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
		kern_512(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu, MR_, NB_, 0);        \
	}
#define K512P(MR_, NB_)                                                                  \
	T512 static void kern_512p_##MR_##_##NB_(const tile_t *t, const int *toff, int ntaps, \
	                                         int run, const float *kp, int ldk,           \
	                                         const float *bias, int jb, int ncols, int relu) { \
		kern_512(t, toff, ntaps, run, kp, ldk, bias, jb, ncols, relu, MR_, NB_, 1);        \
	}
K512P(12, 1)
K512P(12, 2)
K512P(8, 3)
K512P(4, 4)
K512(12, 1)
K512(12, 2)
K512(8, 1)
K512(8, 2)
K512(8, 3)
K512(6, 1)
K512(6, 2)
K512(6, 3)
K512(6, 4)

// kern_512pp is the pooled tile of kern_512 (mr 8: two pool windows) for
// layers of 33..40 channels (the lab's conv_2 has 40), two pixels in five
// vectors where three vectors a pixel left 8 of 48 lanes idle: pixel p's
// channels in lanes 0..39 of the five, q's in 40..79. The middle vector,
// p's channels 32..39 and q's 0..7, takes a weight vector of both and the
// two inputs blended. Each output is still its bias, then one FMA per
// kernel entry in the same order, then the ReLU max: the same bits. The
// pairs are the upper and lower pixels of a window's column, so the max
// of a window's two pairs holds kern_512's a (upper row) in lanes 0..39
// and b (lower row) in 40..79, and the window's max is max(a, b) as there.
T512 static void kern_512pp(const tile_t *t, const int *toff, int ntaps, int run,
                            const float *kp, int ldk, const float *bias, int ncols, int relu) {
	__m512 c[4][5]; // pair p: pixels ip[p] (upper row) and ip[4+p] (lower)
	{
		const __m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
		const __m512 b3 = _mm512_loadu_ps(bias + 8), b4 = _mm512_loadu_ps(bias + 24);
		const __m512 b2 = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(bias + 32)), _mm256_loadu_ps(bias), 1);
#pragma GCC unroll 4
		for (int p = 0; p < 4; p++) {
			c[p][0] = b0;
			c[p][1] = b1;
			c[p][2] = b2;
			c[p][3] = b3;
			c[p][4] = b4;
		}
	}
	const float *kt = kp;
	for (int tp = 0; tp < ntaps; tp++) {
		const float *a[8];
#pragma GCC unroll 8
		for (int r = 0; r < 8; r++) a[r] = t->ip[r] + toff[tp];
		for (int ci = 0; ci < run; ci++, kt += ldk) {
			const __m512 w0 = _mm512_loadu_ps(kt), w1 = _mm512_loadu_ps(kt + 16);
			const __m512 w3 = _mm512_loadu_ps(kt + 8), w4 = _mm512_loadu_ps(kt + 24);
			const __m512 w2 = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(kt + 32)), _mm256_loadu_ps(kt), 1);
#pragma GCC unroll 4
			for (int p = 0; p < 4; p++) {
				const __m512 xp = _mm512_set1_ps(a[p][ci]), xq = _mm512_set1_ps(a[4 + p][ci]);
				const __m512 xpq = _mm512_mask_broadcastss_ps(xp, 0xFF00, _mm_load_ss(a[4 + p] + ci));
				c[p][0] = _mm512_fmadd_ps(xp, w0, c[p][0]);
				c[p][1] = _mm512_fmadd_ps(xp, w1, c[p][1]);
				c[p][2] = _mm512_fmadd_ps(xpq, w2, c[p][2]);
				c[p][3] = _mm512_fmadd_ps(xq, w3, c[p][3]);
				c[p][4] = _mm512_fmadd_ps(xq, w4, c[p][4]);
			}
		}
	}
	if (relu) {
		const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 4
		for (int p = 0; p < 4; p++)
#pragma GCC unroll 5
			for (int j = 0; j < 5; j++) c[p][j] = _mm512_max_ps(c[p][j], z);
	}
	// lanes 8..15 of the first vector, then 0..7 of the second
	const __m512i mid = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23);
	const __mmask16 last = (__mmask16)((1u << (ncols - 32)) - 1);
#pragma GCC unroll 2
	for (int i = 0; i < 2; i++) {
		if (i >= t->rows) break;
		__m512 m[5]; // a in lanes 0..39, b in 40..79
#pragma GCC unroll 5
		for (int j = 0; j < 5; j++) m[j] = _mm512_max_ps(c[2 * i][j], c[2 * i + 1][j]);
		float *o = t->op[i];
		_mm512_storeu_ps(o, _mm512_max_ps(m[0], _mm512_permutex2var_ps(m[2], mid, m[3])));
		_mm512_storeu_ps(o + 16, _mm512_max_ps(m[1], _mm512_permutex2var_ps(m[3], mid, m[4])));
		_mm512_mask_storeu_ps(o + 32, last, _mm512_max_ps(m[2], _mm512_shuffle_f32x4(m[4], m[4], 0xEE)));
	}
}

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

// A layer of 17..20 output channels (the lab's conv_1 has 20) would leave
// 12 of the 32 lanes of two 16-channel vectors idle. On AVX-512 it goes
// pixels-in-lanes instead: each vector holds 16 consecutive output pixels
// of a row times one channel, the input rows copied channel-planar so the
// 16 values of one kernel entry are one load and the weight a broadcast.
// Every output is still its bias, then one FMA per kernel entry in the
// same order (ky, kx, ci), then the ReLU max, as in the channel tiles.
#define PXV 6     // pixel vectors per tile (24 accumulators)
#define PXKMAX 4096 // kernel entries at most for this path

typedef struct {
	const float *ip[PXV]; // planar input of the segment's first pixel
	float *op[PXV];       // output of its first pixel
	int cnt[PXV];         // pixels in the segment (1..16)
} pxtile_t;

// px_cols is the number of last output channels computed pixels-in-lanes:
// all of a layer of 17..20 channels (the lab's conv_1), where 4-channel
// groups fill every lane, else none. (A layer's last few channels this way
// beside channel tiles measured slower, as did short rows, strided input
// and many input channels, whose planar copy costs more; without the pool
// fused the outputs are stored 4 channels at a time, which pays off only
// on long kernels.)
static int px_cols(const conv_t *c, int pool) {
	const long K = (long)c->KH * c->run;
	if (c->isa != 2 || c->SW != 1 || c->OC < 17 || c->OC > 20 || c->OW < 16 ||
	    c->panel < c->ldk || K > PXKMAX || c->C > 8 || (!pool && (c->C > 4 || K < 36)))
		return 0;
	return c->OC;
}

// planar3 copies an input row of W pixels of 3 channels to d[ci*ld + x].
T512 static void planar3(const float *s, int W, float *d, int ld) {
	const __m512i i0a = _mm512_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0, 0, 0, 0, 0);
	const __m512i i1a = _mm512_setr_epi32(1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 0, 0, 0, 0, 0);
	const __m512i i2a = _mm512_setr_epi32(2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0, 0, 0, 0, 0, 0);
	// second step: lanes < 11 (10 for channel 2) from t, the rest from c
	const __m512i i0b = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17, 20, 23, 26, 29);
	const __m512i i1b = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 18, 21, 24, 27, 30);
	const __m512i i2b = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 19, 22, 25, 28, 31);
	for (int x = 0; x < W; x += 16) {
		const int n = 3 * (W - x < 16 ? W - x : 16); // floats left
		const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
		const __mmask16 m1 = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
		const __mmask16 m2 = n >= 48 ? 0xffff : n <= 32 ? 0 : (__mmask16)((1u << (n - 32)) - 1);
		const __m512 a = _mm512_maskz_loadu_ps(m0, s + 3 * x);
		const __m512 b = _mm512_maskz_loadu_ps(m1, s + 3 * x + 16);
		const __m512 cc = _mm512_maskz_loadu_ps(m2, s + 3 * x + 32);
		const __m512 v0 = _mm512_permutex2var_ps(_mm512_permutex2var_ps(a, i0a, b), i0b, cc);
		const __m512 v1 = _mm512_permutex2var_ps(_mm512_permutex2var_ps(a, i1a, b), i1b, cc);
		const __m512 v2 = _mm512_permutex2var_ps(_mm512_permutex2var_ps(a, i2a, b), i2b, cc);
		_mm512_storeu_ps(d + x, v0); // ld >= W + 16: room for the whole vector
		_mm512_storeu_ps(d + ld + x, v1);
		_mm512_storeu_ps(d + 2 * ld + x, v2);
	}
}

T512 __attribute__((always_inline)) static inline void
px_store(float *o, int cnt, int OC, __mmask8 m, __m512 a0, __m512 a1,
         __m512 a2, __m512 a3) {
	// 4x4 transposes in each 128-bit lane: u[j] lane i is pixel 4i+j.
	const __m512 t0 = _mm512_unpacklo_ps(a0, a1), t1 = _mm512_unpackhi_ps(a0, a1);
	const __m512 t2 = _mm512_unpacklo_ps(a2, a3), t3 = _mm512_unpackhi_ps(a2, a3);
	__m512 u[4];
	u[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
	u[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
	u[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
	u[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
#define PX_ST(I)                                                                          \
	for (int j = 0; j < 4; j++) {                                                        \
		const int px = 4 * (I) + j;                                                      \
		if (px < cnt) _mm_mask_storeu_ps(o + (long)px * OC, m, _mm512_extractf32x4_ps(u[j], I)); \
	}
	PX_ST(0)
	PX_ST(1)
	PX_ST(2)
	PX_ST(3)
#undef PX_ST
}

// px_acc accumulates channels jb..jb+3 of PXV pixel vectors, vector v
// reading its 16 values of kernel entry k at ip[v] + off[k].
T512 __attribute__((always_inline)) static inline void
px_acc(__m512 acc[PXV][4], const float *const *ip, const int *off, int K,
       const float *kp, int ldk, const float *bias, int jb) {
	const __m512 b0 = _mm512_set1_ps(bias[jb]), b1 = _mm512_set1_ps(bias[jb + 1]);
	const __m512 b2 = _mm512_set1_ps(bias[jb + 2]), b3 = _mm512_set1_ps(bias[jb + 3]);
#pragma GCC unroll 6
	for (int v = 0; v < PXV; v++) {
		acc[v][0] = b0;
		acc[v][1] = b1;
		acc[v][2] = b2;
		acc[v][3] = b3;
	}
	const float *w = kp + jb;
	for (int k = 0; k < K; k++, w += ldk) {
		const __m512 w0 = _mm512_set1_ps(w[0]), w1 = _mm512_set1_ps(w[1]);
		const __m512 w2 = _mm512_set1_ps(w[2]), w3 = _mm512_set1_ps(w[3]);
		const int o = off[k];
#pragma GCC unroll 6
		for (int v = 0; v < PXV; v++) {
			const __m512 x = _mm512_loadu_ps(ip[v] + o);
			acc[v][0] = _mm512_fmadd_ps(x, w0, acc[v][0]);
			acc[v][1] = _mm512_fmadd_ps(x, w1, acc[v][1]);
			acc[v][2] = _mm512_fmadd_ps(x, w2, acc[v][2]);
			acc[v][3] = _mm512_fmadd_ps(x, w3, acc[v][3]);
		}
	}
}

// kern_px computes channels jb..jb+3 of nv segments of up to 16 pixels,
// writing the first r of them.
T512 static void kern_px(const pxtile_t *t, int nv, const int *off, int K, const float *kp,
                         int ldk, const float *bias, int jb, int r, int OC, int relu) {
	__m512 acc[PXV][4];
	const float *ip[PXV];
#pragma GCC unroll 6
	for (int v = 0; v < PXV; v++) ip[v] = t->ip[v < nv ? v : nv > 0 ? nv - 1 : 0];
	px_acc(acc, ip, off, K, kp, ldk, bias, jb);
	if (relu) {
		const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 6
		for (int v = 0; v < PXV; v++)
#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) acc[v][j] = _mm512_max_ps(acc[v][j], z);
	}
	const __mmask8 m = (__mmask8)((1u << r) - 1);
#pragma GCC unroll 6
	for (int v = 0; v < PXV; v++) {
		if (v >= nv) break;
		px_store(t->op[v] + jb, t->cnt[v], OC, m, acc[v][0], acc[v][1], acc[v][2], acc[v][3]);
	}
}

// px_planar copies input rows [y0, y1) of image img channel-planar to pl,
// row y at pl + (y-y0)*C*ld, channel ci of it at + ci*ld, zero padded
// after the W pixels (ld >= W + 32).
static void px_planar(const conv_t *c, const float *img, int y0, int y1, float *pl, int ld) {
	for (int y = y0; y < y1; y++) {
		float *d = pl + (long)(y - y0) * c->C * ld;
		const float *s = img + (long)y * c->W * c->C;
		if (c->C == 3) {
			planar3(s, c->W, d, ld);
		} else {
			for (int ci = 0; ci < c->C; ci++)
				for (int x = 0; x < c->W; x++) d[ci * ld + x] = s[x * c->C + ci];
		}
		for (int ci = 0; ci < c->C; ci++) // read by masked-off lanes only
			for (int x = c->W; x < ld; x++) d[ci * ld + x] = 0;
	}
}

// px_offsets sets off[k] for kernel entry k = (ky*KW+kx)*C+ci: the
// planar offset of its input from the output pixel's.
static void px_offsets(const conv_t *c, int ld, int *off) {
	const long RS = (long)c->C * ld;
	for (int ky = 0, k = 0; ky < c->KH; ky++)
		for (int kx = 0; kx < c->KW; kx++)
			for (int ci = 0; ci < c->C; ci++) off[k++] = (int)(ky * RS + (long)ci * ld + kx);
}

// conv_px computes channels [jb0, OC) of output pixels [q0, q1) (as
// conv_range) pixels-in-lanes, 4 channels at a time.
static void conv_px(const conv_t *c, long q0, long q1, float *out, int jb0) {
	const int K = c->KH * c->run, W16 = c->W + 32;
	const long RS = (long)c->C * W16; // one planar input row
	const long per = (long)c->OH * c->OW;
	int off[PXKMAX];
	px_offsets(c, W16, off);
	float *pl = NULL;
	long plcap = 0;
	for (long n = q0 / per; n * per < q1; n++) {
		const long a = q0 > n * per ? q0 - n * per : 0;             // first pixel in image n
		const long b = q1 < (n + 1) * per ? q1 - n * per : per;     // its end
		const int oy0 = (int)(a / c->OW), oy1 = (int)((b - 1) / c->OW); // rows touched
		const int y0 = oy0 * c->SH, y1 = oy1 * c->SH + c->KH;          // input rows [y0, y1)
		const long need = (long)(y1 - y0) * RS;
		if (need > plcap) {
			free(pl);
			plcap = need;
			pl = malloc(sizeof(float) * plcap);
		}
		px_planar(c, c->in + n * (long)c->H * c->W * c->C, y0, y1, pl, W16);
		pxtile_t t;
		int nv = 0;
		for (long l = a; l < b;) {
			const int oy = (int)(l / c->OW), ox = (int)(l % c->OW);
			int cnt = c->OW - ox;
			if (cnt > 16) cnt = 16;
			if (cnt > b - l) cnt = (int)(b - l);
			t.ip[nv] = pl + (long)(oy * c->SH - y0) * RS + ox;
			t.op[nv] = out + (n * per + l - q0) * c->OC;
			t.cnt[nv] = cnt;
			l += cnt;
			if (++nv == PXV || l == b) {
				for (int jb = jb0; jb < c->OC; jb += 4)
					kern_px(&t, nv, off, K, c->kp, c->ldk, c->bias, jb,
					        c->OC - jb < 4 ? c->OC - jb : 4, c->OC, c->relu);
				nv = 0;
			}
		}
	}
	free(pl);
}

// conv_range computes output pixels [q0, q1) of the batch (pixels numbered
// row-major over images, rows, columns) into out, pixel q at out[(q-q0)*OC].
static void conv_range(const conv_t *c, long q0, long q1, float *out) {
	const long per = (long)c->OH * c->OW;
	const int wide24 = c->isa == 1 && c->ldk == 24 && c->panel >= 24;
	const int rem = px_cols(c, 0), OCm = c->OC - rem; // channels in vector tiles
	// AVX-512: blocks of up to 64 columns, as many pixels as the widest fits.
	const int w512 = c->panel < OCm ? c->panel : OCm;
	const int nb512 = w512 >= 64 ? 4 : (w512 + 15) / 16;
	const int mr = c->isa == 2 ? mr512(nb512) : wide24 ? 4 : MR;
	for (int p0 = 0; p0 < c->ldk && OCm > 0; p0 += c->panel) {
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
				for (int jb = p0; jb < p1 && jb < OCm; jb += 64) {
					int ncols = p1 - jb < 64 ? p1 - jb : 64;
					if (ncols > OCm - jb) ncols = OCm - jb;
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
	if (rem && q1 > q0) conv_px(c, q0, q1, out, OCm);
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

// pool_rows_2x2_512 is pool_rows_2x2 on 16 channels at a time: max_ps(a,
// b) is a > b ? a : b, NaN and signed zeros included, as the plain loop.
T512 static void pool_rows_2x2_512(const float *restrict r0, const float *restrict r1,
                                   int OW, int C, float *restrict o) {
	const __mmask16 last = (__mmask16)((1u << (C - 16 * ((C - 1) / 16))) - 1);
	for (int ox = 0; ox < OW; ox++, r0 += 2 * C, r1 += 2 * C, o += C) {
		for (int c = 0; c < C; c += 16) {
			const __mmask16 m = C - c >= 16 ? 0xffff : last;
			const __m512 a = _mm512_max_ps(_mm512_maskz_loadu_ps(m, r0 + c), _mm512_maskz_loadu_ps(m, r0 + C + c));
			const __m512 b = _mm512_max_ps(_mm512_maskz_loadu_ps(m, r1 + c), _mm512_maskz_loadu_ps(m, r1 + C + c));
			_mm512_mask_storeu_ps(o + c, m, _mm512_max_ps(a, b));
		}
	}
}

// kern_px_pool computes channels jb..jb+3 of np pairs of segments, each
// the same 16 (an even cnt[s]) columns of two conv rows (ip[2s], ip[2s+1]),
// and writes their 2x2 max pools, cnt[s]/2 pixels from op[s], the first r
// channels: max_ps(a, b) is a > b ? a : b, as pool_rows_2x2.
T512 static void kern_px_pool(const pxtile_t *t, int np, const int *off, int K,
                              const float *kp, int ldk, const float *bias, int jb, int r,
                              int OC, int relu) {
	__m512 acc[PXV][4];
	const float *ip[PXV];
#pragma GCC unroll 6
	for (int v = 0; v < PXV; v++) ip[v] = t->ip[v < 2 * np ? v : np > 0 ? 2 * np - 1 : 0];
	px_acc(acc, ip, off, K, kp, ldk, bias, jb);
	if (relu) {
		const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 6
		for (int v = 0; v < PXV; v++)
#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) acc[v][j] = _mm512_max_ps(acc[v][j], z);
	}
	const __mmask8 m = (__mmask8)((1u << r) - 1);
	const __m512i even = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
#pragma GCC unroll 3
	for (int s = 0; s < PXV / 2; s++) {
		if (s >= np) break;
		__m512 o[4];
#pragma GCC unroll 4
		for (int j = 0; j < 4; j++) {
			// lane 2i: columns 2i, 2i+1 of the upper row, then of the lower
			const __m512 a = acc[2 * s][j], b = acc[2 * s + 1][j];
			const __m512 ha = _mm512_max_ps(a, _mm512_permute_ps(a, 0xB1));
			const __m512 hb = _mm512_max_ps(b, _mm512_permute_ps(b, 0xB1));
			o[j] = _mm512_max_ps(ha, hb);
		}
		// pooled pixel p = 2L+h: channels 0..3 in 128-bit lane L of lo (h 0), hi (h 1)
		const __m512d t01 = _mm512_castps_pd(_mm512_permutex2var_ps(o[0], even, o[1]));
		const __m512d t23 = _mm512_castps_pd(_mm512_permutex2var_ps(o[2], even, o[3]));
		const __m512 lo = _mm512_castpd_ps(_mm512_unpacklo_pd(t01, t23));
		const __m512 hi = _mm512_castpd_ps(_mm512_unpackhi_pd(t01, t23));
		const int pc = t->cnt[s] / 2;
		float *op = t->op[s] + jb;
#define PXP_ST(L)                                                                               \
	if (2 * (L) < pc) _mm_mask_storeu_ps(op + (long)(2 * (L)) * OC, m, _mm512_extractf32x4_ps(lo, L)); \
	if (2 * (L) + 1 < pc) _mm_mask_storeu_ps(op + (long)(2 * (L) + 1) * OC, m, _mm512_extractf32x4_ps(hi, L));
		PXP_ST(0)
		PXP_ST(1)
		PXP_ST(2)
		PXP_ST(3)
#undef PXP_ST
	}
}

// conv_px_pool is bp_conv2d_pool for a layer all pixels-in-lanes: the
// tiles are the same columns of the two conv rows of a pool row, pooled
// in registers; the conv output is never stored.
static void conv_px_pool(const conv_t *c, int N, float *out, int OH, int OW) {
	const int K = c->KH * c->run, W16 = c->W + 32;
	const long RS = (long)c->C * W16;
	int off[PXKMAX];
	px_offsets(c, W16, off);
	const int y1 = (2 * OH - 1) * c->SH + c->KH; // input rows read
	float *pl = malloc(sizeof(float) * (long)y1 * RS);
	const int S = (2 * OW + 15) / 16; // segments of a conv row
	for (long n = 0; n < N; n++) {
		px_planar(c, c->in + n * (long)c->H * c->W * c->C, 0, y1, pl, W16);
		for (int py = 0; py < OH; py++) {
			for (int s0 = 0; s0 < S; s0 += PXV / 2) {
				pxtile_t t;
				const int np = S - s0 < PXV / 2 ? S - s0 : PXV / 2;
				for (int s = 0; s < np; s++) {
					const int ox = 16 * (s0 + s);
					t.ip[2 * s] = pl + (long)(2 * py * c->SH) * RS + ox;
					t.ip[2 * s + 1] = pl + (long)((2 * py + 1) * c->SH) * RS + ox;
					t.cnt[s] = 2 * OW - ox < 16 ? 2 * OW - ox : 16;
					t.op[s] = out + ((n * OH + py) * (long)OW + ox / 2) * c->OC;
				}
				for (int jb = 0; jb < c->OC; jb += 4)
					kern_px_pool(&t, np, off, K, c->kp, c->ldk, c->bias, jb,
					             c->OC - jb < 4 ? c->OC - jb : 4, c->OC, c->relu);
			}
		}
	}
	free(pl);
}

// conv_tile_pool is bp_conv2d_pool for a layer of at most 64 channels on
// AVX-512: each channel tile is mr/4 pool windows (one of 4 pixels for 4
// vectors: 6 pixels do not make whole windows, 8 do not fit the registers),
// pooled in registers, so the conv output is never stored.
static void conv_tile_pool(const conv_t *c, int N, float *out, int OH, int OW) {
	const int nb = (c->OC + 15) / 16, mr = nb == 4 ? 4 : mr512(nb), pc = mr / 4;
	const long rs = (long)c->W * c->C, cs = (long)c->SW * c->C; // input row, column step
	for (long n = 0; n < N; n++) {
		for (int py = 0; py < OH; py++) {
			const float *r0 = c->in + (n * c->H + 2L * py * c->SH) * rs;
			const float *r1 = r0 + c->SH * rs;
			for (int px0 = 0; px0 < OW; px0 += pc) {
				tile_t t;
				t.rows = OW - px0 < pc ? OW - px0 : pc;
				for (int i = 0; i < pc; i++) {
					const int px = px0 + (i < t.rows ? i : t.rows - 1);
					t.ip[2 * i] = r0 + 2 * px * cs;
					t.ip[2 * i + 1] = r0 + (2 * px + 1) * cs;
					t.ip[mr / 2 + 2 * i] = r1 + 2 * px * cs;
					t.ip[mr / 2 + 2 * i + 1] = r1 + (2 * px + 1) * cs;
					t.op[i] = out + ((n * OH + py) * (long)OW + px) * c->OC;
				}
				switch (nb) {
				case 1: kern_512p_12_1(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, 0, c->OC, c->relu); break;
				case 2: kern_512p_12_2(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, 0, c->OC, c->relu); break;
				case 3:
					if (c->OC <= 40)
						kern_512pp(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, c->OC, c->relu);
					else
						kern_512p_8_3(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, 0, c->OC, c->relu);
					break;
				default: kern_512p_4_4(&t, c->toff, c->KH, c->run, c->kp, c->ldk, c->bias, 0, c->OC, c->relu); break;
				}
			}
		}
	}
}

static void conv_pool_blocks(const conv_t *c, int N, int most, float *out, unsigned char *codes, int OH, int OW);

void bp_conv2d_pool(const float *in, int N, int H, int W, int C, const float *kp,
                    const float *bias, int KH, int KW, int OC, int SH, int SW,
                    int relu, float *out, int OH, int OW) {
	conv_t c;
	if (KH > 64) return;
	const int CH = (H - KH) / SH + 1, CW = (W - KW) / SW + 1; // conv output size
	conv_init(&c, in, H, W, C, kp, bias, KH, KW, OC, SH, SW, relu, CH, CW, bp_isa());
	if (OH > 0 && OW > 0 && px_cols(&c, 1) == OC) {
		conv_px_pool(&c, N, out, OH, OW);
		return;
	}
	if (OH > 0 && OW > 0 && c.isa == 2 && OC <= 64 && c.panel >= c.ldk) {
		conv_tile_pool(&c, N, out, OH, OW);
		return;
	}
	// Blocks of conv rows small enough to stay in L2 between conv and pool.
	conv_pool_blocks(&c, N, 32768, out, NULL, OH, OW);
}

// Training's pooled convolution keeps, per pooled value, which window
// entry it came from: 0..3 in row-major order (the first maximum, strict >,
// as bp_maxpool_grad picks), or 4 when that maximum is not positive and
// no gradient flows back through the ReLU. The pooled values are the
// maxima bp_conv2d and bp_maxpool give (non-negative after the ReLU, so
// any order of comparison gives the same bits).
static void pool_codes_row(const float *r0, const float *r1, int OW, int C, float *o, unsigned char *cd) {
	for (int ox = 0; ox < OW; ox++, r0 += 2 * C, r1 += 2 * C, o += C, cd += C)
		for (int c = 0; c < C; c++) {
			const float v[4] = {r0[c], r0[C + c], r1[c], r1[C + c]};
			float m = v[0];
			int k = 0;
			for (int j = 1; j < 4; j++)
				if (v[j] > m) m = v[j], k = j;
			o[c] = m;
			cd[c] = m > 0 ? (unsigned char)k : 4;
		}
}

T512 static void pool_codes_row_512(const float *r0, const float *r1, int OW, int C, float *o, unsigned char *cd) {
	const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2), three = _mm512_set1_epi32(3),
	              four = _mm512_set1_epi32(4);
	for (int ox = 0; ox < OW; ox++, r0 += 2 * C, r1 += 2 * C, o += C, cd += C)
		for (int c = 0; c < C; c += 16) {
			const __mmask16 t = C - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c)) - 1);
			const float *at[4] = {r0 + c, r0 + C + c, r1 + c, r1 + C + c};
			__m512 m = _mm512_maskz_loadu_ps(t, at[0]);
			__mmask16 k[4] = {0};
			for (int j = 1; j < 4; j++) {
				const __m512 v = _mm512_maskz_loadu_ps(t, at[j]);
				k[j] = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ);
				m = _mm512_mask_mov_ps(m, k[j], v);
			}
			__m512i code = _mm512_setzero_si512();
			code = _mm512_mask_mov_epi32(code, k[1], one);
			code = _mm512_mask_mov_epi32(code, k[2], two);
			code = _mm512_mask_mov_epi32(code, k[3], three);
			code = _mm512_mask_mov_epi32(four, _mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ), code);
			_mm512_mask_storeu_ps(o + c, t, m);
			_mm_mask_storeu_epi8(cd + c, t, _mm512_cvtepi32_epi8(code));
		}
}

// conv_pool_blocks runs c's convolution over blocks of an even number of
// conv rows, as many as fit in most floats, into scratch, and pools each
// pair of rows into out (with codes, keeping the windows' entries).
static void conv_pool_blocks(const conv_t *c, int N, int most, float *out, unsigned char *codes, int OH, int OW) {
	const int CH = c->OH, CW = c->OW, OC = c->OC;
	int blk = (most / (CW * OC > 0 ? CW * OC : 1)) & ~1;
	if (blk < 2) blk = 2;
	if (blk > 2 * OH) blk = 2 * OH;
	float *scratch = malloc(sizeof(float) * (long)blk * CW * OC);
	for (long n = 0; n < N; n++) {
		for (int y0 = 0; y0 < 2 * OH; y0 += blk) {
			const int rows = y0 + blk < 2 * OH ? blk : 2 * OH - y0;
			const long q0 = (n * CH + y0) * (long)CW;
			conv_range(c, q0, q0 + (long)rows * CW, scratch);
			for (int r = 0; r < rows; r += 2) {
				const float *r0 = scratch + (long)r * CW * OC, *r1 = r0 + (long)CW * OC;
				const long o = ((n * OH) + (y0 + r) / 2) * (long)OW * OC;
				if (codes)
					(c->isa == 2 ? pool_codes_row_512 : pool_codes_row)(r0, r1, OW, OC, out + o, codes + o);
				else
					(c->isa == 2 ? pool_rows_2x2_512 : pool_rows_2x2)(r0, r1, OW, OC, out + o);
			}
		}
	}
	free(scratch);
}

// bp_conv2d_pool_codes is bp_conv2d (with its ReLU) followed by a 2x2,
// stride 2 max pool for training: out gets the pooled values, codes their
// window entries (pool_codes_row); the unpooled output only passes through
// a block of rows that stays in L2.
void bp_conv2d_pool_codes(const float *in, int N, int H, int W, int C, const float *kp,
                          const float *bias, int KH, int KW, int OC, int SH, int SW,
                          float *out, unsigned char *codes, int OH, int OW, int isa) {
	conv_t c;
	if (KH > 64) return;
	const int CH = (H - KH) / SH + 1, CW = (W - KW) / SW + 1; // conv output size
	conv_init(&c, in, H, W, C, kp, bias, KH, KW, OC, SH, SW, 1, CH, CW, isa);
	// A whole image a block when it fits in a quarter of L2 (conv_1's
	// pixels-in-lanes kernel ran 1.9 times as long on two blocks an image
	// as on one).
	conv_pool_blocks(&c, N, 65536, out, codes, OH, OW);
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

// gk_512c is gk_512 for a tile of NK consecutive kernel entries of one
// kernel row (contiguous in NHWC), so each pixel's values are broadcast
// from one pointer at constant offsets instead of a table of offsets (which
// spill the general registers). The tile starts skip entries before the
// first it stores (a row's last tile is moved back to stay inside the row).
// With TQ > 0 the ncols - 16*NB channels past the NB full vectors (at most
// TW = 16/TQ) are packed for TQ entries per vector, lane l holding entry
// l%TQ times channel l/TQ: conv_1's 20 channels take 1.25 vectors per entry,
// not 2. The entries repeat as a broadcast load, the channels take one
// shuffle a pixel (shuffles share the FMA pipes).
// Per dk entry the FMAs and their order are gk_tile_avx's.
T512 __attribute__((always_inline)) static inline void
gk_512c(const float *x0, const long *pix, int np, int skip, const float *g, int OC,
        int jb, int ncols, float *dk, const int NK, const int NB, const int TQ) {
	const int tc = TQ ? ncols - 16 * NB : 0, NQ = TQ ? NK / TQ : 0;
	const __mmask16 last = TQ ? (__mmask16)0xFFFF : (__mmask16)((1u << (ncols - 16 * (NB - 1))) - 1);
	const __mmask16 tmask = (__mmask16)((1u << tc) - 1);
	__m512i perm = _mm512_setzero_si512();
	if (TQ) {
		int pi[16];
		for (int l = 0; l < 16; l++) pi[l] = l / TQ;
		perm = _mm512_loadu_si512(pi);
	}
	__m512 acc[24][4], at[12];
#pragma GCC unroll 24
	for (int i = 0; i < NK; i++) {
#pragma GCC unroll 4
		for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();
	}
#pragma GCC unroll 12
	for (int t = 0; t < NQ; t++) at[t] = _mm512_setzero_ps();
	for (int q = 0; q < np; q++) {
		const float *x = x0 + pix[q];
		const float *gp = g + (long)q * OC + jb;
		__m512 gv[4], gt = _mm512_setzero_ps();
		load_row512(gv, gp, NB, last);
		// The tail channels, each repeated TQ times: one shuffle a pixel.
		if (TQ == 4)
			gt = _mm512_castps128_ps512(tc == 4 ? _mm_loadu_ps(gp + 16 * NB) : _mm_maskz_loadu_ps(tmask, gp + 16 * NB));
		if (TQ == 2)
			gt = _mm512_castps256_ps512(tc == 8 ? _mm256_loadu_ps(gp + 16 * NB) : _mm256_maskz_loadu_ps(tmask, gp + 16 * NB));
		if (TQ) gt = _mm512_permutexvar_ps(perm, gt);
#pragma GCC unroll 24
		for (int i = 0; i < NK; i++) {
			const __m512 v = _mm512_set1_ps(x[i]);
#pragma GCC unroll 4
			for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(v, gv[j], acc[i][j]);
		}
#pragma GCC unroll 12
		for (int t = 0; t < NQ; t++) {
			// TQ entries repeated across the vector: a broadcast load.
			const __m512 xq = TQ == 4 ? _mm512_broadcast_f32x4(_mm_loadu_ps(x + t * TQ))
			                          : _mm512_castpd_ps(_mm512_broadcastsd_pd(_mm_load_sd((const double *)(x + t * TQ))));
			at[t] = _mm512_fmadd_ps(xq, gt, at[t]);
		}
	}
#pragma GCC unroll 24
	for (int i = 0; i < NK; i++) {
		if (i < skip) continue;
		float *d = dk + (long)i * OC + jb;
#pragma GCC unroll 4
		for (int j = 0; j < NB; j++) {
			const __mmask16 m = j < NB - 1 ? (__mmask16)0xFFFF : last;
			_mm512_mask_storeu_ps(d + 16 * j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + 16 * j), acc[i][j]));
		}
	}
	if (TQ) {
		float tb[12][16];
#pragma GCC unroll 12
		for (int t = 0; t < NQ; t++) _mm512_storeu_ps(tb[t], at[t]);
		for (int i = skip; i < NK; i++)
			for (int c = 0; c < tc; c++) dk[(long)i * OC + jb + 16 * NB + c] += tb[i / TQ][c * TQ + i % TQ];
	}
}

#define GK512C(NK_, NB_, TQ_)                                                                 \
	T512 static void gk_512c_##NB_##_##TQ_(const float *x0, const long *pix, int np, int skip, \
	                                       const float *g, int OC, int jb, int ncols, float *dk) { \
		gk_512c(x0, pix, np, skip, g, OC, jb, ncols, dk, NK_, NB_, TQ_);                        \
	}
GK512C(24, 1, 0)
GK512C(12, 2, 0)
GK512C(8, 3, 0)
GK512C(6, 4, 0)
GK512C(12, 1, 4)
GK512C(16, 1, 2)
GK512C(8, 2, 4)
GK512C(10, 2, 2)

typedef void gk512c_fn(const float *, const long *, int, int, const float *, int, int, int, float *);

// gk_512_block adds a block of pixels' kernel gradient into dk: column
// blocks of up to 64 channels (a last block of 1 or 2 vectors and a few
// channels packed, see gk_512c), each over tiles of kernel entries within a
// kernel row; rows shorter than a tile take the general gk_512.
static void gk_512_block(const float *img, const long *pix, int np, const int *off,
                         int KH, int R, int rowoff, const float *g, int OC, float *dk) {
	for (int jb = 0; jb < OC;) {
		const int rem = OC - jb, F = rem / 16, T = rem % 16;
		int ncols = rem < 64 ? rem : 64, NK, tq = 0;
		gk512c_fn *fn;
		if (rem <= 64 && T && F >= 1 && F <= 2 && T <= 8) {
			tq = T <= 4 ? 4 : 2;
			static gk512c_fn *const packed[2][2] = {{gk_512c_1_4, gk_512c_1_2}, {gk_512c_2_4, gk_512c_2_2}};
			static const int pnk[2][2] = {{12, 16}, {8, 10}};
			fn = packed[F - 1][tq == 2];
			NK = pnk[F - 1][tq == 2];
		} else {
			const int nb = (ncols + 15) / 16;
			static gk512c_fn *const plain[4] = {gk_512c_1_0, gk_512c_2_0, gk_512c_3_0, gk_512c_4_0};
			fn = plain[nb - 1];
			NK = nb == 1 ? 24 : nb == 2 ? 12 : nb == 3 ? 8 : 6;
		}
		if (R < NK) { // short rows: the general tiles over all entries
			const int nb = (ncols + 15) / 16, GNK = nb == 1 ? 24 : nb == 2 ? 12 : nb == 3 ? 8 : 6;
			for (int k0 = 0; k0 < KH * R; k0 += GNK) {
				const int nk = KH * R - k0 < GNK ? KH * R - k0 : GNK;
				float *d = dk + (long)k0 * OC;
				switch (nb) {
				case 1: gk_512_1(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
				case 2: gk_512_2(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
				case 3: gk_512_3(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
				default: gk_512_4(img, pix, np, off + k0, nk, g, OC, jb, ncols, d); break;
				}
			}
		} else {
			for (int ky = 0; ky < KH; ky++) {
				for (int r0 = 0; r0 < R; r0 += NK) {
					const int s0 = r0 + NK <= R ? r0 : R - NK; // last tile moved back
					const long xo = (long)ky * rowoff + s0;
					fn(img + xo, pix, np, r0 - s0, g, OC, jb, ncols, dk + ((long)ky * R + s0) * OC);
				}
			}
		}
		jb += ncols;
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
	if (db) // the bias gradient is optional: training sums it in its own op
		for (long q = 0; q < (long)N * OH * OW; q++)
			for (int j = 0; j < OC; j++) db[j] += dout[q * OC + j];
	if (isa == 0) {
		gk_plain(in, dout, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, dk, db);
		return;
	}
	// Blocks of whole images whose output gradient and input fit in about a
	// quarter of L2 are summed in registers at once, so small layers (conv_4:
	// 12 pixels an image) do not store the tiles after every image. Both
	// vector paths add each block's sums into dk in the same order.
	const int K = KH * KW * C, P = OH * OW;
	const long imsz = (long)H * W * C, per = (long)P * OC + imsz;
	int B = (int)(65536 / (per > 0 ? per : 1));
	if (B < 1) B = 1;
	if (B > N) B = N;
	long *pix = malloc(sizeof(long) * P * (B > 0 ? B : 1)); // B is 0 only if N is
	int *off = malloc(sizeof(int) * K);
	for (int b = 0; b < B; b++)
		for (int oy = 0; oy < OH; oy++)
			for (int ox = 0; ox < OW; ox++)
				pix[(long)b * P + oy * OW + ox] = b * imsz + ((long)oy * SH * W + (long)ox * SW) * C;
	for (int ky = 0; ky < KH; ky++)
		for (int kx = 0; kx < KW; kx++)
			for (int ci = 0; ci < C; ci++) off[(ky * KW + kx) * C + ci] = (ky * W + kx) * C + ci;
	for (long n = 0; n < N; n += B) {
		const int nb = N - n < B ? (int)(N - n) : B;
		const float *img = in + n * imsz;
		const float *g = dout + n * (long)P * OC;
		if (isa == 2) {
			gk_512_block(img, pix, nb * P, off, KH, KW * C, W * C, g, OC, dk);
			continue;
		}
		for (int k0 = 0; k0 < K; k0 += 6) {
			const int nk = K - k0 < 6 ? K - k0 : 6;
			for (int jb = 0; jb < OC; jb += 16) {
				const int nj = OC - jb < 16 ? OC - jb : 16;
				gk_tile_avx(img, pix, nb * P, off + k0, nk, g, OC, jb, nj, dk + (long)k0 * OC);
			}
		}
	}
	free(pix);
	free(off);
}

// axpy adds s*row to g; add adds s to d (the plain path's rounding: a
// product, then a sum).
static inline void axpy_plain(float *g, const float *row, float s, int n) {
	for (int i = 0; i < n; i++) g[i] += s * row[i];
}
static inline void add_plain(float *d, const float *s, int n) {
	for (int i = 0; i < n; i++) d[i] += s[i];
}
// gcc would fuse a vector product and sum into an FMA (-ffp-contract=fast):
// contraction off keeps the plain rounding.
#define T512NC T512 __attribute__((optimize("fp-contract=off")))

// The input gradient is summed per image in groups of kernel rows: for
// each group, per output pixel in order, the gradient of the patch's rows g
// = sum_j dout[j] * k[rows, j] (j from 0, zero gradients, most after a ReLU,
// skipped) is added onto the input rows it came from (KW*C contiguous
// values each in NHWC). A group is the whole patch when the kernel fits in
// L1, else one row, so the vector paths' slice of the transposed kernel
// stays in L1 while the pixels stream by. Every path adds in this order,
// products then sums, so all give the same bits.
static int gi_group_rows(int KH, int KW, int C, int OC) {
	return (long)KH * KW * C * OC * sizeof(float) <= 32768 ? KH : 1;
}

static void grad_input_plain(const float *dout, const float *k, int N, int H, int W, int C,
                             int KH, int KW, int OC, int SH, int SW, int OH, int OW, float *din) {
	const int R = KW * C, GR = gi_group_rows(KH, KW, C, OC), GK = GR * R;
	float *kt = malloc(sizeof(float) * GK * OC);
	float *g = malloc(sizeof(float) * GK);
	for (int y0 = 0; y0 < KH; y0 += GR) {
		for (int i = 0; i < GK; i++)
			for (int j = 0; j < OC; j++) kt[(long)j * GK + i] = k[((long)y0 * R + i) * OC + j];
		for (long n = 0; n < N; n++) {
			for (int oy = 0; oy < OH; oy++) {
				for (int ox = 0; ox < OW; ox++) {
					const float *go = dout + ((n * OH + oy) * (long)OW + ox) * OC;
					memset(g, 0, sizeof(float) * GK);
					int any = 0;
					for (int j = 0; j < OC; j++) {
						if (go[j] == 0) continue;
						any = 1;
						axpy_plain(g, kt + (long)j * GK, go[j], GK);
					}
					if (!any) continue;
					float *base = din + ((n * H + (long)oy * SH + y0) * W + (long)ox * SW) * C;
					for (int ky = 0; ky < GR; ky++) add_plain(base + (long)ky * W * C, g + ky * R, R);
				}
			}
		}
	}
	free(g);
	free(kt);
}

// The vector paths keep g in registers instead of storing it for every j:
// a tile of NV vectors of the group's rows (each row padded to whole
// vectors; kp holds the transposed kernel, ldv floats per output channel)
// is summed over the list of non-zero output gradients, then added to the
// input rows, each vector through its own offset and lane mask. Products
// then sums (contraction off), as the plain loop rounds them.
T512NC __attribute__((always_inline)) static inline void
gi_512(const float *go, const int *jl, int nj, const float *kp, long ldv,
       float *base, const int *voff, const __mmask16 *vm, const int NV) {
	__m512 acc[24];
#pragma GCC unroll 24
	for (int v = 0; v < NV; v++) acc[v] = _mm512_setzero_ps();
	for (int t = 0; t < nj; t++) {
		const __m512 s = _mm512_set1_ps(go[jl[t]]);
		const float *kr = kp + jl[t] * ldv;
#pragma GCC unroll 24
		for (int v = 0; v < NV; v++)
			acc[v] = _mm512_add_ps(acc[v], _mm512_mul_ps(s, _mm512_load_ps(kr + 16 * v)));
	}
#pragma GCC unroll 24
	for (int v = 0; v < NV; v++) {
		float *d = base + voff[v];
		if (vm[v] == 0xFFFF) // whole vector: a masked store costs more on Zen
			_mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), acc[v]));
		else
			_mm512_mask_storeu_ps(d, vm[v], _mm512_add_ps(_mm512_maskz_loadu_ps(vm[v], d), acc[v]));
	}
}

#define GI512(NV_)                                                                          \
	T512NC static void gi_512_##NV_(const float *go, const int *jl, int nj, const float *kp, \
	                                long ldv, float *base, const int *voff, const __mmask16 *vm) { \
		gi_512(go, jl, nj, kp, ldv, base, voff, vm, NV_);                                     \
	}
GI512(24)
GI512(16)
GI512(12)
GI512(8)
GI512(4)
GI512(2)
GI512(1)

// The AVX2 form: 8-lane vectors, at most 12 in registers, masks as vectors.
#define TAVXNC __attribute__((target("avx2,fma"), optimize("fp-contract=off")))
TAVXNC __attribute__((always_inline)) static inline void
gi_avx(const float *go, const int *jl, int nj, const float *kp, long ldv,
       float *base, const int *voff, const int *vm, const int NV) {
	__m256 acc[12];
#pragma GCC unroll 12
	for (int v = 0; v < NV; v++) acc[v] = _mm256_setzero_ps();
	for (int t = 0; t < nj; t++) {
		const __m256 s = _mm256_set1_ps(go[jl[t]]);
		const float *kr = kp + jl[t] * ldv;
#pragma GCC unroll 12
		for (int v = 0; v < NV; v++)
			acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(s, _mm256_load_ps(kr + 8 * v)));
	}
#pragma GCC unroll 12
	for (int v = 0; v < NV; v++) {
		float *d = base + voff[v];
		const __m256i m = _mm256_loadu_si256((const __m256i *)(vm + 8 * v));
		if (vm[8 * v + 7]) // whole vector: vmaskmovps stores are microcoded on Zen
			_mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), acc[v]));
		else
			_mm256_maskstore_ps(d, m, _mm256_add_ps(_mm256_maskload_ps(d, m), acc[v]));
	}
}

#define GIAVX(NV_)                                                                          \
	TAVXNC static void gi_avx_##NV_(const float *go, const int *jl, int nj, const float *kp, \
	                                long ldv, float *base, const int *voff, const int *vm) { \
		gi_avx(go, jl, nj, kp, ldv, base, voff, vm, NV_);                                     \
	}
GIAVX(12)
GIAVX(8)
GIAVX(4)
GIAVX(2)
GIAVX(1)

// nonzero_512 lists the j with go[j] != 0 (as C compares: NaN listed) in jl
// (room for OC+16) and returns how many, compressing 16 at a time.
T512 static int nonzero_512(const float *go, int OC, int *jl) {
	int nj = 0;
	const __m512i step = _mm512_set1_epi32(16);
	__m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	for (int j = 0; j < OC; j += 16, idx = _mm512_add_epi32(idx, step)) {
		const __mmask16 in = OC - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OC - j)) - 1);
		const __mmask16 m = _mm512_mask_cmp_ps_mask(in, _mm512_maskz_loadu_ps(in, go + j),
		                                            _mm512_setzero_ps(), _CMP_NEQ_UQ);
		// Compress in a register: the compressing store is microcoded on Zen.
		_mm512_storeu_si512(jl + nj, _mm512_maskz_compress_epi32(m, idx));
		nj += __builtin_popcount(m);
	}
	return nj;
}

// The vector paths read the kernel transposed, kp[group][j][GV*L]: L lanes
// (16 AVX-512, 8 AVX2), each kernel row padded to RV vectors, GR rows to a
// group, GV = GR*RV vectors per group. It is packed once per call of the
// caller (bp_gi_pack), not once per part of the batch.
typedef struct {
	int L, R, RV, GR, GV;
	long ldv, ldg, len;
} gi_geom;

static gi_geom gi_geometry(int KH, int KW, int C, int OC, int isa) {
	gi_geom g;
	g.L = isa == 2 ? 16 : 8;
	g.R = KW * C;
	g.RV = (g.R + g.L - 1) / g.L;
	g.GR = gi_group_rows(KH, KW, C, OC);
	g.GV = g.GR * g.RV;
	g.ldv = (long)g.GV * g.L;
	g.ldg = g.ldv * OC;
	g.len = g.ldg * (KH / g.GR);
	return g;
}

long bp_gi_packed_len(int KH, int KW, int C, int OC, int isa) {
	return isa >= 1 ? gi_geometry(KH, KW, C, OC, isa).len : 0;
}

void bp_gi_pack(const float *k, int KH, int KW, int C, int OC, int isa, float *kp) {
	if (isa < 1) return;
	const gi_geom g = gi_geometry(KH, KW, C, OC, isa);
	memset(kp, 0, sizeof(float) * g.len);
	for (int ky = 0; ky < KH; ky++)
		for (int r = 0; r < g.R; r++)
			for (int j = 0; j < OC; j++)
				kp[(ky / g.GR) * g.ldg + j * g.ldv + (long)(ky % g.GR) * g.RV * g.L + r] = k[((long)ky * g.R + r) * OC + j];
}

// grad_input_vec is the vector paths' driver, on the kernel bp_gi_pack
// packed (64-byte aligned).
static void grad_input_vec(const float *dout, const float *kp, int N, int H, int W, int C,
                           int KH, int KW, int OC, int SH, int SW, int OH, int OW,
                           float *din, int isa) {
	const gi_geom g = gi_geometry(KH, KW, C, OC, isa);
	const int L = g.L, R = g.R, RV = g.RV, GR = g.GR, GV = g.GV;
	const long ldv = g.ldv, ldg = g.ldg;
	int *voff = malloc(sizeof(int) * GV), *jl = malloc(sizeof(int) * (OC + 16));
	__mmask16 *vm = malloc(sizeof(__mmask16) * GV);
	int *vm8 = malloc(sizeof(int) * 8 * GV);
	for (int v = 0; v < GV; v++) {
		const int r0 = (v % RV) * L, left = R - r0 < L ? R - r0 : L;
		voff[v] = (v / RV) * W * C + r0;
		vm[v] = (__mmask16)((1u << left) - 1);
		for (int i = 0; i < 8; i++) vm8[8 * v + i] = i < left ? -1 : 0;
	}
	for (long n = 0; n < N; n++) {
		for (int y0 = 0; y0 < KH; y0 += GR) {
			const float *kr = kp + (y0 / GR) * ldg;
			for (int oy = 0; oy < OH; oy++) {
				for (int ox = 0; ox < OW; ox++) {
					const float *go = dout + ((n * OH + oy) * (long)OW + ox) * OC;
					int nj = 0;
					if (isa == 2) {
						nj = nonzero_512(go, OC, jl);
					} else {
						for (int j = 0; j < OC; j++) { // no branch to mispredict
							jl[nj] = j;
							nj += go[j] != 0;
						}
					}
					if (!nj) continue;
					float *base = din + ((n * H + (long)oy * SH + y0) * W + (long)ox * SW) * C;
					for (int v0 = 0; v0 < GV;) {
						const int left = GV - v0;
						const float *kv = kr + (long)v0 * L;
						if (isa == 2) {
							const int *o = voff + v0;
							const __mmask16 *m = vm + v0;
							if (left >= 24) gi_512_24(go, jl, nj, kv, ldv, base, o, m), v0 += 24;
							else if (left >= 16) gi_512_16(go, jl, nj, kv, ldv, base, o, m), v0 += 16;
							else if (left >= 12) gi_512_12(go, jl, nj, kv, ldv, base, o, m), v0 += 12;
							else if (left >= 8) gi_512_8(go, jl, nj, kv, ldv, base, o, m), v0 += 8;
							else if (left >= 4) gi_512_4(go, jl, nj, kv, ldv, base, o, m), v0 += 4;
							else if (left >= 2) gi_512_2(go, jl, nj, kv, ldv, base, o, m), v0 += 2;
							else gi_512_1(go, jl, nj, kv, ldv, base, o, m), v0 += 1;
						} else {
							const int *o = voff + v0, *m = vm8 + 8 * v0;
							if (left >= 12) gi_avx_12(go, jl, nj, kv, ldv, base, o, m), v0 += 12;
							else if (left >= 8) gi_avx_8(go, jl, nj, kv, ldv, base, o, m), v0 += 8;
							else if (left >= 4) gi_avx_4(go, jl, nj, kv, ldv, base, o, m), v0 += 4;
							else if (left >= 2) gi_avx_2(go, jl, nj, kv, ldv, base, o, m), v0 += 2;
							else gi_avx_1(go, jl, nj, kv, ldv, base, o, m), v0 += 1;
						}
					}
				}
			}
		}
	}
	free(voff);
	free(jl);
	free(vm);
	free(vm8);
}

void bp_conv2d_grad_input_packed(const float *dout, const float *k, const float *kp,
                                 int N, int H, int W, int C, int KH, int KW, int OC,
                                 int SH, int SW, int OH, int OW, float *din, int isa) {
	if (isa >= 1)
		grad_input_vec(dout, kp, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, din, isa);
	else
		grad_input_plain(dout, k, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, din);
}

void bp_conv2d_grad_input_isa(const float *dout, const float *k, int N, int H,
                              int W, int C, int KH, int KW, int OC, int SH, int SW,
                              int OH, int OW, float *din, int isa) {
	const long len = bp_gi_packed_len(KH, KW, C, OC, isa);
	float *kp = len ? aligned_alloc(64, sizeof(float) * ((len + 31) & ~15L)) : NULL;
	bp_gi_pack(k, KH, KW, C, OC, isa, kp);
	bp_conv2d_grad_input_packed(dout, k, kp, N, H, W, C, KH, KW, OC, SH, SW, OH, OW, din, isa);
	free(kp);
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
