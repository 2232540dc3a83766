/*
 * The inner loops of fastbp's compiled kernels, one body for float and double.
 *
 * Each loop is written so that gcc vectorises it at -O3: selects are plain ternaries
 * on locals (Cython turns its conditional expressions into if/else statements, which
 * gcc leaves scalar, and a branch on random signs mispredicts half the time).
 * Where the compiler supports it, every loop is also built for AVX-512 and AVX2 and
 * picked at load time (target_clones), so one binary runs on any x86-64 and uses the
 * widest vectors there are (docs/benchmarks.md has the measured gain). No contraction into FMA (setup.py) and no fast-math: every clone gives the
 * same results, and NaN propagates as the kernel contract says.
 *
 * exp() is NumPy's own: the inner loop of np.exp for the dtype (its SIMD loop), looked
 * up once at import and called here on cache-sized chunks, between the loops that
 * prepare and finish its input. A scalar libm exp made the fused softmax slower than
 * NumPy at 1000 classes, and a branch-free vectorisable exp was slower than NumPy's
 * AVX-512 one. Sums accumulate in double.
 */
#ifndef FASTBP_LOOPS_H
#define FASTBP_LOOPS_H

#include <stddef.h>
#include <string.h>
#include <numpy/npy_common.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTBP_SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
/* The build the loops run here, in the order target_clones picks it. */
static const char *simd_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512f";
    if (__builtin_cpu_supports("avx2")) return "avx2";
    return "baseline";
}
#else
#define FASTBP_SIMD
static const char *simd_level(void) { return "baseline"; }
#endif

#define FASTBP_LANES 8

/* Elements per chunk of the passes around exp: a chunk stays in the L1 cache from the
 * pass that writes it to the pass that finishes it. */
#define FASTBP_CHUNK 2048

/* An element-wise ufunc inner loop (NumPy's PyUFuncGenericFunction) and its data. */
typedef void (*fastbp_ufunc_loop)(char **, npy_intp const *, npy_intp const *, void *);
typedef struct { fastbp_ufunc_loop loop; void *data; } fastbp_exp_t;

static fastbp_exp_t fastbp_exp_from(void *loop, void *data)
{
    fastbp_exp_t e = {(fastbp_ufunc_loop)loop, data};
    return e;
}

/* buf[i] = exp(buf[i]) for n contiguous elements of the given size. */
static inline void exp_inplace(fastbp_exp_t e, void *buf, npy_intp n, npy_intp size)
{
    char *args[2] = {(char *)buf, (char *)buf};
    npy_intp steps[2] = {size, size};
    if (n > 0) e.loop(args, &n, steps, e.data);
}

/* Column sums over rows [0, n) of the columns [0, m) of an array whose rows are ld
 * elements apart: acc[j] += a[i*ld + j], rows in order (the one order of every column
 * sum in fastbp, on both backends). */
#define FASTBP_COLSUM_LD(T, S)                                                          \
static FASTBP_SIMD void colsum_ld_##S(const T *a, npy_intp ld, double *acc, npy_intp n, \
                                      npy_intp m)                                       \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        const T *row = a + i * ld;                                                      \
        for (npy_intp j = 0; j < m; j++) acc[j] += row[j];                              \
    }                                                                                   \
}

/* Chapter 6: optimizer updates, dropout, batch normalization.
 *
 * The optimizer loops read every input of element i (the gradient included) before
 * they write any of it, so a gradient that is exactly the parameter or a state buffer
 * gives the update of its old values; the arrays they write are apart (checked at the
 * boundary). Each follows the book's order of operations, as the NumPy twin does with
 * whole arrays, with the hyperparameters rounded to T once: float64 results are the
 * book's to the last bit, and the two backends agree bit for bit.
 *
 * Batch normalization works on a range of columns [0, w) of an (n, ld) array (pointers
 * offset to the first column), so threads can split the columns: every column sum keeps
 * its one order whatever the split. The running statistics are written last, after
 * every read of gamma and beta.                                                    */
#define FASTBP_DEFINE_CH6_LOOPS(T, S, SQRT)                                              \
                                                                                        \
static FASTBP_SIMD void sgd_##S(T *p, const T *g, T lr, npy_intp n)                     \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) { T gi = g[i]; p[i] = p[i] - lr * gi; }             \
}                                                                                       \
                                                                                        \
/* v = mom * v - lr * g; p += v */                                                      \
static FASTBP_SIMD void momentum_##S(T *p, const T *g, T *v, T lr, T mom, npy_intp n)   \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        T gi = g[i], vi = v[i] * mom - lr * gi;                                         \
        p[i] = p[i] + vi; v[i] = vi;                                                    \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* Bengio et al. 2012, eq. 7 (the book's fixed form): p += mom2 * v; p -= c * g;      \
 * v = mom * v - lr * g, with mom2 = mom * mom and c = (1 + mom) * lr.               */ \
static FASTBP_SIMD void nesterov_##S(T *p, const T *g, T *v, T lr, T mom, T mom2, T c,  \
                                     npy_intp n)                                        \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        T gi = g[i], vi = v[i];                                                         \
        p[i] = (p[i] + mom2 * vi) - c * gi;                                             \
        v[i] = vi * mom - lr * gi;                                                      \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* h += g * g; p -= lr * g / (sqrt(h) + eps) */                                         \
static FASTBP_SIMD void adagrad_##S(T *p, const T *g, T *h, T lr, T eps, npy_intp n)    \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        T gi = g[i], hi = h[i] + gi * gi;                                               \
        p[i] = p[i] - (lr * gi) / (SQRT(hi) + eps); h[i] = hi;                          \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* h = decay * h + (1 - decay) * g * g; p -= lr * g / (sqrt(h) + eps) */                \
static FASTBP_SIMD void rmsprop_##S(T *p, const T *g, T *h, T lr, T decay, T omd, T eps, \
                                    npy_intp n)                                         \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        T gi = g[i], hi = h[i] * decay + (omd * gi) * gi;                               \
        p[i] = p[i] - (lr * gi) / (SQRT(hi) + eps); h[i] = hi;                          \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* m += a1 * (g - m); v += a2 * (g * g - v); p -= lr_t * m / (sqrt(v) + eps), with     \
 * a1 = 1 - beta1 and a2 = 1 - beta2.                                                */ \
static FASTBP_SIMD void adam_##S(T *p, const T *g, T *m, T *v, T lr_t, T a1, T a2,      \
                                 T eps, npy_intp n)                                     \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        T gi = g[i], mi = m[i] + a1 * (gi - m[i]), vi = v[i] + a2 * (gi * gi - v[i]);   \
        p[i] = p[i] - (lr_t * mi) / (SQRT(vi) + eps); m[i] = mi; v[i] = vi;             \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* mask = u > ratio; out = x * (mask * scale). Branch-free (a random mask defeats      \
 * branch prediction). The mask is taken first: out may be u.                       */ \
static FASTBP_SIMD void dropout_fwd_##S(const T *x, const T *u, T ratio, T scale,       \
                                        T *out, unsigned char *mask, npy_intp n)        \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) mask[i] = u[i] > ratio;                             \
    for (npy_intp i = 0; i < n; i++) out[i] = x[i] * ((T)mask[i] * scale);               \
}                                                                                       \
                                                                                        \
static FASTBP_SIMD void dropout_bwd_##S(const T *dout, const unsigned char *mask,       \
                                        T scale, T *out, npy_intp n)                    \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) out[i] = dout[i] * ((T)mask[i] * scale);            \
}                                                                                       \
                                                                                        \
/* Training-mode batch norm of columns [0, w) of x (n, ld): mean and biased variance  \
 * (two passes, sums in double), std = sqrt(var + eps), xn = (x - mu) / std,           \
 * out = gamma * xn + beta, then r = r * mom + omm * stat. acc (double), mu and var    \
 * (T) are w-element scratch. out may be x.                                          */ \
static void bn_fwd_##S(const T *x, const T *gamma, const T *beta, T *rmean, T *rvar,    \
                       T mom, T omm, T eps, T *out, T *xn, T *std, double *acc, T *mu,  \
                       T *var, npy_intp n, npy_intp ld, npy_intp w)                     \
{                                                                                       \
    for (npy_intp j = 0; j < w; j++) acc[j] = 0;                                        \
    colsum_ld_##S(x, ld, acc, n, w);                                                    \
    for (npy_intp j = 0; j < w; j++) { mu[j] = (T)(acc[j] / n); acc[j] = 0; }           \
    for (npy_intp i = 0; i < n; i++) {  /* centred values: no cancellation */           \
        const T *r = x + i * ld;                                                        \
        for (npy_intp j = 0; j < w; j++) {                                              \
            T c = r[j] - mu[j]; acc[j] += (double)c * (double)c;                        \
        }                                                                               \
    }                                                                                   \
    for (npy_intp j = 0; j < w; j++) {                                                  \
        var[j] = (T)(acc[j] / n); std[j] = SQRT(var[j] + eps);                          \
    }                                                                                   \
    bn_out_##S(x, gamma, beta, mu, std, out, xn, n, ld, w);                             \
    for (npy_intp j = 0; j < w; j++) {                                                  \
        rmean[j] = rmean[j] * mom + omm * mu[j];                                        \
        rvar[j] = rvar[j] * mom + omm * var[j];                                         \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* Test mode, columns [0, w): out = ((x - rmean) / sqrt(rvar + eps)) * gamma + beta;   \
 * std is w-element scratch. out may be x.                                           */ \
static FASTBP_SIMD void bn_infer_##S(const T *x, const T *gamma, const T *beta,         \
                                     const T *rmean, const T *rvar, T eps, T *out,      \
                                     T *std, npy_intp n, npy_intp ld, npy_intp w)       \
{                                                                                       \
    for (npy_intp j = 0; j < w; j++) std[j] = SQRT(rvar[j] + eps);                      \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        const T *r = x + i * ld; T *o = out + i * ld;                                   \
        for (npy_intp j = 0; j < w; j++)                                                \
            o[j] = ((r[j] - rmean[j]) / std[j]) * gamma[j] + beta[j];                   \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* Backward, columns [0, w): dbeta = sum(dout), dgamma = sum(dout * xn) (double),      \
 * dx = (dout - (xn * c2 + c1)) * a with a = gamma / std, c1 = dbeta / n,              \
 * c2 = dgamma / n rounded to T once. acc is 2w doubles, coef 3w T. dx may be dout     \
 * or xn.                                                                            */ \
static void bn_bwd_##S(const T *dout, const T *xn, const T *std, const T *gamma, T *dx, \
                       T *dgamma, T *dbeta, double *acc, T *coef, npy_intp n,           \
                       npy_intp ld, npy_intp w)                                         \
{                                                                                       \
    double *accb = acc, *accg = acc + w;                                                \
    T *a = coef, *c1 = coef + w, *c2 = coef + 2 * w;                                    \
    for (npy_intp j = 0; j < w; j++) { accb[j] = 0; accg[j] = 0; }                      \
    colsum_ld_##S(dout, ld, accb, n, w);                                                \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        const T *d = dout + i * ld, *r = xn + i * ld;                                   \
        for (npy_intp j = 0; j < w; j++) accg[j] += (double)d[j] * (double)r[j];        \
    }                                                                                   \
    for (npy_intp j = 0; j < w; j++) {                                                  \
        dbeta[j] = (T)accb[j]; dgamma[j] = (T)accg[j];                                  \
        a[j] = (T)((double)gamma[j] / (double)std[j]);                                  \
        c1[j] = (T)(accb[j] / n); c2[j] = (T)(accg[j] / n);                             \
    }                                                                                   \
    bn_dx_##S(dout, xn, a, c1, c2, dx, n, ld, w);                                       \
}

/* The elementwise passes of batch norm, vectorised over a row's columns.            */
#define FASTBP_DEFINE_BN_ROWS(T, S)                                                     \
static FASTBP_SIMD void bn_out_##S(const T *x, const T *gamma, const T *beta,           \
                                   const T *mu, const T *std, T *out, T *xn,            \
                                   npy_intp n, npy_intp ld, npy_intp w)                 \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        const T *r = x + i * ld; T *o = out + i * ld, *z = xn + i * ld;                 \
        for (npy_intp j = 0; j < w; j++) {                                              \
            T v = (r[j] - mu[j]) / std[j]; z[j] = v; o[j] = gamma[j] * v + beta[j];     \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
                                                                                        \
static FASTBP_SIMD void bn_dx_##S(const T *dout, const T *xn, const T *a, const T *c1,  \
                                  const T *c2, T *dx, npy_intp n, npy_intp ld,          \
                                  npy_intp w)                                           \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        const T *d = dout + i * ld, *r = xn + i * ld; T *o = dx + i * ld;               \
        for (npy_intp j = 0; j < w; j++) o[j] = (d[j] - (r[j] * c2[j] + c1[j])) * a[j]; \
    }                                                                                   \
}

#define FASTBP_DEFINE_LOOPS(T, S, I)                                                       \
                                                                                        \
/* mask = x <= 0 (false for NaN); out = mask ? +0.0 : x. out may be x. */               \
static FASTBP_SIMD void relu_fwd_##S(const T *x, T *out, unsigned char *mask,           \
                                     npy_intp n)                                        \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) mask[i] = x[i] <= 0;                                \
    for (npy_intp i = 0; i < n; i++) { T v = x[i]; out[i] = v <= 0 ? (T)0 : v; }        \
}                                                                                       \
                                                                                        \
/* out = mask ? +0.0 : dout. out may be dout. */                                        \
static FASTBP_SIMD void relu_bwd_##S(const T *dout, const unsigned char *mask, T *out,  \
                                     npy_intp n)                                        \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) { int m = mask[i]; T d = dout[i]; out[i] = m ? (T)0 : d; } \
}                                                                                       \
                                                                                        \
/* Sigmoid, before exp: e = -|x| (never positive, so exp cannot overflow). */           \
static FASTBP_SIMD void neg_abs_##S(const T *x, T *e, npy_intp n)                       \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) { T v = x[i]; e[i] = v < 0 ? v : -v; }              \
}                                                                                       \
                                                                                        \
/* Sigmoid, after exp: y = (x >= 0 ? 1 : e) / (1 + e). NaN stays NaN. y may be e. */   \
static FASTBP_SIMD void sigmoid_from_exp_##S(const T *x, const T *e, T *y, npy_intp n)  \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        T ei = e[i]; T num = x[i] >= 0 ? (T)1 : ei; y[i] = num / (1 + ei);              \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* y = sigmoid(x) in chunks: -|x|, exp, then the quotient, each chunk in cache.       \
 * y must not overlap x.                                                             */ \
static void sigmoid_fwd_##S(const T *x, T *y, npy_intp n, fastbp_exp_t e)               \
{                                                                                       \
    for (npy_intp a = 0; a < n; a += FASTBP_CHUNK) {                                    \
        npy_intp k = n - a < FASTBP_CHUNK ? n - a : FASTBP_CHUNK;                        \
        neg_abs_##S(x + a, y + a, k);                                                   \
        exp_inplace(e, y + a, k, sizeof(T));                                            \
        sigmoid_from_exp_##S(x + a, y + a, y + a, k);                                   \
    }                                                                                   \
}                                                                                       \
                                                                                        \
static FASTBP_SIMD void sigmoid_bwd_##S(const T *dout, const T *y, T *out, npy_intp n)  \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) out[i] = dout[i] * (1 - y[i]) * y[i];              \
}                                                                                       \
                                                                                        \
/* acc[j] += a[i, j] over the rows of a C-contiguous (n, m) array, in row order. */     \
static inline void colsum_##S(const T *a, double *acc, npy_intp n, npy_intp m)          \
{                                                                                       \
    colsum_ld_##S(a, m, acc, n, m);                                                     \
}                                                                                       \
                                                                                        \
/* Row max with GCC vector extensions, four 32-byte accumulators, then the tail (gcc  \
 * leaves a max written as a loop over lanes scalar: it is a select that keeps NaN    \
 * out). A lane keeps its value unless the new element is larger (m < v is false for   \
 * NaN); a row with a NaN gives NaN through x - max in the caller whatever the max is. */ \
static FASTBP_SIMD T row_max_##S(const T *r, npy_intp c)                                \
{                                                                                       \
    typedef T V __attribute__((vector_size(32)));                                       \
    typedef I VI __attribute__((vector_size(32)));                                      \
    enum { W = 32 / sizeof(T) };                                                        \
    T m = r[0];                                                                         \
    npy_intp j = 0;                                                                     \
    if (c >= 4 * W) {                                                                   \
        V a[4], v;                                                                      \
        memcpy(a, r, sizeof a);                                                         \
        for (j = 4 * W; j + 4 * W <= c; j += 4 * W)                                     \
            for (int k = 0; k < 4; k++) {                                               \
                memcpy(&v, r + j + k * W, sizeof v);                                    \
                VI gt = a[k] < v;                                                       \
                a[k] = (V)(((VI)v & gt) | ((VI)a[k] & ~gt));                            \
            }                                                                           \
        for (int k = 0; k < 4; k++)                                                     \
            for (int l = 0; l < W; l++) m = m < a[k][l] ? a[k][l] : m;                  \
    }                                                                                   \
    for (; j < c; j++) { T v = r[j]; m = m < v ? v : m; }                               \
    return m;                                                                           \
}                                                                                       \
                                                                                        \
/* Row sum in FASTBP_LANES independent double lanes: one running sum would chain every \
 * element on the previous one; lanes keep a fixed order, so the result depends on the \
 * row alone.                                                                        */ \
static FASTBP_SIMD double row_sum_##S(const T *r, npy_intp c)                           \
{                                                                                       \
    double lane[FASTBP_LANES] = {0}, s = 0;                                             \
    npy_intp j = 0;                                                                     \
    for (; j + FASTBP_LANES <= c; j += FASTBP_LANES)                                    \
        for (int k = 0; k < FASTBP_LANES; k++) lane[k] += r[j + k];                     \
    for (int k = 0; k < FASTBP_LANES; k++) s += lane[k];                                \
    for (; j < c; j++) s += r[j];                                                       \
    return s;                                                                           \
}                                                                                       \
                                                                                        \
/* Softmax, before exp: mx[i] = max of row i; z = x - mx[i], row by row. */              \
static FASTBP_SIMD void row_max_shift_##S(const T *x, T *z, T *mx, npy_intp n,          \
                                          npy_intp c)                                   \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        const T *r = x + i * c; T *zr = z + i * c;                                      \
        T m = row_max_##S(r, c);                                                        \
        for (npy_intp j = 0; j < c; j++) zr[j] = r[j] - m;                              \
        mx[i] = m;                                                                      \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* Softmax, after exp (y holds exp(x - mx)): normalise each row and write its loss to \
 * loss[i], for labels (t == NULL) or targets t. With z = x - max (rounded as in the    \
 * shift), a row's loss is log(s) - z[label], or sum_j t_j (log(s) - z_j) over the     \
 * nonzero t_j.                                                                      */ \
static FASTBP_SIMD void normalize_loss_##S(const T *x, const T *mx,                     \
                                           const npy_intp *labels, const T *t, T *y,    \
                                           double *loss, npy_intp n, npy_intp c)        \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        T *yr = y + i * c; const T *xr = x + i * c; T m = mx[i];                        \
        double s = row_sum_##S(yr, c);                                                  \
        double inv = 1 / s, log_s = log(s), total = 0;                                  \
        for (npy_intp j = 0; j < c; j++) yr[j] = (T)(yr[j] * inv);                      \
        if (labels) {                                                                   \
            T z = xr[labels[i]] - m;                                                    \
            total = log_s - (double)z;                                                  \
        } else {                                                                        \
            const T *tr = t + i * c;                                                    \
            for (npy_intp j = 0; j < c; j++) {                                          \
                double tj = tr[j]; T z = xr[j] - m;                                     \
                /* a zero target ignores its logit, even -inf (0 * inf is NaN) */       \
                total += tj != 0 ? tj * (log_s - (double)z) : 0.0;                      \
            }                                                                           \
        }                                                                               \
        loss[i] = total;                                                                \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* Softmax and per-row loss of the (n, c) logits x, in groups of rows that fit in one   \
 * chunk (or one row at a time): shift by the row max, exp, normalise. y must not       \
 * overlap x; labels (or t) and loss are those of the same rows.                     */ \
static void softmax_ce_rows_##S(const T *x, T *y, const npy_intp *labels, const T *t,   \
                                double *loss, npy_intp n, npy_intp c, fastbp_exp_t e)   \
{                                                                                       \
    T mx[FASTBP_CHUNK];                                                                 \
    npy_intp g = c >= FASTBP_CHUNK ? 1 : FASTBP_CHUNK / c;                               \
    for (npy_intp i = 0; i < n; i += g) {                                               \
        npy_intp k = n - i < g ? n - i : g, off = i * c;                                \
        row_max_shift_##S(x + off, y + off, mx, k, c);                                  \
        exp_inplace(e, y + off, k * c, sizeof(T));                                      \
        normalize_loss_##S(x + off, mx, labels ? labels + i : NULL, t ? t + off : NULL,  \
                           y + off, loss + i, k, c);                                    \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* dx = (y - onehot(labels)) * scale. out may be y. */                                  \
static FASTBP_SIMD void sce_grad_labels_##S(const T *y, const npy_intp *labels, T *out, \
                                            npy_intp n, npy_intp c, T scale)            \
{                                                                                       \
    for (npy_intp i = 0; i < n; i++) {                                                  \
        const T *yr = y + i * c; T *o = out + i * c; npy_intp k = labels[i];            \
        T y_label = yr[k];  /* read first: out may be y */                              \
        for (npy_intp j = 0; j < c; j++) o[j] = yr[j] * scale;                          \
        o[k] = (y_label - 1) * scale;                                                   \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* dx = (y - t) * scale. out may be y. */                                               \
static FASTBP_SIMD void sce_grad_targets_##S(const T *y, const T *t, T *out,            \
                                             npy_intp size, T scale)                    \
{                                                                                       \
    for (npy_intp i = 0; i < size; i++) out[i] = (y[i] - t[i]) * scale;                 \
}

#include <math.h>
FASTBP_COLSUM_LD(float, f32)
FASTBP_COLSUM_LD(double, f64)
FASTBP_DEFINE_LOOPS(float, f32, int)
FASTBP_DEFINE_LOOPS(double, f64, long long)
FASTBP_DEFINE_BN_ROWS(float, f32)
FASTBP_DEFINE_BN_ROWS(double, f64)
FASTBP_DEFINE_CH6_LOOPS(float, f32, sqrtf)
FASTBP_DEFINE_CH6_LOOPS(double, f64, sqrt)

/* 1 when every label lies in [0, c), else 0: checked before any row is read. */
static int labels_in_range(const npy_intp *labels, npy_intp n, npy_intp c)
{
    int ok = 1;
    for (npy_intp i = 0; i < n; i++) ok &= (labels[i] >= 0) & (labels[i] < c);
    return ok;
}

/* ------------------------------------------------------------------ chapter 7
 * Convolution and pooling windows over NCHW images; the geometry has been checked by
 * the caller (_checks.py), so the loops index without bounds checks. Each range
 * function handles images [n0, n1) of the batch, which are independent: the callers
 * split the batch over threads. Accumulations add the contributions to an element in
 * window order (ky, kx outermost), as the NumPy twin's strided slices do, so both
 * backends give the same bits.
 */
typedef struct {
    npy_intp c, h, w;          /* channels, height, width of an input image */
    npy_intp fh, fw;           /* window */
    npy_intp stride, pad;
    npy_intp oh, ow;           /* output positions */
} fastbp_window;

#if defined(__GNUC__)
#define FASTBP_INLINE static inline __attribute__((always_inline))
#else
#define FASTBP_INLINE static inline
#endif

#define FASTBP_DEFINE_CONV_LOOPS(T, S)                                                  \
                                                                                        \
/* One window that lies inside the image: C planes of FH rows of FW elements (rows W  \
 * apart, planes `plane` apart) into the contiguous r. Inlined with a constant FW at   \
 * the usual widths, so gcc unrolls the row copy: with a loop of 3 or 5 iterations the \
 * loop overhead cost more than the copying (11 instructions per element).           */ \
FASTBP_INLINE void window_copy_##S(T *r, const T *src, npy_intp C, npy_intp FH,         \
                                   npy_intp FW, npy_intp plane, npy_intp W)             \
{                                                                                       \
    for (npy_intp c = 0; c < C; c++, src += plane) {                                    \
        const T *sr = src;                                                              \
        for (npy_intp ky = 0; ky < FH; ky++, r += FW, sr += W)                          \
            for (npy_intp kx = 0; kx < FW; kx++) r[kx] = sr[kx];                        \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* col row (n*oh + i)*ow + j, column (c*fh + ky)*fw + kx: the window element, 0 in the \
 * padding.                                                                          */ \
static void im2col_##S(const T *x, T *col, const fastbp_window *g, npy_intp n0,         \
                       npy_intp n1)                                                     \
{                                                                                       \
    const npy_intp C = g->c, H = g->h, W = g->w, FH = g->fh, FW = g->fw;               \
    const npy_intp K = C * FH * FW, s = g->stride, p = g->pad;                         \
    for (npy_intp n = n0; n < n1; n++) {                                                \
        const T *xn = x + n * C * H * W;                                                \
        T *row = col + n * g->oh * g->ow * K;                                           \
        for (npy_intp i = 0; i < g->oh; i++)                                            \
            for (npy_intp j = 0; j < g->ow; j++, row += K) {                            \
                const npy_intp y0 = i * s - p, x0 = j * s - p;                          \
                if (y0 >= 0 && y0 + FH <= H && x0 >= 0 && x0 + FW <= W) {               \
                    const T *src = xn + y0 * W + x0;                                    \
                    if (FW == 5) window_copy_##S(row, src, C, FH, 5, H * W, W);         \
                    else if (FW == 3) window_copy_##S(row, src, C, FH, 3, H * W, W);    \
                    else if (FW == 2) window_copy_##S(row, src, C, FH, 2, H * W, W);    \
                    else window_copy_##S(row, src, C, FH, FW, H * W, W);                \
                    continue;                                                           \
                }                                                                       \
                for (npy_intp c = 0; c < C; c++)  /* a window over the padding */       \
                    for (npy_intp ky = 0; ky < FH; ky++) {                              \
                        T *r = row + (c * FH + ky) * FW;                                \
                        const npy_intp y = y0 + ky;                                     \
                        if (y < 0 || y >= H) {                                          \
                            for (npy_intp kx = 0; kx < FW; kx++) r[kx] = 0;             \
                            continue;                                                   \
                        }                                                               \
                        const T *xr = xn + (c * H + y) * W + x0;                        \
                        for (npy_intp kx = 0; kx < FW; kx++)                            \
                            r[kx] = x0 + kx >= 0 && x0 + kx < W ? xr[kx] : (T)0;        \
                    }                                                                   \
            }                                                                           \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* The adjoint: x = 0, then x[n, c, i*s + ky - p, j*s + kx - p] += col[...], ky and kx \
 * outermost (the order of the NumPy twin).                                          */ \
static void col2im_##S(const T *col, T *x, const fastbp_window *g, npy_intp n0,         \
                       npy_intp n1)                                                     \
{                                                                                       \
    const npy_intp C = g->c, H = g->h, W = g->w, FH = g->fh, FW = g->fw;               \
    const npy_intp K = C * FH * FW, s = g->stride, p = g->pad, OH = g->oh, OW = g->ow;  \
    for (npy_intp n = n0; n < n1; n++) {                                                \
        T *xn = x + n * C * H * W;                                                      \
        const T *cn = col + n * OH * OW * K;                                            \
        memset(xn, 0, (size_t)(C * H * W) * sizeof(T));                                 \
        for (npy_intp c = 0; c < C; c++)                                                \
            for (npy_intp ky = 0; ky < FH; ky++)                                        \
                for (npy_intp kx = 0; kx < FW; kx++) {                                  \
                    const T *src = cn + (c * FH + ky) * FW + kx;                        \
                    /* the output columns j whose element falls inside the image */     \
                    npy_intp j0 = 0, j1 = OW;                                           \
                    while (j0 < OW && j0 * s + kx - p < 0) j0++;                        \
                    while (j1 > j0 && (j1 - 1) * s + kx - p >= W) j1--;                 \
                    for (npy_intp i = 0; i < OH; i++) {                                 \
                        const npy_intp y = i * s + ky - p;                              \
                        if (y < 0 || y >= H) continue;                                  \
                        T *xr = xn + (c * H + y) * W + kx - p;                          \
                        const T *sr = src + i * OW * K;                                 \
                        for (npy_intp j = j0; j < j1; j++) xr[j * s] += sr[j * K];      \
                    }                                                                   \
                }                                                                       \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* Max of each window (padding: -inf) and the window index of its first maximum, the  \
 * first NaN if any (the rule of np.argmax). arg is in the book's order (n, i, j, c). */ \
static void maxpool_fwd_##S(const T *x, T *out, npy_intp *arg, const fastbp_window *g,  \
                            npy_intp n0, npy_intp n1)                                   \
{                                                                                       \
    const npy_intp C = g->c, H = g->h, W = g->w, FH = g->fh, FW = g->fw;               \
    const npy_intp s = g->stride, p = g->pad, OH = g->oh, OW = g->ow;                   \
    for (npy_intp n = n0; n < n1; n++)                                                  \
        for (npy_intp c = 0; c < C; c++) {                                              \
            const T *xc = x + (n * C + c) * H * W;                                      \
            T *oc = out + (n * C + c) * OH * OW;                                        \
            for (npy_intp i = 0; i < OH; i++)                                           \
                for (npy_intp j = 0; j < OW; j++) {                                     \
                    T m = -(T)INFINITY;                                                 \
                    npy_intp best = 0;                                                  \
                    for (npy_intp ky = 0; ky < FH; ky++) {                              \
                        const npy_intp y = i * s + ky - p;                              \
                        for (npy_intp kx = 0; kx < FW; kx++) {                          \
                            const npy_intp xx = j * s + kx - p;                         \
                            T v = y >= 0 && y < H && xx >= 0 && xx < W                  \
                                  ? xc[y * W + xx] : -(T)INFINITY;                      \
                            if (m == m && (v > m || v != v)) {                          \
                                m = v;                                                  \
                                best = ky * FW + kx;                                    \
                            }                                                           \
                        }                                                               \
                    }                                                                   \
                    oc[i * OW + j] = m;                                                 \
                    arg[((n * OH + i) * OW + j) * C + c] = best;                        \
                }                                                                       \
        }                                                                               \
}                                                                                       \
                                                                                        \
/* dx = 0, then dout[n, c, i, j] added to the element arg points at (none to the       \
 * padding). Windows that cannot overlap (stride >= window) take one pass; otherwise   \
 * one pass per window index k, in order, as the NumPy twin adds.                    */ \
static void maxpool_bwd_##S(const T *dout, const npy_intp *arg, T *dx,                  \
                            const fastbp_window *g, npy_intp n0, npy_intp n1)           \
{                                                                                       \
    const npy_intp C = g->c, H = g->h, W = g->w, FH = g->fh, FW = g->fw;               \
    const npy_intp s = g->stride, p = g->pad, OH = g->oh, OW = g->ow;                   \
    const int disjoint = s >= FH && s >= FW;                                            \
    for (npy_intp n = n0; n < n1; n++)                                                  \
        for (npy_intp c = 0; c < C; c++) {                                              \
            const T *dc = dout + (n * C + c) * OH * OW;                                 \
            const npy_intp *ac = arg + n * OH * OW * C + c;                             \
            T *xc = dx + (n * C + c) * H * W;                                           \
            memset(xc, 0, (size_t)(H * W) * sizeof(T));                                 \
            for (npy_intp k = 0; k < (disjoint ? 1 : FH * FW); k++)                     \
                for (npy_intp i = 0; i < OH; i++)                                       \
                    for (npy_intp j = 0; j < OW; j++) {                                 \
                        const npy_intp a = ac[(i * OW + j) * C];                        \
                        if (!disjoint && a != k) continue;                              \
                        const npy_intp y = i * s + a / FW - p, xx = j * s + a % FW - p; \
                        if (y >= 0 && y < H && xx >= 0 && xx < W)                       \
                            xc[y * W + xx] += dc[i * OW + j];                           \
                    }                                                                   \
        }                                                                               \
}                                                                                       \
                                                                                        \
/* db[c] = sum of dout[:, c] over N, H, W in double, for channels [c0, c1), each in a \
 * fixed order (so the result does not depend on how channels are split).          */ \
static void conv_bias_grad_##S(const T *dout, T *db, npy_intp n, npy_intp C,            \
                               npy_intp hw, npy_intp c0, npy_intp c1)                   \
{                                                                                       \
    for (npy_intp c = c0; c < c1; c++) {                                                \
        double acc = 0;                                                                 \
        for (npy_intp i = 0; i < n; i++) acc += row_sum_##S(dout + (i * C + c) * hw, hw); \
        db[c] = (T)acc;                                                                 \
    }                                                                                   \
}

FASTBP_DEFINE_CONV_LOOPS(float, f32)
FASTBP_DEFINE_CONV_LOOPS(double, f64)

#endif
