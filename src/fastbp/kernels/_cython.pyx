"""Compiled twins of the reference kernels in ``_numpy.py``.

Same names, signatures and semantics; read the contract in ``_numpy.py``.

Design:
- Entry points take plain ndarrays and read their data pointers through NumPy's C API.
  A typed memoryview argument costs about 0.25 us to acquire, which is a sizeable share
  of a whole kernel at the book's batch of 100.
- The fast path (a C-contiguous, aligned float32/float64 ndarray) is checked in C;
  anything else goes through ``_checks.py``, the code the NumPy twin uses, so both
  backends convert and refuse identically and give the same messages.
- The inner loops are in ``_loops.h``: one C body for float and double, written so the
  compiler vectorises them, run with the GIL released. This module picks the dtype's
  loop and owns the boundary.
- ``exp`` is NumPy's vectorised one, called between two loops; the softmax works in
  blocks of rows so that the three passes stay in cache.
- Sums accumulate in double. Matrix products are NumPy's (BLAS): never hand-rolled.
- No ``-ffast-math`` (setup.py): it would break NaN propagation.
"""
import numpy as np

cimport numpy as cnp
from libc.stdlib cimport calloc, free

from ._checks import (
    affine_shapes as _affine_shapes,
    check_out,
    check_same_shape,
    common_dtype,
    float_array,
    mask_array,
    softmax_inputs,
)

cnp.import_array()

__all__ = [
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "bias_grad",
    "affine_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
]

ctypedef cnp.npy_intp intp_t

cdef extern from "_loops.h" nogil:
    void relu_fwd_f32(const float*, float*, unsigned char*, intp_t)
    void relu_fwd_f64(const double*, double*, unsigned char*, intp_t)
    void relu_bwd_f32(const float*, const unsigned char*, float*, intp_t)
    void relu_bwd_f64(const double*, const unsigned char*, double*, intp_t)
    void neg_abs_f32(const float*, float*, intp_t)
    void neg_abs_f64(const double*, double*, intp_t)
    void sigmoid_from_exp_f32(const float*, const float*, float*, intp_t)
    void sigmoid_from_exp_f64(const double*, const double*, double*, intp_t)
    void sigmoid_bwd_f32(const float*, const float*, float*, intp_t)
    void sigmoid_bwd_f64(const double*, const double*, double*, intp_t)
    void colsum_f32(const float*, double*, intp_t, intp_t)
    void colsum_f64(const double*, double*, intp_t, intp_t)
    void row_max_shift_f32(const float*, float*, float*, intp_t, intp_t)
    void row_max_shift_f64(const double*, double*, double*, intp_t, intp_t)
    double normalize_loss_f32(const float*, const float*, const intp_t*, const float*, float*,
                              intp_t, intp_t)
    double normalize_loss_f64(const double*, const double*, const intp_t*, const double*, double*,
                              intp_t, intp_t)
    void sce_grad_labels_f32(const float*, const intp_t*, float*, intp_t, intp_t, float)
    void sce_grad_labels_f64(const double*, const intp_t*, double*, intp_t, intp_t, double)
    void sce_grad_targets_f32(const float*, const float*, float*, intp_t, float)
    void sce_grad_targets_f64(const double*, const double*, double*, intp_t, double)
    bint labels_in_range(const intp_t*, intp_t, intp_t)

# Bytes of logits per softmax block: the max/shift, exp and normalise passes over a
# block stay in the L2 cache.
cdef enum:
    BLOCK_BYTES = 131072

_exp = np.exp


# --------------------------------------------------------------------------- boundary

cdef inline bint _is_native(object a):
    """A C-contiguous, aligned float32/float64 ndarray: usable as it is."""
    if not isinstance(a, cnp.ndarray):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int typenum = cnp.PyArray_TYPE(arr)
    return ((typenum == cnp.NPY_DOUBLE or typenum == cnp.NPY_FLOAT)
            and cnp.PyArray_ISCARRAY_RO(arr))


cdef inline cnp.ndarray _floats(str name, object a):
    if _is_native(a):
        return <cnp.ndarray>a
    return float_array(name, a)


cdef inline cnp.ndarray _floats_as(str name, object a, int typenum):
    if _is_native(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum:
        return <cnp.ndarray>a
    return float_array(name, a, np.dtype(np.float64 if typenum == cnp.NPY_DOUBLE else np.float32))


cdef cnp.ndarray _result(str name, object out, int nd, intp_t* shape, int typenum):
    """``out`` if it can be written as it is, a new array if it is None, else raise."""
    if out is None:
        return cnp.PyArray_EMPTY(nd, shape, typenum, 0)
    cdef cnp.ndarray o
    if isinstance(out, cnp.ndarray):
        o = <cnp.ndarray>out
        if (cnp.PyArray_TYPE(o) == typenum and cnp.PyArray_NDIM(o) == nd
                and cnp.PyArray_CompareLists(cnp.PyArray_DIMS(o), shape, nd)
                and cnp.PyArray_ISCARRAY(o)):
            return o
    dtype = np.dtype(np.float64 if typenum == cnp.NPY_DOUBLE else np.float32)
    return check_out(name, out, tuple([shape[i] for i in range(nd)]), dtype)


cdef inline void* _data(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


# --------------------------------------------------------------------------- ReLU

def relu_forward(x, out=None):
    """ReLU: ``(out, mask)`` with ``mask = x <= 0`` and ``out = where(mask, +0.0, x)``."""
    cdef cnp.ndarray xa = _floats("x", x)
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef intp_t* shape = cnp.PyArray_DIMS(xa)
    cdef cnp.ndarray o = _result("out", out, nd, shape, typenum)
    cdef cnp.ndarray mask = cnp.PyArray_EMPTY(nd, shape, cnp.NPY_BOOL, 0)
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    cdef void* px = _data(xa)
    cdef void* po = _data(o)
    cdef unsigned char* pm = <unsigned char*>_data(mask)
    with nogil:
        if typenum == cnp.NPY_DOUBLE:
            relu_fwd_f64(<const double*>px, <double*>po, pm, n)
        else:
            relu_fwd_f32(<const float*>px, <float*>po, pm, n)
    return o, mask


def relu_backward(dout, mask, out=None):
    """ReLU gradient: ``where(mask, +0.0, dout)``; ``dout`` is untouched unless it is ``out``."""
    cdef cnp.ndarray d = _floats("dout", dout)
    cdef int typenum = cnp.PyArray_TYPE(d)
    cdef int nd = cnp.PyArray_NDIM(d)
    cdef intp_t* shape = cnp.PyArray_DIMS(d)
    cdef cnp.ndarray ma
    if (isinstance(mask, cnp.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray>mask) == cnp.NPY_BOOL
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>mask)
            and cnp.PyArray_NDIM(<cnp.ndarray>mask) == nd
            and cnp.PyArray_CompareLists(cnp.PyArray_DIMS(<cnp.ndarray>mask), shape, nd)):
        ma = <cnp.ndarray>mask
    else:
        ma = mask_array("mask", mask, (<object>d).shape)
    cdef cnp.ndarray o = _result("out", out, nd, shape, typenum)
    cdef intp_t n = cnp.PyArray_SIZE(d)
    cdef void* pd = _data(d)
    cdef void* po = _data(o)
    cdef const unsigned char* pm = <const unsigned char*>_data(ma)
    with nogil:
        if typenum == cnp.NPY_DOUBLE:
            relu_bwd_f64(<const double*>pd, pm, <double*>po, n)
        else:
            relu_bwd_f32(<const float*>pd, pm, <float*>po, n)
    return o


# --------------------------------------------------------------------------- Sigmoid

def sigmoid_forward(x, out=None):
    """Stable logistic function: ``1 / (1 + e)`` for ``x >= 0``, ``e / (1 + e)`` else."""
    cdef cnp.ndarray xa = _floats("x", x)
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef cnp.ndarray o = _result("out", out, cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), typenum)
    if out is not None and np.may_share_memory(o, xa):
        xa = xa.copy()  # the last pass reads x's sign after exp(-|x|) has filled out
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    cdef void* px = _data(xa)
    cdef void* po = _data(o)
    # e = exp(-|x|) is built in ``out`` itself: no scratch array, no extra page faults
    with nogil:
        if typenum == cnp.NPY_DOUBLE:
            neg_abs_f64(<const double*>px, <double*>po, n)
        else:
            neg_abs_f32(<const float*>px, <float*>po, n)
    _exp(o, out=o)
    with nogil:
        if typenum == cnp.NPY_DOUBLE:
            sigmoid_from_exp_f64(<const double*>px, <const double*>po, <double*>po, n)
        else:
            sigmoid_from_exp_f32(<const float*>px, <const float*>po, <float*>po, n)
    return o


def sigmoid_backward(dout, y, out=None):
    """Sigmoid gradient ``dout * (1 - y) * y``, evaluated in that order."""
    cdef cnp.ndarray d, ya
    if (_is_native(dout) and _is_native(y)
            and cnp.PyArray_TYPE(<cnp.ndarray>dout) == cnp.PyArray_TYPE(<cnp.ndarray>y)):
        d, ya = <cnp.ndarray>dout, <cnp.ndarray>y
    else:
        dt = common_dtype(("dout", dout), ("y", y))
        d, ya = float_array("dout", dout, dt), float_array("y", y, dt)
    if not cnp.PyArray_SAMESHAPE(d, ya):
        check_same_shape("y", ya, "dout", (<object>d).shape)
    cdef int typenum = cnp.PyArray_TYPE(d)
    cdef cnp.ndarray o = _result("out", out, cnp.PyArray_NDIM(d), cnp.PyArray_DIMS(d), typenum)
    cdef intp_t n = cnp.PyArray_SIZE(d)
    cdef void* pd = _data(d)
    cdef void* py = _data(ya)
    cdef void* po = _data(o)
    with nogil:
        if typenum == cnp.NPY_DOUBLE:
            sigmoid_bwd_f64(<const double*>pd, <const double*>py, <double*>po, n)
        else:
            sigmoid_bwd_f32(<const float*>pd, <const float*>py, <float*>po, n)
    return o


# --------------------------------------------------------------------------- Affine

def bias_grad(dout, out=None):
    """Column sums of a 2-D ``dout`` (N, M): the bias gradient ``db`` (M,)."""
    cdef cnp.ndarray d = _floats("dout", dout)
    if cnp.PyArray_NDIM(d) != 2:
        raise ValueError(f"dout: expected a 2-D array (batch, features), got shape {(<object>d).shape}")
    cdef int typenum = cnp.PyArray_TYPE(d)
    cdef intp_t n = cnp.PyArray_DIM(d, 0), m = cnp.PyArray_DIM(d, 1), j
    cdef cnp.ndarray o = _result("out", out, 1, &m, typenum)
    cdef void* pd = _data(d)
    cdef void* po = _data(o)
    cdef double* acc = <double*>po if typenum == cnp.NPY_DOUBLE else <double*>calloc(m + 1, sizeof(double))
    if acc == NULL:
        raise MemoryError()
    with nogil:
        if typenum == cnp.NPY_DOUBLE:
            for j in range(m):
                acc[j] = 0
            colsum_f64(<const double*>pd, acc, n, m)
        else:
            colsum_f32(<const float*>pd, acc, n, m)
            for j in range(m):
                (<float*>po)[j] = <float>acc[j]
            free(acc)
    return o


def affine_backward(dout, x, W, need_dx=True):
    """Gradients of ``out = x @ W + b``: ``(dx, dW, db)``; ``dx`` is None without ``need_dx``."""
    cdef cnp.ndarray d, xa, Wa
    if (_is_native(dout) and _is_native(x) and _is_native(W)
            and cnp.PyArray_TYPE(<cnp.ndarray>dout) == cnp.PyArray_TYPE(<cnp.ndarray>x)
            and cnp.PyArray_TYPE(<cnp.ndarray>dout) == cnp.PyArray_TYPE(<cnp.ndarray>W)):
        d, xa, Wa = <cnp.ndarray>dout, <cnp.ndarray>x, <cnp.ndarray>W
    else:
        dt = common_dtype(("dout", dout), ("x", x), ("W", W))
        d, xa, Wa = float_array("dout", dout, dt), float_array("x", x, dt), float_array("W", W, dt)
    if not (cnp.PyArray_NDIM(Wa) == 2 and cnp.PyArray_NDIM(xa) == 2 and cnp.PyArray_NDIM(d) == 2
            and cnp.PyArray_DIM(xa, 1) == cnp.PyArray_DIM(Wa, 0)
            and cnp.PyArray_DIM(d, 0) == cnp.PyArray_DIM(xa, 0)
            and cnp.PyArray_DIM(d, 1) == cnp.PyArray_DIM(Wa, 1)):
        _affine_shapes(d, xa, Wa)
    dx = np.matmul(d, Wa.T) if need_dx else None
    dW = np.matmul(xa.T, d)
    return dx, dW, bias_grad(d)


# --------------------------------------------------------------------------- Softmax + CE

cdef inline bint _is_native_labels(object t, intp_t n):
    if not isinstance(t, cnp.ndarray):
        return False
    cdef cnp.ndarray ta = <cnp.ndarray>t
    return (cnp.PyArray_TYPE(ta) == cnp.NPY_INTP and cnp.PyArray_NDIM(ta) == 1
            and cnp.PyArray_DIM(ta, 0) == n and cnp.PyArray_ISCARRAY_RO(ta))


cdef tuple _sce_inputs(object x, object t):
    """(x, labels, onehot) as ``_checks.softmax_inputs`` gives them, checked in C when possible."""
    cdef cnp.ndarray xa
    cdef intp_t n, c
    if _is_native(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2:
        xa = <cnp.ndarray>x
        n, c = cnp.PyArray_DIM(xa, 0), cnp.PyArray_DIM(xa, 1)
        if n > 0 and c > 0 and _is_native_labels(t, n):
            if labels_in_range(<const intp_t*>_data(<cnp.ndarray>t), n, c):
                return xa, t, None
    return softmax_inputs(x, t)


def softmax_cross_entropy(x, t, out=None):
    """Fused softmax and mean cross-entropy: ``(loss, y)``; see the NumPy twin."""
    xa, labels, onehot = _sce_inputs(x, t)
    cdef cnp.ndarray xc = <cnp.ndarray>xa
    cdef int typenum = cnp.PyArray_TYPE(xc)
    cdef intp_t n = cnp.PyArray_DIM(xc, 0), c = cnp.PyArray_DIM(xc, 1)
    cdef cnp.ndarray y = _result("out", out, 2, cnp.PyArray_DIMS(xc), typenum)
    if out is not None and np.may_share_memory(y, xc):
        xc = xc.copy()  # the loss reads x after y has been written
    # Blocks of rows: the shift, exp and normalise passes over a block stay in cache.
    cdef intp_t itemsize = cnp.PyArray_ITEMSIZE(xc)
    cdef intp_t rows = max(1, min(n, BLOCK_BYTES // (c * itemsize)))
    cdef cnp.ndarray mx = cnp.PyArray_EMPTY(1, &rows, typenum, 0)
    cdef char* px = <char*>_data(xc)
    cdef char* py = <char*>_data(y)
    cdef void* pmx = _data(mx)
    cdef const intp_t* lab = NULL if labels is None else <const intp_t*>_data(<cnp.ndarray>labels)
    cdef char* pt = NULL if onehot is None else <char*>_data(<cnp.ndarray>onehot)
    cdef intp_t start, stop, k, off
    cdef double total = 0
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        k = stop - start
        off = start * c * itemsize
        with nogil:
            if typenum == cnp.NPY_DOUBLE:
                row_max_shift_f64(<const double*>(px + off), <double*>(py + off), <double*>pmx, k, c)
            else:
                row_max_shift_f32(<const float*>(px + off), <float*>(py + off), <float*>pmx, k, c)
        yb = y[start:stop]
        _exp(yb, out=yb)
        with nogil:
            if typenum == cnp.NPY_DOUBLE:
                total += normalize_loss_f64(<const double*>(px + off), <const double*>pmx,
                                            NULL if lab == NULL else lab + start,
                                            NULL if pt == NULL else <const double*>(pt + off),
                                            <double*>(py + off), k, c)
            else:
                total += normalize_loss_f32(<const float*>(px + off), <const float*>pmx,
                                            NULL if lab == NULL else lab + start,
                                            NULL if pt == NULL else <const float*>(pt + off),
                                            <float*>(py + off), k, c)
    return xc.dtype.type(total / n), y


def softmax_cross_entropy_backward(y, t, dout=1.0, out=None):
    """Gradient of the mean loss w.r.t. the logits: ``(y - onehot(t)) * (dout / N)``."""
    ya, labels, onehot = _sce_inputs(y, t)
    cdef cnp.ndarray yc = <cnp.ndarray>ya
    cdef int typenum = cnp.PyArray_TYPE(yc)
    cdef intp_t n = cnp.PyArray_DIM(yc, 0), c = cnp.PyArray_DIM(yc, 1)
    cdef double scale = float(dout) / n
    cdef cnp.ndarray o = _result("out", out, 2, cnp.PyArray_DIMS(yc), typenum)
    cdef void* py = _data(yc)
    cdef void* po = _data(o)
    cdef const intp_t* lab = NULL if labels is None else <const intp_t*>_data(<cnp.ndarray>labels)
    cdef void* pt = NULL if onehot is None else _data(<cnp.ndarray>onehot)
    with nogil:
        if lab != NULL:
            if typenum == cnp.NPY_DOUBLE:
                sce_grad_labels_f64(<const double*>py, lab, <double*>po, n, c, scale)
            else:
                sce_grad_labels_f32(<const float*>py, lab, <float*>po, n, c, <float>scale)
        else:
            if typenum == cnp.NPY_DOUBLE:
                sce_grad_targets_f64(<const double*>py, <const double*>pt, <double*>po, n * c, scale)
            else:
                sce_grad_targets_f32(<const float*>py, <const float*>pt, <float*>po, n * c,
                                     <float>scale)
    return o
