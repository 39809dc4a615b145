// Compute kernels for NHWC float32 tensors. See kernels.go for the contracts.
#ifndef BADPRUNE_KERNELS_H
#define BADPRUNE_KERNELS_H

// Convolution (cross-correlation, as Keras) of an NHWC batch with a packed
// kernel kp[(ky*KW+kx)*C+ci][OCp] (OCp = OC rounded up to 8, zero padded) plus
// bias[OCp], then max(0, .) when relu is set. Valid padding: the caller pads the input for "same".
void bp_conv2d(const float *in, int N, int H, int W, int C,
               const float *kp, const float *bias, int KH, int KW, int OC,
               int SH, int SW, int relu, float *out, int OH, int OW);

// bp_conv2d followed by 2x2 max pooling with stride 2 (floor), without
// writing the convolution's output to memory. OH, OW are the pooled sizes.
void bp_conv2d_pool(const float *in, int N, int H, int W, int C,
                    const float *kp, const float *bias, int KH, int KW, int OC,
                    int SH, int SW, int relu, float *out, int OH, int OW);

// bp_conv2d (rectified) then a 2x2/2 max pool, for training: the pooled
// values and, per value, its window entry (0..3 row-major, 4 when not
// positive). OH, OW are the pooled sizes; isa the kernel set (bp_isa's
// numbering, at most bp_isa()).
void bp_conv2d_pool_codes(const float *in, int N, int H, int W, int C, const float *kp,
                          const float *bias, int KH, int KW, int OC, int SH, int SW,
                          float *out, unsigned char *codes, int OH, int OW, int isa);

// Max pooling of an NHWC batch; windows PHxPW, strides SHxSW, the window
// of output (oy,ox) starts at (oy*SH-padT, ox*SW-padL); cells outside the
// input are ignored.
void bp_maxpool(const float *in, int N, int H, int W, int C, int PH, int PW,
                int SH, int SW, int padT, int padL, float *out, int OH, int OW);

// Gradient of bp_maxpool: adds dout to din at the arg-max of each window
// (the first maximum in row-major window order, as the forward pass picks).
void bp_maxpool_grad(const float *in, const float *dout, int N, int H, int W,
                     int C, int PH, int PW, int SH, int SW, int padT, int padL,
                     int OH, int OW, float *din);

// Gradient of bp_conv2d with respect to the kernel and bias, accumulated
// (+=) into dk[(ky*KW+kx)*C+ci][OC] and db[OC] (db may be NULL).
void bp_conv2d_grad_kernel(const float *in, const float *dout, int N, int H,
                           int W, int C, int KH, int KW, int OC, int SH, int SW,
                           int OH, int OW, float *dk, float *db);

// Sparse update: for each of rows samples, add the effect of the input
// change din (listed per row by ptr and idx) to the output pre-activations
// dout; k is HWIO, the input HxWxC with the given padding; on kernel set
// set.
void bp_sparse_conv_list(int rows, const int *ptr, const int *idx, const float *din, int H, int W, int C,
                         const float *k, int KH, int KW, int OC, int SH, int SW, int padT, int padL, int OH, int OW,
                         float *dout, int set);

void bp_csr_dense(int rows, const int *ptr, const int *idx, const float *din,
                  int K, const float *W, int U, float *dout, int set);

// set: the kernel set (bp_isa's numbering, at most bp_isa()).
int bp_relu_apply(int na, const long *rows, int size, float *d, float *pre,
                  float *out, int *idx, int *ptr, int set);
int bp_add_index(int na, const long *rows, int size, const float *d,
                 float *state, int *idx, int *ptr, int set);
void bp_add_rows(float *a, const float *b, long n);
int bp_relu_from(int na, const long *rows, int size, const float *src, float *out, float *d, int *idx, int *ptr);
int bp_topn(const float *z, int n, int k, int *idx, float *val);
long bp_bf16_packed(int hdim, int k);
void bp_bf16_pack(const float *w, int hdim, int k, unsigned *out);
int bp_have_bf16(void);
long bp_logits_scratch(int hdim, int k);
int bp_logits_top(int n, int hdim, int k, const float *x, const float *wt, const float *bias,
                  const unsigned *wp, const float *nrm, const float *absb, double maxnrm, double maxabsb,
                  int m, const long *labels,
                  int *idx, float *val, float *zy, unsigned char *ok, float *scratch);
double bp_top_moves(int hdim, const float *a, const float *b, const float *wt,
                    const int *top, int t, float *dv, float *tmp);

int bp_convert_isa(const void *src, int kind, int n, int C, int HW, int cf,
                   float scale, float *dst, int isa);
int bp_narrow(const void *src, int kind, int n, int C, int HW, int cf, unsigned char *dst);

// o = max(x, 0) elementwise (NaN kept, -0 to +0); its gradient o = dy where y > 0, else 0.
void bp_relu(const float *x, long n, float *o);
void bp_relu_grad(const float *y, const float *dy, long n, float *o);

int bp_have_avx2(void);
int bp_isa(void);

// bp_conv2d on a given kernel set (bp_isa's numbering, at most bp_isa()), for tests.
void bp_conv2d_isa(const float *in, int N, int H, int W, int C,
                   const float *kp, const float *bias, int KH, int KW, int OC,
                   int SH, int SW, int relu, float *out, int OH, int OW, int isa);
void bp_conv2d_grad_kernel_isa(const float *in, const float *dout, int N, int H,
                               int W, int C, int KH, int KW, int OC, int SH, int SW,
                               int OH, int OW, float *dk, float *db, int isa);
void bp_conv2d_grad_input_isa(const float *dout, const float *k, int N, int H,
                              int W, int C, int KH, int KW, int OC, int SH, int SW,
                              int OH, int OW, float *din, int isa);

// Gradient of bp_conv2d with respect to its input, accumulated (+=) into
// din; k is the unpacked HWIO kernel [(ky*KW+kx)*C+ci][OC]. In two halves,
// so that a batch cut into parts packs the kernel once: bp_gi_pack writes
// k as kernel set isa reads it into kp (bp_gi_packed_len floats, 64-byte
// aligned, and 16 more to spare; none for the plain set), and
// bp_conv2d_grad_input_packed is the gradient on it (the plain set reads
// k).
long bp_gi_packed_len(int KH, int KW, int C, int OC, int isa);
void bp_gi_pack(const float *k, int KH, int KW, int C, int OC, int isa, float *kp);
void bp_conv2d_grad_input_packed(const float *dout, const float *k, const float *kp,
                                 int N, int H, int W, int C, int KH, int KW, int OC,
                                 int SH, int SW, int OH, int OW, float *din, int isa);

#endif
