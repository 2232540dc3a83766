/*
 * The inner loops of the convolution and 2x2 pooling kernels (_conv.pyx), one body for
 * float and double, built as _loops.h's are (target_clones, no FMA contraction).
 *
 * The convolution lowers one image at a time, a block of output rows at a time, into
 * a column matrix in the transposed layout colT (K, P): row r = (c*FH + ky)*FW + kx,
 * column q = the output position (i - i0)*OW + j. Then W (FN, K) @ colT writes the
 * block of the image's (FN, OH*OW) output in place: NCHW, no transpose pass, and colT
 * stays in the cache between the lowering and the product. A row of colT is, for a
 * stride of 1, a run of contiguous copies of the image's rows, and its adjoint (the
 * input gradient) a run of contiguous vector adds.
 */
#ifndef FASTBP_CONV_H
#define FASTBP_CONV_H

/* row_sum_f32/f64 (the bias gradient's per-image sums) come from _loops.h; its other
 * loops are not used here. */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "_loops.h"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* A convolution's geometry is the one window description of _loops.h (one definition). */
typedef fastbp_window fastbp_conv_geom;

/* The output columns j whose input column j*s + kx - p lies in [0, W): [*j0, *j1). */
static inline void conv_cols(const fastbp_conv_geom *g, npy_intp kx, npy_intp *j0,
                             npy_intp *j1)
{
    const npy_intp s = g->stride, p = g->pad, OW = g->ow;
    npy_intp a = p - kx > 0 ? (p - kx + s - 1) / s : 0;
    npy_intp last = g->w - 1 - kx + p;  /* j*s <= last */
    npy_intp b = last < 0 ? 0 : last / s + 1;
    if (b > OW) b = OW;
    if (a > b) a = b;
    *j0 = a;
    *j1 = b;
}

#define FASTBP_DEFINE_CONV2_LOOPS(T, S, I)                                                  \
                                                                                         \
/* colT (K, (i1 - i0)*OW) of output rows [i0, i1) of image xn (C, H, W); 0 in the      \
 * padding.                                                                           */ \
static FASTBP_SIMD void conv_lower_##S(const T *xn, T *colT, const fastbp_conv_geom *g,  \
                                       npy_intp i0, npy_intp i1)                         \
{                                                                                        \
    const npy_intp H = g->h, W = g->w, FH = g->fh, FW = g->fw, OW = g->ow;              \
    const npy_intp s = g->stride, p = g->pad, ld = (i1 - i0) * OW;                       \
    T *dst = colT;                                                                       \
    for (npy_intp c = 0; c < g->c; c++)                                                  \
        for (npy_intp ky = 0; ky < FH; ky++)                                             \
            for (npy_intp kx = 0; kx < FW; kx++, dst += ld) {                            \
                npy_intp j0, j1;                                                         \
                conv_cols(g, kx, &j0, &j1);                                              \
                for (npy_intp i = i0; i < i1; i++) {                                     \
                    T *d = dst + (i - i0) * OW;                                          \
                    const npy_intp y = i * s + ky - p;                                   \
                    if (y < 0 || y >= H) {                                               \
                        for (npy_intp j = 0; j < OW; j++) d[j] = 0;                      \
                        continue;                                                        \
                    }                                                                    \
                    const T *src = xn + (c * H + y) * W + kx - p;                        \
                    for (npy_intp j = 0; j < j0; j++) d[j] = 0;                          \
                    if (s == 1)                                                          \
                        for (npy_intp j = j0; j < j1; j++) d[j] = src[j];                \
                    else                                                                 \
                        for (npy_intp j = j0; j < j1; j++) d[j] = src[j * s];            \
                    for (npy_intp j = j1; j < OW; j++) d[j] = 0;                         \
                }                                                                        \
            }                                                                            \
}                                                                                        \
                                                                                         \
/* The adjoint: dxn[c, i*s + ky - p, j*s + kx - p] += colT[r, q] over the block, rows r \
 * in order (dxn is cleared by the caller before the image's first block).            */ \
static FASTBP_SIMD void conv_lift_##S(const T *colT, T *dxn, const fastbp_conv_geom *g,  \
                                      npy_intp i0, npy_intp i1)                          \
{                                                                                        \
    const npy_intp H = g->h, W = g->w, FH = g->fh, FW = g->fw, OW = g->ow;              \
    const npy_intp s = g->stride, p = g->pad, ld = (i1 - i0) * OW;                       \
    const T *src = colT;                                                                 \
    for (npy_intp c = 0; c < g->c; c++)                                                  \
        for (npy_intp ky = 0; ky < FH; ky++)                                             \
            for (npy_intp kx = 0; kx < FW; kx++, src += ld) {                            \
                npy_intp j0, j1;                                                         \
                conv_cols(g, kx, &j0, &j1);                                              \
                for (npy_intp i = i0; i < i1; i++) {                                     \
                    const npy_intp y = i * s + ky - p;                                   \
                    if (y < 0 || y >= H) continue;                                       \
                    const T *d = src + (i - i0) * OW;                                    \
                    T *xr = dxn + (c * H + y) * W + kx - p;                              \
                    if (s == 1)                                                          \
                        for (npy_intp j = j0; j < j1; j++) xr[j] += d[j];                \
                    else                                                                 \
                        for (npy_intp j = j0; j < j1; j++) xr[j * s] += d[j];            \
                }                                                                        \
            }                                                                            \
}                                                                                        \
                                                                                         \
/* dT (nq, fn) = the transpose of columns [0, nq) of d (fn rows, ld apart): the dW    \
 * product then runs as colT @ dT, the operand layout OpenBLAS is fastest at here.   */ \
static void conv_transpose_##S(const T *d, npy_intp ld, T *dT, npy_intp fn, npy_intp nq)  \
{                                                                                        \
    for (npy_intp f = 0; f < fn; f++)                                                    \
        for (npy_intp q = 0; q < nq; q++) dT[q * fn + f] = d[f * ld + q];                \
}                                                                                        \
                                                                                         \
/* out[f, q] = b[f] for the block's columns of one image's (FN, P) output (ld P). */    \
static void conv_fill_bias_##S(T *out, const T *b, npy_intp fn, npy_intp ld,             \
                               npy_intp q0, npy_intp q1)                                 \
{                                                                                        \
    for (npy_intp f = 0; f < fn; f++) {                                                  \
        T *o = out + f * ld;                                                             \
        const T v = b[f];                                                                \
        for (npy_intp q = q0; q < q1; q++) o[q] = v;                                     \
    }                                                                                    \
}                                                                                        \
                                                                                         \
/* L output elements of 2x2 max pooling from two input rows (r0, r1), with GCC vector \
 * extensions (32-byte vectors, as row_max): two loads of a row give its even and odd \
 * elements by a shuffle, and the selects are masks, so nothing branches on the data. \
 * The first maximum wins, a NaN over anything (np.argmax's rule).                   */ \
FASTBP_INLINE void pool2_block_##S(const T *r0, const T *r1, T *o, unsigned char *k,    \
                                   int relu)                                             \
{                                                                                        \
    typedef T V __attribute__((vector_size(32)));                                        \
    typedef I VI __attribute__((vector_size(32)));                                       \
    enum { L = 32 / sizeof(T) };                                                         \
    const VI even = FASTBP_EVEN_##S, odd = FASTBP_ODD_##S;                               \
    V u0, u1, w0, w1;                                                                    \
    memcpy(&u0, r0, sizeof u0);                                                          \
    memcpy(&u1, r0 + L, sizeof u1);                                                      \
    memcpy(&w0, r1, sizeof w0);                                                          \
    memcpy(&w1, r1 + L, sizeof w1);                                                      \
    V m = __builtin_shuffle(u0, u1, even);                                               \
    const V cand[3] = {__builtin_shuffle(u0, u1, odd), __builtin_shuffle(w0, w1, even),  \
                       __builtin_shuffle(w0, w1, odd)};                                  \
    VI best = {0}, t;                                                                    \
    for (int c = 0; c < 3; c++) {                                                        \
        const V v = cand[c];                                                             \
        t = (m == m) & ((v > m) | (v != v));                                             \
        m = (V)(((VI)v & t) | ((VI)m & ~t));                                             \
        best = (best & ~t) | ((I)(c + 1) & t);                                           \
    }                                                                                    \
    if (relu) { /* a ReLU before the pooling: a maximum <= 0 gives +0.0 and index 4 */   \
        const V vzero = {0};                                                             \
        t = m <= vzero;                                                                  \
        m = (V)((VI)m & ~t);                                                             \
        best = (best & ~t) | ((I)4 & t);                                                 \
    }                                                                                    \
    memcpy(o, &m, sizeof m);                                                             \
    for (int l = 0; l < L; l++) k[l] = (unsigned char)best[l];                           \
}                                                                                        \
                                                                                         \
/* Its gradient for L outputs: rows r0, r1 (2L elements each) get dout where the index \
 * points, 0 elsewhere; an element is written as 0 + dout (-0.0 gives +0.0, as the     \
 * NumPy twin's accumulation into zeros).                                            */ \
FASTBP_INLINE void pool2_grad_block_##S(const T *d, const unsigned char *k, T *r0, T *r1) \
{                                                                                        \
    typedef T V __attribute__((vector_size(32)));                                        \
    typedef I VI __attribute__((vector_size(32)));                                       \
    enum { L = 32 / sizeof(T) };                                                         \
    const VI lo = FASTBP_LO_##S, hi = FASTBP_HI_##S, zero_i = {0};                       \
    const V vzero = {0};                                                                 \
    V v;                                                                                 \
    VI kv;                                                                               \
    memcpy(&v, d, sizeof v);                                                             \
    v = v + vzero;                                                                       \
    for (int l = 0; l < L; l++) kv[l] = k[l];                                            \
    const V e0 = (V)((VI)v & (kv == zero_i)), o0 = (V)((VI)v & (kv == 1)),               \
            e1 = (V)((VI)v & (kv == 2)), o1 = (V)((VI)v & (kv == 3));                    \
    const V s0 = __builtin_shuffle(e0, o0, lo), s1 = __builtin_shuffle(e0, o0, hi);      \
    const V t0 = __builtin_shuffle(e1, o1, lo), t1 = __builtin_shuffle(e1, o1, hi);      \
    memcpy(r0, &s0, sizeof s0);                                                          \
    memcpy(r0 + L, &s1, sizeof s1);                                                      \
    memcpy(r1, &t0, sizeof t0);                                                          \
    memcpy(r1 + L, &t1, sizeof t1);                                                      \
}                                                                                        \
                                                                                         \
/* Planes [a, b) of 2x2 max pooling with stride 2 (no padding) of planes H x W into    \
 * OH x OW (OH = H / 2, OW = W / 2): the max of each window and, in a byte, the window \
 * index ky*2 + kx of its first maximum; with relu, of relu(x) (index 4: the maximum  \
 * was <= 0, no gradient). A row's last partial block goes through a padded copy, so   \
 * every element takes the same vector code.                                         */ \
static FASTBP_SIMD void maxpool2_fwd_##S(const T *x, T *out, unsigned char *idx,         \
                                         npy_intp H, npy_intp W, npy_intp OH,            \
                                         npy_intp OW, npy_intp a, npy_intp b, int relu)  \
{                                                                                        \
    enum { L = 32 / sizeof(T) };                                                         \
    for (npy_intp pl = a; pl < b; pl++)                                                  \
        for (npy_intp i = 0; i < OH; i++) {                                              \
            const T *r0 = x + (pl * H + 2 * i) * W, *r1 = r0 + W;                        \
            T *o = out + (pl * OH + i) * OW;                                             \
            unsigned char *k = idx + (pl * OH + i) * OW;                                 \
            npy_intp j = 0;                                                              \
            for (; j + L <= OW; j += L)                                                  \
                pool2_block_##S(r0 + 2 * j, r1 + 2 * j, o + j, k + j, relu);             \
            if (j < OW) {                                                                \
                T p0[2 * L] = {0}, p1[2 * L] = {0}, po[L];                               \
                unsigned char pk[L];                                                     \
                const npy_intp rest = OW - j;                                            \
                memcpy(p0, r0 + 2 * j, (size_t)(2 * rest) * sizeof(T));                  \
                memcpy(p1, r1 + 2 * j, (size_t)(2 * rest) * sizeof(T));                  \
                pool2_block_##S(p0, p1, po, pk, relu);                                   \
                memcpy(o + j, po, (size_t)rest * sizeof(T));                             \
                memcpy(k + j, pk, (size_t)rest);                                         \
            }                                                                            \
        }                                                                                \
}                                                                                        \
                                                                                         \
/* Its gradient over planes [a, b): each dout element to the element its index points \
 * at (nowhere for index 4), 0 elsewhere (a row or column left over by an odd H or W). */ \
static FASTBP_SIMD void maxpool2_bwd_##S(const T *dout, const unsigned char *idx, T *dx, \
                                         npy_intp H, npy_intp W, npy_intp OH,            \
                                         npy_intp OW, npy_intp a, npy_intp b)            \
{                                                                                        \
    enum { L = 32 / sizeof(T) };                                                         \
    for (npy_intp pl = a; pl < b; pl++) {                                                \
        T *xp = dx + pl * H * W;                                                         \
        for (npy_intp i = 0; i < OH; i++) {                                              \
            const T *d = dout + (pl * OH + i) * OW;                                      \
            const unsigned char *k = idx + (pl * OH + i) * OW;                           \
            T *r0 = xp + 2 * i * W, *r1 = r0 + W;                                        \
            npy_intp j = 0;                                                              \
            for (; j + L <= OW; j += L)                                                  \
                pool2_grad_block_##S(d + j, k + j, r0 + 2 * j, r1 + 2 * j);              \
            if (j < OW) {                                                                \
                T pd[L] = {0}, p0[2 * L], p1[2 * L];                                     \
                unsigned char pk[L] = {0};                                               \
                const npy_intp rest = OW - j;                                            \
                memcpy(pd, d + j, (size_t)rest * sizeof(T));                             \
                memcpy(pk, k + j, (size_t)rest);                                         \
                pool2_grad_block_##S(pd, pk, p0, p1);                                    \
                memcpy(r0 + 2 * j, p0, (size_t)(2 * rest) * sizeof(T));                  \
                memcpy(r1 + 2 * j, p1, (size_t)(2 * rest) * sizeof(T));                  \
            }                                                                            \
            for (j = 2 * OW; j < W; j++) r0[j] = r1[j] = 0;                              \
        }                                                                                \
        for (npy_intp y = 2 * OH; y < H; y++)                                            \
            memset(xp + y * W, 0, (size_t)W * sizeof(T));                                \
    }                                                                                    \
}

/* Shuffle masks of the pooling loops: the even and odd elements of two vectors, and
 * the interleaving of two vectors' low and high halves. */
#define FASTBP_EVEN_f64 {0, 2, 4, 6}
#define FASTBP_ODD_f64 {1, 3, 5, 7}
#define FASTBP_LO_f64 {0, 4, 1, 5}
#define FASTBP_HI_f64 {2, 6, 3, 7}
#define FASTBP_EVEN_f32 {0, 2, 4, 6, 8, 10, 12, 14}
#define FASTBP_ODD_f32 {1, 3, 5, 7, 9, 11, 13, 15}
#define FASTBP_LO_f32 {0, 8, 1, 9, 2, 10, 3, 11}
#define FASTBP_HI_f32 {4, 12, 5, 13, 6, 14, 7, 15}

FASTBP_DEFINE_CONV2_LOOPS(float, f32, int)
FASTBP_DEFINE_CONV2_LOOPS(double, f64, long long)

#endif
