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

typedef struct {
    npy_intp c, h, w;          /* channels, height, width of an input image */
    npy_intp fh, fw;           /* filter */
    npy_intp stride, pad;
    npy_intp oh, ow;           /* output positions */
} fastbp_conv_geom;

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

#define FASTBP_DEFINE_CONV2_LOOPS(T, S)                                                  \
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
/* Planes [a, b) of 2x2 max pooling with stride 2 (no padding) of planes H x W into    \
 * OH x OW (OH = H / 2, OW = W / 2): the max of each window and, in a byte, the window \
 * index ky*2 + kx of its first maximum (the first NaN if there is one, as np.argmax). \
 * Branch-free selects, so the loop vectorises.                                      */ \
static FASTBP_SIMD void maxpool2_fwd_##S(const T *x, T *out, unsigned char *idx,         \
                                         npy_intp H, npy_intp W, npy_intp OH,            \
                                         npy_intp OW, npy_intp a, npy_intp b)            \
{                                                                                        \
    for (npy_intp pl = a; pl < b; pl++)                                                  \
        for (npy_intp i = 0; i < OH; i++) {                                              \
            const T *r0 = x + (pl * H + 2 * i) * W, *r1 = r0 + W;                        \
            T *o = out + (pl * OH + i) * OW;                                             \
            unsigned char *k = idx + (pl * OH + i) * OW;                                 \
            for (npy_intp j = 0; j < OW; j++) {                                          \
                T m = r0[2 * j], v;                                                      \
                unsigned char best = 0;                                                  \
                int take;                                                                \
                v = r0[2 * j + 1];                                                       \
                take = (m == m) & ((v > m) | (v != v));                                  \
                m = take ? v : m; best = take ? 1 : best;                                \
                v = r1[2 * j];                                                           \
                take = (m == m) & ((v > m) | (v != v));                                  \
                m = take ? v : m; best = take ? 2 : best;                                \
                v = r1[2 * j + 1];                                                       \
                take = (m == m) & ((v > m) | (v != v));                                  \
                m = take ? v : m; best = take ? 3 : best;                                \
                o[j] = m;                                                                \
                k[j] = best;                                                             \
            }                                                                            \
        }                                                                                \
}                                                                                        \
                                                                                         \
/* Its gradient over planes [a, b): each dout element to the element its index points \
 * at, 0 elsewhere (a row or column left over by an odd H or W too). An element is     \
 * written as 0 + dout (so -0.0 gives +0.0, as the NumPy twin's accumulation into      \
 * zeros gives).                                                                     */ \
static FASTBP_SIMD void maxpool2_bwd_##S(const T *dout, const unsigned char *idx, T *dx, \
                                         npy_intp H, npy_intp W, npy_intp OH,            \
                                         npy_intp OW, npy_intp a, npy_intp b)            \
{                                                                                        \
    const T zero = 0;                                                                    \
    for (npy_intp pl = a; pl < b; pl++) {                                                \
        T *xp = dx + pl * H * W;                                                         \
        for (npy_intp i = 0; i < OH; i++) {                                              \
            const T *d = dout + (pl * OH + i) * OW;                                      \
            const unsigned char *k = idx + (pl * OH + i) * OW;                           \
            T *r0 = xp + 2 * i * W, *r1 = r0 + W;                                        \
            for (npy_intp j = 0; j < OW; j++) {                                          \
                const T v = d[j] + zero;                                                 \
                const unsigned char kk = k[j];                                           \
                r0[2 * j] = kk == 0 ? v : zero;                                          \
                r0[2 * j + 1] = kk == 1 ? v : zero;                                      \
                r1[2 * j] = kk == 2 ? v : zero;                                          \
                r1[2 * j + 1] = kk == 3 ? v : zero;                                      \
            }                                                                            \
            for (npy_intp j = 2 * OW; j < W; j++) r0[j] = r1[j] = zero;                  \
        }                                                                                \
        for (npy_intp y = 2 * OH; y < H; y++)                                            \
            for (npy_intp j = 0; j < W; j++) xp[y * W + j] = zero;                       \
    }                                                                                    \
}

FASTBP_DEFINE_CONV2_LOOPS(float, f32)
FASTBP_DEFINE_CONV2_LOOPS(double, f64)

#endif
