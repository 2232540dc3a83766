"""Compiled convolution and 2x2 pooling kernels: the twins of ``conv_forward``,
``conv_backward``, ``maxpool2_forward`` and ``maxpool2_backward`` in ``_numpy.py``
(re-exported by ``_cython``, the compiled backend).

Design (issue 22):
- The convolution lowers one image at a time, a block of its output rows at a time,
  into a column matrix in the transposed layout (K = C*FH*FW rows, one column per output
  position; ``_conv.h``), small enough to stay in the cache, and multiplies
  ``W (FN, K) @ colT``, which writes the image's output in NCHW directly, onto the bias.
  The backward pass lowers again (nothing batch-sized is kept between the passes),
  accumulates ``dW`` over the images, and for ``dx`` multiplies ``W.T @ dout`` per block
  and adds it back into the image (the adjoint of the lowering).
- Threads (fastbp's pool, ``_pool.pxd``, ``fastbp.set_num_threads``) take whole
  images, dynamically, each with its own scratch and single-threaded BLAS calls (the
  private one-thread OpenBLAS ``_blas.py`` loads). ``dW`` is summed per group of images, the groups fixed by the
  batch size alone, then the groups in order, and ``db`` per image in double, then the
  images in order (``conv_bias_grad``'s order): the results do not depend on the thread
  count.
- Without a BLAS fastbp can bind, the NumPy twins run (``np.matmul``), as ``_blas.gemm``
  falls back.
"""
import sys
import time

import numpy as np

cimport numpy as cnp

from fastbp.kernels._cblas cimport NO_TRANS, ROW_MAJOR, TRANS, blasint, dgemm_t, sgemm_t
from fastbp.kernels._pool cimport run_blocks
from libc.stdint cimport intptr_t
from libc.string cimport memset

from . import _blas, _numpy
from ._checks import (
    apart,
    check_out,
    check_same_shape,
    conv_inputs,
    float_array,
    image_shape,
    input_shape_arg,
    pool_index_array,
)

cnp.import_array()

ctypedef cnp.npy_intp intp_t

cdef extern from "_conv.h" nogil:
    ctypedef struct Geom "fastbp_conv_geom":
        intp_t c, h, w, fh, fw, stride, pad, oh, ow
    void conv_lower_f32(const float*, float*, const Geom*, intp_t, intp_t)
    void conv_lower_f64(const double*, double*, const Geom*, intp_t, intp_t)
    void conv_lift_f32(const float*, float*, const Geom*, intp_t, intp_t)
    void conv_lift_f64(const double*, double*, const Geom*, intp_t, intp_t)
    void conv_transpose_f32(const float*, intp_t, float*, intp_t, intp_t)
    void conv_transpose_f64(const double*, intp_t, double*, intp_t, intp_t)
    void conv_fill_bias_f32(float*, const float*, intp_t, intp_t, intp_t, intp_t)
    void conv_fill_bias_f64(double*, const double*, intp_t, intp_t, intp_t, intp_t)
    void maxpool2_fwd_f32(const float*, float*, unsigned char*, intp_t, intp_t, intp_t, intp_t,
                          intp_t, intp_t, int)
    void maxpool2_fwd_f64(const double*, double*, unsigned char*, intp_t, intp_t, intp_t, intp_t,
                          intp_t, intp_t, int)
    void maxpool2_bwd_f32(const float*, const unsigned char*, float*, intp_t, intp_t, intp_t,
                          intp_t, intp_t, intp_t)
    void maxpool2_bwd_f64(const double*, const unsigned char*, double*, intp_t, intp_t, intp_t,
                          intp_t, intp_t, intp_t)
    double row_sum_f32(const float*, intp_t)
    double row_sum_f64(const double*, intp_t)


cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL

if _blas.BOUND:  # the private one-thread OpenBLAS _blas loaded
    _sgemm = <sgemm_t><size_t>_blas._private[1]
    _dgemm = <dgemm_t><size_t>_blas._private[2]

#: Elements of a lowered block (K rows x the positions of whole output rows): the block
#: and the product's operands stay in the L2 cache. A function of the shape alone.
cdef intp_t BLOCK_ELEMENTS = 16384
#: Groups of images whose dW are summed separately (then in group order): at most this
#: many, a function of the batch size alone, so that threads can share them.
cdef intp_t DW_GROUPS = 8
#: Window elements (K) below which dW is computed as dout @ colT.T (see _conv_job).
cdef intp_t DW_NT_BELOW = 32


def _set_tuning(block_elements, dw_groups):
    """Change the block size and the number of dW groups (for measuring them)."""
    global BLOCK_ELEMENTS, DW_GROUPS
    BLOCK_ELEMENTS, DW_GROUPS = block_elements, dw_groups


cdef int _threads() except -1:
    """fastbp's kernel thread count (``_cython``'s setting)."""
    return sys.modules["fastbp.kernels._cython"].get_num_threads()


# The thread count of each convolution shape is chosen as the products' is (_blas._Choice):
# timed now and then on one thread and on all, and the faster lately wins. On a machine
# where another process holds a core, the second thread is often slower than none
# (docs/chapter7.md); the results are the same either way (the groups of images do not
# move).
_choices = {}


cdef tuple _pick(tuple key, int most):
    """(threads, the shape's choice or None) for a kernel call of ``key``."""
    if most <= 1:
        return 1, None
    choice = _choices.get(key)
    if choice is None:
        choice = _choices[key] = _blas._Choice()
    return choice.pick(most), choice


cdef inline intp_t _block_rows(intp_t k, intp_t ow, intp_t oh) noexcept nogil:
    cdef intp_t rows = BLOCK_ELEMENTS // max(k * ow, 1)
    return min(max(rows, 1), oh)


cdef inline void _gemm(bint f64, int ta, int tb, blasint m, blasint n, blasint k,
                       const char* a, blasint lda, const char* b, blasint ldb, double beta,
                       char* c, blasint ldc) noexcept nogil:
    if f64:
        _dgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, <const double*>a, lda, <const double*>b, ldb,
               beta, <double*>c, ldc)
    else:
        _sgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, <const float*>a, lda, <const float*>b, ldb,
               <float>beta, <float*>c, ldc)


ctypedef struct Conv:
    bint f64
    intp_t size          # bytes per element
    Geom g
    intp_t n, fn, k, p, rows
    const char* x        # (N, C, H, W)
    const char* w        # (FN, K)
    const char* b        # (FN,)
    const char* dout     # (N, FN, P)
    char* out            # forward: (N, FN, P); backward: dx (N, C, H, W) or NULL
    bint dw_nt           # dW's product: dout @ colT.T (few window elements), else colT @ dout.T
    char* dw_parts       # (groups, FN, K) with dw_nt, else (groups, K, FN)
    double* db_parts     # (N, FN)
    intp_t groups        # backward: groups of images whose dW are summed separately
    char* scratch        # per thread: 2 blocks of K x (rows * OW)
    intp_t scratch_size  # bytes per thread


cdef void _forward_image(const Conv* j, intp_t n, char* col) noexcept nogil:
    cdef const Geom* g = &j.g
    cdef intp_t i0, i1, q0, nq
    cdef const char* xn = j.x + n * g.c * g.h * g.w * j.size
    cdef char* on = j.out + n * j.fn * j.p * j.size
    i0 = 0
    while i0 < g.oh:
        i1 = min(g.oh, i0 + j.rows)
        q0, nq = i0 * g.ow, (i1 - i0) * g.ow
        if j.f64:
            conv_lower_f64(<const double*>xn, <double*>col, g, i0, i1)
            conv_fill_bias_f64(<double*>on, <const double*>j.b, j.fn, j.p, q0, q0 + nq)
        else:
            conv_lower_f32(<const float*>xn, <float*>col, g, i0, i1)
            conv_fill_bias_f32(<float*>on, <const float*>j.b, j.fn, j.p, q0, q0 + nq)
        _gemm(j.f64, NO_TRANS, NO_TRANS, j.fn, nq, j.k, j.w, j.k, col, nq, 1.0,
              on + q0 * j.size, j.p)
        i0 = i1


cdef void _backward_image(const Conv* j, intp_t n, char* dw, char* col, char* dcol,
                         char* dT) noexcept nogil:
    cdef const Geom* g = &j.g
    cdef intp_t i0, i1, q0, nq, f
    cdef const char* xn = j.x + n * g.c * g.h * g.w * j.size
    cdef const char* dn = j.dout + n * j.fn * j.p * j.size
    cdef char* dxn = NULL
    if j.out != NULL:
        dxn = j.out + n * g.c * g.h * g.w * j.size
        memset(dxn, 0, g.c * g.h * g.w * j.size)
    i0 = 0
    while i0 < g.oh:
        i1 = min(g.oh, i0 + j.rows)
        q0, nq = i0 * g.ow, (i1 - i0) * g.ow
        if j.f64:
            conv_lower_f64(<const double*>xn, <double*>col, g, i0, i1)
        else:
            conv_lower_f32(<const float*>xn, <float*>col, g, i0, i1)
        if j.dw_nt:  # dW (FN, K) += dout block (FN, nq) @ colT block.T
            _gemm(j.f64, NO_TRANS, TRANS, j.fn, j.k, nq, dn + q0 * j.size, j.p, col, nq, 1.0,
                  dw, j.k)
        elif j.f64:  # dW.T (K, FN) += colT block (K, nq) @ dout block.T (nq, FN)
            conv_transpose_f64(<const double*>dn + q0, j.p, <double*>dT, j.fn, nq)
        else:
            conv_transpose_f32(<const float*>dn + q0, j.p, <float*>dT, j.fn, nq)
        if not j.dw_nt:
            _gemm(j.f64, NO_TRANS, NO_TRANS, j.k, j.fn, nq, col, nq, dT, j.fn, 1.0, dw, j.fn)
        if dxn != NULL:  # dcolT (K, nq) = W.T @ dout block, added back into the image
            _gemm(j.f64, TRANS, NO_TRANS, j.k, nq, j.fn, j.w, j.k, dn + q0 * j.size, j.p, 0.0,
                  dcol, nq)
            if j.f64:
                conv_lift_f64(<const double*>dcol, <double*>dxn, g, i0, i1)
            else:
                conv_lift_f32(<const float*>dcol, <float*>dxn, g, i0, i1)
        i0 = i1
    for f in range(j.fn):  # db: one double sum per (image, filter), conv_bias_grad's order
        if j.f64:
            j.db_parts[n * j.fn + f] = row_sum_f64(<const double*>dn + f * j.p, j.p)
        else:
            j.db_parts[n * j.fn + f] = row_sum_f32(<const float*>dn + f * j.p, j.p)


cdef void _forward_block(void* ctx, intptr_t n, int worker) noexcept nogil:
    cdef const Conv* j = <const Conv*>ctx
    _forward_image(j, n, j.scratch + worker * j.scratch_size)


cdef void _backward_group(const Conv* j, intp_t grp, intp_t groups, char* scratch) noexcept nogil:
    cdef intp_t n
    cdef intp_t block = j.k * j.rows * j.g.ow * j.size
    cdef char* dw = j.dw_parts + grp * j.fn * j.k * j.size
    for n in range(j.n * grp // groups, j.n * (grp + 1) // groups):
        _backward_image(j, n, dw, scratch, scratch + block, scratch + 2 * block)


cdef void _backward_block(void* ctx, intptr_t grp, int worker) noexcept nogil:
    cdef const Conv* j = <const Conv*>ctx
    _backward_group(j, grp, j.groups, j.scratch + worker * j.scratch_size)


cdef Conv _conv_job(cnp.ndarray x, cnp.ndarray W, tuple geom):
    cdef Conv j
    n, c, h, w, fn, fh, fw, s, p, oh, ow = geom
    j.f64 = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    j.size = 8 if j.f64 else 4
    j.g.c, j.g.h, j.g.w, j.g.fh, j.g.fw, j.g.stride, j.g.pad, j.g.oh, j.g.ow = (
        c, h, w, fh, fw, s, p, oh, ow)
    j.n, j.fn, j.k, j.p = n, fn, c * fh * fw, oh * ow
    j.rows = _block_rows(j.k, ow, oh)
    # the faster product for dW, by the shape alone: with few window elements (one input
    # channel) OpenBLAS does better on dout @ colT.T than on colT @ dout.T, with more the
    # other way round (measured on the book's layers)
    j.dw_nt = j.k < DW_NT_BELOW
    j.x, j.w = <const char*>cnp.PyArray_DATA(x), <const char*>cnp.PyArray_DATA(W)
    j.b = j.dout = NULL
    j.out = j.dw_parts = NULL
    j.db_parts = NULL
    return j


cdef cnp.ndarray _scratch(Conv* j, int nt, int blocks, intp_t extra):
    # per thread: ``blocks`` lowered blocks and ``extra`` more elements, 64-byte aligned
    j.scratch_size = ((blocks * j.k * j.rows * j.g.ow + extra) * j.size + 63) // 64 * 64
    cdef cnp.ndarray buf = np.empty(max(nt, 1) * j.scratch_size, np.uint8)
    j.scratch = <char*>cnp.PyArray_DATA(buf)
    return buf


def conv_forward(x, W, b, stride=1, pad=0, out=None):
    """Convolution of ``x`` (N, C, H, W) with ``W`` (FN, C, FH, FW) plus ``b`` (FN,):
    ``out`` (N, FN, out_h, out_w); see the NumPy twin."""
    if _dgemm == NULL:
        return _numpy.conv_forward(x, W, b, stride, pad, out)
    xa, Wa, ba, geom = conv_inputs(x, W, stride, pad, [("b", b)])
    n, c, h, w, fn, fh, fw, s, p, oh, ow = geom
    check_same_shape("b", ba, "W's first axis", (fn,))
    if out is None:
        o = np.empty((n, fn, oh, ow), xa.dtype)
    else:
        o = check_out("out", out, (n, fn, oh, ow), xa.dtype)
        same = apart([("out", o)], [("x", xa), ("W", Wa), ("b", ba)])
        # the loop reads x, W and b while it writes out: exactly one of them is copied
        xa, Wa, ba = [a.copy() if name in same else a
                      for name, a in (("x", xa), ("W", Wa), ("b", ba))]
    if o.size == 0:
        return o
    if c * fh * fw == 0:  # no window elements: the bias alone
        o[...] = ba.reshape(fn, 1, 1)
        return o
    cdef Conv j = _conv_job(xa, Wa, geom)
    j.b = <const char*>cnp.PyArray_DATA(ba)
    j.out = <char*>cnp.PyArray_DATA(o)
    cdef int most = min(_threads(), n)
    cdef int nt
    nt, choice = _pick(("f", xa.shape, Wa.shape, s, p, xa.dtype.char, most), most)
    keep = _scratch(&j, nt, 1, 0)
    start = time.perf_counter()
    with nogil:
        run_blocks(_forward_block, &j, j.n, nt)
    if choice is not None:
        choice.record(nt, time.perf_counter() - start, most)
    return o


def conv_backward(dout, x, W, stride=1, pad=0, need_dx=True, dW_out=None, db_out=None):
    """Gradients of ``conv_forward``: ``(dx, dW, db)``; ``dx`` is None without
    ``need_dx``; see the NumPy twin."""
    if _dgemm == NULL:
        return _numpy.conv_backward(dout, x, W, stride, pad, need_dx, dW_out, db_out)
    xa, Wa, da, geom = conv_inputs(x, W, stride, pad, [("dout", dout)])
    n, c, h, w, fn, fh, fw, s, p, oh, ow = geom
    check_same_shape("dout", da, "the convolution's output", (n, fn, oh, ow))
    read = [("dout", da), ("x", xa), ("W", Wa)]
    dW = np.empty(Wa.shape, xa.dtype) if dW_out is None else check_out(
        "dW_out", dW_out, Wa.shape, xa.dtype)
    db = np.empty(fn, xa.dtype) if db_out is None else check_out("db_out", db_out, (fn,), xa.dtype)
    # every input is read before dW and db are written: exactly an input is fine
    apart([("dW_out", dW_out), ("db_out", db_out)], read)
    dx = np.empty(xa.shape, xa.dtype) if need_dx else None
    cdef intp_t k = c * fh * fw
    if n == 0 or fn == 0 or k == 0:  # no window elements: dW and dx are empty or zero
        dW.fill(0)
        if dx is not None:
            dx.fill(0)
        if k == 0 and n * fn * oh * ow:  # no input channels: the bias still has dout's sums
            from ._cython import conv_bias_grad
            conv_bias_grad(da, out=db)
        else:
            db.fill(0)
        return dx, dW, db
    cdef Conv j = _conv_job(xa, Wa, geom)
    cdef intp_t groups = min(n, DW_GROUPS)
    parts = np.zeros((groups, fn, k) if j.dw_nt else (groups, k, fn), xa.dtype)
    db_parts = np.empty((n, fn), np.float64)
    j.dout = <const char*>cnp.PyArray_DATA(da)
    j.out = NULL if dx is None else <char*>cnp.PyArray_DATA(dx)
    j.dw_parts = <char*>cnp.PyArray_DATA(parts)
    j.db_parts = <double*>cnp.PyArray_DATA(db_parts)
    cdef int most = min(_threads(), groups)
    cdef int nt
    nt, choice = _pick(("b", xa.shape, Wa.shape, s, p, xa.dtype.char, most, need_dx), most)
    keep = _scratch(&j, nt, 2, fn * j.rows * ow)
    start = time.perf_counter()
    j.groups = groups
    with nogil:
        run_blocks(_backward_block, &j, groups, nt)
    if choice is not None:
        choice.record(nt, time.perf_counter() - start, most)
    # the groups in order, and each filter's per-image sums in image order from 0
    total = parts[0]
    for g in range(1, groups):
        total += parts[g]
    dW.reshape(fn, k)[...] = total if j.dw_nt else total.T
    acc = np.zeros(fn)
    for i in range(n):
        acc += db_parts[i]
    db[...] = acc
    return dx, dW, db


cdef tuple _pool2(x, out, bint relu):
    cdef cnp.ndarray xa = float_array("x", x)
    n, c, h, w, oh, ow = image_shape("x", (<object>xa).shape, 2, 2, 2, 0)
    if out is None:
        o = np.empty((n, c, oh, ow), xa.dtype)
    else:
        o = check_out("out", out, (n, c, oh, ow), xa.dtype)
        apart([("out", o)], [("x", xa)])  # never exactly x: the shapes differ
    index = np.empty((n, c, oh, ow), np.uint8)
    cdef intp_t planes = n * c
    if planes == 0:
        return o, index
    cdef const char* px = <const char*>cnp.PyArray_DATA(xa)
    cdef char* po = <char*>cnp.PyArray_DATA(<cnp.ndarray>o)
    cdef unsigned char* pi = <unsigned char*>cnp.PyArray_DATA(<cnp.ndarray>index)
    cdef intp_t H = h, W_ = w, OH = oh, OW = ow
    cdef bint f64 = cnp.PyArray_TYPE(xa) == cnp.NPY_DOUBLE
    with nogil:
        if f64:
            maxpool2_fwd_f64(<const double*>px, <double*>po, pi, H, W_, OH, OW, 0, planes, relu)
        else:
            maxpool2_fwd_f32(<const float*>px, <float*>po, pi, H, W_, OH, OW, 0, planes, relu)
    return o, index


def maxpool2_forward(x, out=None):
    """2x2 max pooling, stride 2, no padding: ``(out, index)`` with a uint8 window index
    in NCHW order; see the NumPy twin."""
    return _pool2(x, out, False)


def relu_maxpool2_forward(x, out=None):
    """ReLU then 2x2 max pooling in one pass: ``(out, index)``, index 4 where the
    window's maximum was <= 0; see the NumPy twin."""
    return _pool2(x, out, True)


def maxpool2_backward(dout, index, input_shape, out=None):
    """Gradient of ``maxpool2_forward``: each ``dout`` element to the element its
    ``index`` points at, 0 elsewhere; see the NumPy twin."""
    shape = input_shape_arg(input_shape)
    n, c, h, w, oh, ow = image_shape("input_shape", shape, 2, 2, 2, 0)
    cdef cnp.ndarray d = float_array("dout", dout)
    check_same_shape("dout", d, f"the pooling output for input_shape {shape}", (n, c, oh, ow))
    cdef cnp.ndarray ia = pool_index_array(index, (<object>d).shape)
    if out is None:
        o = np.empty(shape, d.dtype)
    else:
        o = check_out("out", out, shape, d.dtype)
        apart([("out", o)], [("dout", d), ("index", ia)])  # never exactly: shapes differ
    cdef intp_t planes = n * c
    if planes == 0 or h * w == 0:
        return o
    cdef const char* pd = <const char*>cnp.PyArray_DATA(d)
    cdef const unsigned char* pi = <const unsigned char*>cnp.PyArray_DATA(ia)
    cdef char* po = <char*>cnp.PyArray_DATA(<cnp.ndarray>o)
    cdef intp_t H = h, W_ = w, OH = oh, OW = ow
    cdef bint f64 = cnp.PyArray_TYPE(d) == cnp.NPY_DOUBLE
    with nogil:
        if f64:
            maxpool2_bwd_f64(<const double*>pd, pi, <double*>po, H, W_, OH, OW, 0, planes)
        else:
            maxpool2_bwd_f32(<const float*>pd, pi, <float*>po, H, W_, OH, OW, 0, planes)
    return o
