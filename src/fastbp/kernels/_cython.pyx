"""Compiled twins of the reference kernels in ``_numpy.py``.

Same names, signatures and semantics; read the contract in ``_numpy.py``.

Design:
- Entry points take plain ndarrays and read their data pointers through NumPy's C API.
  A typed memoryview argument costs about 0.25 us to acquire, which is a sizeable share
  of a whole kernel at the book's batch of 100.
- The fast path (a C-contiguous float32/float64 ndarray) is checked in C; anything
  else goes through ``_checks.py``, the code the NumPy twin uses, so both backends
  convert and refuse identically and give the same messages.
- Each loop is written once over Cython's ``floating`` fused type (float and double)
  as a ``noexcept nogil`` function on raw pointers, and runs with the GIL released.
- Sums accumulate in double. Matrix products are NumPy's (BLAS): never hand-rolled.
- No ``-ffast-math`` (setup.py): it would break NaN propagation.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.math cimport exp, expf, fabs, log
from libc.stdlib cimport free, malloc

from ._checks import (
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

cdef void _relu_fwd(const floating* x, floating* out, unsigned char* mask,
                    intp_t n) noexcept nogil:
    cdef intp_t i
    cdef floating v
    cdef unsigned char m
    for i in range(n):
        v = x[i]
        m = v <= 0          # False for NaN, so NaN propagates
        mask[i] = m
        out[i] = 0 if m else v   # +0.0 for -0.0 and -inf


cdef void _relu_bwd(const floating* dout, const unsigned char* mask, floating* out,
                    intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        out[i] = 0 if mask[i] else dout[i]


def relu_forward(x, out=None):
    """ReLU: ``(out, mask)`` with ``mask = x <= 0`` and ``out = where(mask, +0.0, x)``."""
    cdef cnp.ndarray xa = _floats("x", x)
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef intp_t* shape = cnp.PyArray_DIMS(xa)
    cdef cnp.ndarray o = _result("out", out, nd, shape, typenum)
    cdef cnp.ndarray mask = cnp.PyArray_EMPTY(nd, shape, cnp.NPY_BOOL, 0)
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    cdef unsigned char* m = <unsigned char*>_data(mask)
    cdef void* p_xa = _data(xa)
    cdef void* p_o = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            _relu_fwd(<const double*>p_xa, <double*>p_o, m, n)
    else:
        with nogil:
            _relu_fwd(<const float*>p_xa, <float*>p_o, m, n)
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
    cdef const unsigned char* m = <const unsigned char*>_data(ma)
    cdef void* p_d = _data(d)
    cdef void* p_o = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            _relu_bwd(<const double*>p_d, m, <double*>p_o, n)
    else:
        with nogil:
            _relu_bwd(<const float*>p_d, m, <float*>p_o, n)
    return o


# --------------------------------------------------------------------------- Sigmoid

cdef void _sigmoid_fwd(const floating* x, floating* out, intp_t n) noexcept nogil:
    cdef intp_t i
    cdef floating v, e
    for i in range(n):
        v = x[i]
        # exp of a non-positive number only: no overflow for any input
        if floating is float:
            e = expf(-fabs(v))
        else:
            e = exp(-fabs(v))
        if v >= 0:
            out[i] = 1 / (1 + e)
        else:
            out[i] = e / (1 + e)   # also NaN for NaN


cdef void _sigmoid_bwd(const floating* dout, const floating* y, floating* out,
                       intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        out[i] = dout[i] * (1 - y[i]) * y[i]


def sigmoid_forward(x, out=None):
    """Stable logistic function: ``1 / (1 + e)`` for ``x >= 0``, ``e / (1 + e)`` else."""
    cdef cnp.ndarray xa = _floats("x", x)
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef cnp.ndarray o = _result("out", out, cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), typenum)
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    cdef void* p_xa = _data(xa)
    cdef void* p_o = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            _sigmoid_fwd(<const double*>p_xa, <double*>p_o, n)
    else:
        with nogil:
            _sigmoid_fwd(<const float*>p_xa, <float*>p_o, n)
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
    cdef void* p_d = _data(d)
    cdef void* p_ya = _data(ya)
    cdef void* p_o = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            _sigmoid_bwd(<const double*>p_d, <const double*>p_ya, <double*>p_o, n)
    else:
        with nogil:
            _sigmoid_bwd(<const float*>p_d, <const float*>p_ya, <float*>p_o, n)
    return o


# --------------------------------------------------------------------------- Affine

cdef int _colsum(const floating* a, floating* out, intp_t n, intp_t m) noexcept nogil:
    """out[j] = sum_i a[i, j], accumulated in double row after row. -1 on no memory."""
    cdef intp_t i, j
    cdef const floating* row
    cdef double* acc
    if floating is double:
        acc = out
    else:
        acc = <double*>malloc(max(m, 1) * sizeof(double))
        if acc == NULL:
            return -1
    for j in range(m):
        acc[j] = 0
    for i in range(n):
        row = a + i * m
        for j in range(m):
            acc[j] += row[j]
    if floating is float:
        for j in range(m):
            out[j] = <float>acc[j]
        free(acc)
    return 0


def bias_grad(dout, out=None):
    """Column sums of a 2-D ``dout`` (N, M): the bias gradient ``db`` (M,)."""
    cdef cnp.ndarray d = _floats("dout", dout)
    if cnp.PyArray_NDIM(d) != 2:
        raise ValueError(f"dout: expected a 2-D array (batch, features), got shape {(<object>d).shape}")
    cdef int typenum = cnp.PyArray_TYPE(d)
    cdef intp_t n = cnp.PyArray_DIM(d, 0), m = cnp.PyArray_DIM(d, 1)
    cdef cnp.ndarray o = _result("out", out, 1, &m, typenum)
    cdef int status
    cdef void* p_d = _data(d)
    cdef void* p_o = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            status = _colsum(<const double*>p_d, <double*>p_o, n, m)
    else:
        with nogil:
            status = _colsum(<const float*>p_d, <float*>p_o, n, m)
    if status != 0:
        raise MemoryError()
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
            and (<object>xa).shape[1] == (<object>Wa).shape[0] and (<object>d).shape[0] == (<object>xa).shape[0]
            and (<object>d).shape[1] == (<object>Wa).shape[1]):
        from ._numpy import _affine_shapes
        _affine_shapes(d, xa, Wa)
    dx = np.matmul(d, Wa.T) if need_dx else None
    dW = np.matmul(xa.T, d)
    return dx, dW, bias_grad(d)


# --------------------------------------------------------------------------- Softmax + CE

cdef double _softmax_row(const floating* x, floating* y, intp_t c,
                         floating* m_out) noexcept nogil:
    """y = exp(x - max) / sum; returns log(sum) and writes the max to m_out."""
    cdef intp_t j
    cdef floating m = x[0], z
    cdef double s = 0, e, inv
    for j in range(1, c):
        if x[j] > m:
            m = x[j]
    for j in range(c):
        z = x[j] - m
        if floating is float:
            e = expf(z)
        else:
            e = exp(z)
        y[j] = <floating>e
        s += e
    inv = 1 / s
    for j in range(c):
        y[j] = <floating>(y[j] * inv)
    m_out[0] = m
    return log(s)


cdef double _sce_labels(const floating* x, const intp_t* labels, floating* y,
                        intp_t n, intp_t c) noexcept nogil:
    cdef intp_t i
    cdef floating m
    cdef double total = 0, log_s
    for i in range(n):
        log_s = _softmax_row(x + i * c, y + i * c, c, &m)
        total += log_s - <double>(x[i * c + labels[i]] - m)
    return total / n


cdef double _sce_targets(const floating* x, const floating* t, floating* y,
                         intp_t n, intp_t c) noexcept nogil:
    cdef intp_t i, j
    cdef floating m
    cdef double total = 0, log_s
    cdef const floating* tr
    for i in range(n):
        log_s = _softmax_row(x + i * c, y + i * c, c, &m)
        tr = t + i * c
        for j in range(c):
            if tr[j] != 0:    # a zero target ignores its logit, even -inf
                total += tr[j] * (log_s - <double>(x[i * c + j] - m))
    return total / n


cdef bint _labels_ok(const intp_t* labels, intp_t n, intp_t c) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        if labels[i] < 0 or labels[i] >= c:
            return False
    return True


cdef inline bint _is_native_labels(object t, intp_t n):
    if not isinstance(t, cnp.ndarray):
        return False
    cdef cnp.ndarray ta = <cnp.ndarray>t
    return (cnp.PyArray_TYPE(ta) == cnp.NPY_INTP and cnp.PyArray_NDIM(ta) == 1
            and cnp.PyArray_DIM(ta, 0) == n and cnp.PyArray_ISCARRAY_RO(ta))


cdef tuple _sce_inputs(object x, object t):
    """(x, labels, onehot) as in ``_checks.softmax_inputs``, checked in C when possible."""
    cdef cnp.ndarray xa
    cdef intp_t n, c
    if _is_native(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2:
        xa = <cnp.ndarray>x
        n, c = cnp.PyArray_DIM(xa, 0), cnp.PyArray_DIM(xa, 1)
        if n > 0 and c > 0 and _is_native_labels(t, n):
            if _labels_ok(<const intp_t*>_data(<cnp.ndarray>t), n, c):
                return xa, t, None
    return softmax_inputs(x, t)


def softmax_cross_entropy(x, t, out=None):
    """Fused softmax and mean cross-entropy: ``(loss, y)``; see the NumPy twin."""
    xa, labels, onehot = _sce_inputs(x, t)
    cdef cnp.ndarray xc = <cnp.ndarray>xa
    cdef int typenum = cnp.PyArray_TYPE(xc)
    cdef intp_t n = cnp.PyArray_DIM(xc, 0), c = cnp.PyArray_DIM(xc, 1)
    cdef cnp.ndarray y = _result("out", out, 2, cnp.PyArray_DIMS(xc), typenum)
    cdef double loss
    cdef const intp_t* lab
    cdef void* tp
    cdef void* p_xc = _data(xc)
    cdef void* p_y = _data(y)
    if labels is not None:
        lab = <const intp_t*>_data(<cnp.ndarray>labels)
        if typenum == cnp.NPY_DOUBLE:
            with nogil:
                loss = _sce_labels(<const double*>p_xc, lab, <double*>p_y, n, c)
        else:
            with nogil:
                loss = _sce_labels(<const float*>p_xc, lab, <float*>p_y, n, c)
    else:
        tp = _data(<cnp.ndarray>onehot)
        if typenum == cnp.NPY_DOUBLE:
            with nogil:
                loss = _sce_targets(<const double*>p_xc, <const double*>tp,
                                    <double*>p_y, n, c)
        else:
            with nogil:
                loss = _sce_targets(<const float*>p_xc, <const float*>tp,
                                    <float*>p_y, n, c)
    return (<object>xc).dtype.type(loss), y


cdef void _sce_grad_labels(const floating* y, const intp_t* labels, floating* out,
                           intp_t n, intp_t c, floating scale) noexcept nogil:
    cdef intp_t i, j, k
    cdef floating y_label
    for i in range(n):
        k = i * c
        y_label = y[k + labels[i]]     # read first: out may be y itself
        for j in range(c):
            out[k + j] = y[k + j] * scale
        out[k + labels[i]] = (y_label - 1) * scale


cdef void _sce_grad_targets(const floating* y, const floating* t, floating* out,
                            intp_t size, floating scale) noexcept nogil:
    cdef intp_t i
    for i in range(size):
        out[i] = (y[i] - t[i]) * scale


def softmax_cross_entropy_backward(y, t, dout=1.0, out=None):
    """Gradient of the mean loss w.r.t. the logits: ``(y - onehot(t)) * (dout / N)``."""
    ya, labels, onehot = _sce_inputs(y, t)
    cdef cnp.ndarray yc = <cnp.ndarray>ya
    cdef int typenum = cnp.PyArray_TYPE(yc)
    cdef intp_t n = cnp.PyArray_DIM(yc, 0), c = cnp.PyArray_DIM(yc, 1)
    cdef double scale = float(dout) / n
    cdef cnp.ndarray o = _result("out", out, 2, cnp.PyArray_DIMS(yc), typenum)
    cdef const intp_t* lab
    cdef void* tp
    cdef void* p_yc = _data(yc)
    cdef void* p_o = _data(o)
    if labels is not None:
        lab = <const intp_t*>_data(<cnp.ndarray>labels)
        if typenum == cnp.NPY_DOUBLE:
            with nogil:
                _sce_grad_labels(<const double*>p_yc, lab, <double*>p_o, n, c,
                                 <double>scale)
        else:
            with nogil:
                _sce_grad_labels(<const float*>p_yc, lab, <float*>p_o, n, c,
                                 <float>scale)
    else:
        tp = _data(<cnp.ndarray>onehot)
        if typenum == cnp.NPY_DOUBLE:
            with nogil:
                _sce_grad_targets(<const double*>p_yc, <const double*>tp,
                                  <double*>p_o, n * c, <double>scale)
        else:
            with nogil:
                _sce_grad_targets(<const float*>p_yc, <const float*>tp,
                                  <float*>p_o, n * c, <float>scale)
    return o
