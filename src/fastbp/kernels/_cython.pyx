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
- ``exp`` is NumPy's vectorised one: the inner loop of ``np.exp`` for the dtype, looked
  up once at import and called from C without the GIL, on chunks that stay in the L1
  cache between the passes before and after it.
- Large arrays are split over OpenMP threads (when the build has OpenMP), one
  contiguous run per thread; results do not depend on the number of threads.
- Sums accumulate in double. Matrix products are NumPy's (BLAS): never hand-rolled.
- No ``-ffast-math`` (setup.py): it would break NaN propagation.
"""
import operator
import os
import warnings

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free

from . import _blas
from ._checks import (
    affine_forward_inputs,
    affine_sgd_inputs,
    affine_shapes as _affine_shapes,
    check_out,
    check_same_shape,
    common_dtype,
    float_array,
    mask_array,
    real_scalar,
    softmax_inputs,
)

cnp.import_array()

__all__ = [
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "bias_grad",
    "affine_forward",
    "affine_backward",
    "affine_backward_sgd",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
]

ctypedef cnp.npy_intp intp_t

cdef extern from "_loops.h" nogil:
    void relu_fwd_f32(const float*, float*, unsigned char*, intp_t)
    void relu_fwd_f64(const double*, double*, unsigned char*, intp_t)
    void relu_bwd_f32(const float*, const unsigned char*, float*, intp_t)
    void relu_bwd_f64(const double*, const unsigned char*, double*, intp_t)
    ctypedef struct exp_t "fastbp_exp_t":
        pass
    exp_t fastbp_exp_from(void* loop, void* data)
    void sigmoid_fwd_f32(const float*, float*, intp_t, exp_t)
    void sigmoid_fwd_f64(const double*, double*, intp_t, exp_t)
    void sigmoid_bwd_f32(const float*, const float*, float*, intp_t)
    void sigmoid_bwd_f64(const double*, const double*, double*, intp_t)
    void colsum_f32(const float*, double*, intp_t, intp_t)
    void colsum_f64(const double*, double*, intp_t, intp_t)
    void softmax_ce_rows_f32(const float*, float*, const intp_t*, const float*, double*,
                             intp_t, intp_t, exp_t)
    void softmax_ce_rows_f64(const double*, double*, const intp_t*, const double*, double*,
                             intp_t, intp_t, exp_t)
    void sce_grad_labels_f32(const float*, const intp_t*, float*, intp_t, intp_t, float)
    void sce_grad_labels_f64(const double*, const intp_t*, double*, intp_t, intp_t, double)
    void sce_grad_targets_f32(const float*, const float*, float*, intp_t, float)
    void sce_grad_targets_f64(const double*, const double*, double*, intp_t, double)
    bint labels_in_range(const intp_t*, intp_t, intp_t)
    const char* simd_level()

cdef extern from "<omp.h>" nogil:
    """
    #ifndef _OPENMP
    #define FASTBP_HAVE_OPENMP 0
    #else
    #define FASTBP_HAVE_OPENMP 1
    #endif
    """
    const bint FASTBP_HAVE_OPENMP


cdef exp_t _numpy_exp_loop(int typenum) except *:
    """NumPy's inner loop of ``np.exp`` from ``typenum`` to ``typenum`` (the same code,
    SIMD dispatch included, that ``np.exp`` runs on such arrays)."""
    cdef cnp.ufunc u = np.exp
    cdef int i
    for i in range(u.ntypes):
        if (u.types[i * u.nargs] == typenum and u.types[i * u.nargs + 1] == typenum
                and u.functions[i] != NULL):
            return fastbp_exp_from(<void*>u.functions[i], u.data[i])
    raise ImportError(f"fastbp: NumPy {np.__version__} has no exp loop for type {typenum}")


cdef exp_t EXP_F32 = _numpy_exp_loop(cnp.NPY_FLOAT)
cdef exp_t EXP_F64 = _numpy_exp_loop(cnp.NPY_DOUBLE)


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


cdef inline const char* _cdata(object a) noexcept:
    """The data pointer of an input array (or NULL for None)."""
    # plain statements: a conditional expression makes Cython drop the const
    if a is None:
        return NULL
    return <const char*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline bint _is_f64(cnp.ndarray a) noexcept:
    return cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE


cdef cnp.ndarray _apart(cnp.ndarray a, cnp.ndarray o, bint same_ok):
    """``a``, or a copy of it when its memory meets the output's (both C-contiguous).

    The loops must read an input before ``o`` overwrites it. An elementwise loop reads
    element i before writing element i, so ``o`` being exactly ``a`` is fine there
    (``same_ok``); a partial overlap, or any overlap in a reduction or a row loop that
    reads an index array, is not.
    """
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* po = <char*>cnp.PyArray_DATA(o)
    cdef intp_t na = cnp.PyArray_NBYTES(a), no = cnp.PyArray_NBYTES(o)
    if pa >= po + no or po >= pa + na:
        return a
    if same_ok and pa == po and na == no and cnp.PyArray_TYPE(a) == cnp.PyArray_TYPE(o):
        return a
    return a.copy()


# --------------------------------------------------------------------------- threads
#
# Work on large arrays is split over OpenMP threads, one contiguous run of whole grains
# per thread. A run costs a few microseconds to start, and memory-bound loops gain only
# when the arrays outgrow the caches (in a training step, right after a matrix product,
# the second core is also busy with OpenBLAS's spinning thread: splitting ReLU and SGD
# from 65,536 elements made the 784-1000-1000-10 step slower), so they split from
# PARALLEL_MIN elements; loops around exp are compute-bound and split from
# EXP_PARALLEL_MIN. Results do not depend on the number of threads: elementwise work is
# independent, and the softmax writes one loss per row, summed in row order afterwards.

cdef intp_t PARALLEL_MIN = 1 << 20
cdef intp_t EXP_PARALLEL_MIN = 1 << 15
cdef int _threads = 1
cdef bint _omp_started = False   # a parallel region has run in this process
cdef bint _forked = False        # this process was forked after that: one thread only

HAVE_OPENMP = bool(FASTBP_HAVE_OPENMP)
#: The build of the inner loops that runs on this CPU: "avx512f", "avx2" or "baseline".
SIMD = simd_level().decode()


def _default_threads():
    if not HAVE_OPENMP:
        return 1
    env = os.environ.get("FASTBP_NUM_THREADS", "").strip()
    return int(env) if env else min(os.cpu_count() or 1, 8)


def set_num_threads(n):
    """Threads the compiled kernels may use on large arrays (1 turns threading off;
    without OpenMP in the build the kernels run on one thread whatever ``n``)."""
    global _threads
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"n: expected a positive number of threads, got {n}")
    if n > 1 and _forked:
        warnings.warn("fastbp: this process was forked after fastbp's kernels had run on "
                      "several threads; OpenMP cannot start threads again here, so they "
                      "stay on one (use the 'spawn' start method for threaded workers)",
                      RuntimeWarning, stacklevel=2)
        n = 1
    _threads = n


def _after_fork_in_child():
    # libgomp's threads do not survive a fork, and its next parallel region in the
    # child waits for them forever: a child of a process that ran one stays on one thread
    global _threads, _forked
    if _omp_started:
        _forked, _threads = True, 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_num_threads():
    """Threads the compiled kernels use on large arrays."""
    return _threads if HAVE_OPENMP else 1


set_num_threads(_default_threads())


ctypedef struct Job:
    # What a kernel's range function reads and writes; each kernel uses some fields.
    bint f64
    const char* a          # first input
    const char* b          # second input
    char* out
    unsigned char* mask
    const intp_t* labels
    double* loss           # one per row
    intp_t c               # columns (row kernels)
    double scale

ctypedef void (*range_fn)(const Job*, intp_t, intp_t) noexcept nogil


cdef void _run(range_fn fn, const Job* job, intp_t n, intp_t grain, intp_t elements,
               intp_t min_elements) noexcept nogil:
    """``fn(job, start, stop)`` over [0, n): on one thread, or in one run of whole grains
    per thread when the work touches at least ``min_elements`` elements."""
    global _omp_started
    cdef intp_t nt = 1, step, k, start
    if elements >= min_elements and FASTBP_HAVE_OPENMP:
        nt = min(<intp_t>_threads, (n + grain - 1) // grain)
    if nt <= 1:
        fn(job, 0, n)
        return
    _omp_started = True
    step = ((n + nt - 1) // nt + grain - 1) // grain * grain
    for k in prange(nt, num_threads=nt, schedule="static"):
        start = k * step
        if start < n:
            fn(job, start, min(n, start + step))


# --------------------------------------------------------------------------- ReLU

cdef void _relu_fwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        relu_fwd_f64(<const double*>j.a + a, <double*>j.out + a, j.mask + a, b - a)
    else:
        relu_fwd_f32(<const float*>j.a + a, <float*>j.out + a, j.mask + a, b - a)


cdef void _relu_bwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    cdef const unsigned char* m = <const unsigned char*>j.b + a
    if j.f64:
        relu_bwd_f64(<const double*>j.a + a, m, <double*>j.out + a, b - a)
    else:
        relu_bwd_f32(<const float*>j.a + a, m, <float*>j.out + a, b - a)


def relu_forward(x, out=None):
    """ReLU: ``(out, mask)`` with ``mask = x <= 0`` and ``out = where(mask, +0.0, x)``."""
    cdef cnp.ndarray xa = _floats("x", x)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef intp_t* shape = cnp.PyArray_DIMS(xa)
    cdef cnp.ndarray o = _result("out", out, nd, shape, cnp.PyArray_TYPE(xa))
    xa = _apart(xa, o, True)
    cdef cnp.ndarray mask = cnp.PyArray_EMPTY(nd, shape, cnp.NPY_BOOL, 0)
    cdef Job job
    job.f64, job.a, job.out = _is_f64(xa), _cdata(xa), <char*>_data(o)
    job.mask = <unsigned char*>_data(mask)
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    with nogil:
        _run(_relu_fwd_job, &job, n, 4096, n, PARALLEL_MIN)
    return o, mask


def relu_backward(dout, mask, out=None):
    """ReLU gradient: ``where(mask, +0.0, dout)``; ``dout`` is untouched unless it is ``out``."""
    cdef cnp.ndarray d = _floats("dout", dout)
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
    cdef cnp.ndarray o = _result("out", out, nd, shape, cnp.PyArray_TYPE(d))
    d, ma = _apart(d, o, True), _apart(ma, o, False)
    cdef Job job
    job.f64, job.a, job.b, job.out = _is_f64(d), _cdata(d), _cdata(ma), <char*>_data(o)
    cdef intp_t n = cnp.PyArray_SIZE(d)
    with nogil:
        _run(_relu_bwd_job, &job, n, 4096, n, PARALLEL_MIN)
    return o


# --------------------------------------------------------------------------- Sigmoid

cdef void _sigmoid_fwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        sigmoid_fwd_f64(<const double*>j.a + a, <double*>j.out + a, b - a, EXP_F64)
    else:
        sigmoid_fwd_f32(<const float*>j.a + a, <float*>j.out + a, b - a, EXP_F32)


cdef void _sigmoid_bwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        sigmoid_bwd_f64(<const double*>j.a + a, <const double*>j.b + a, <double*>j.out + a, b - a)
    else:
        sigmoid_bwd_f32(<const float*>j.a + a, <const float*>j.b + a, <float*>j.out + a, b - a)


def sigmoid_forward(x, out=None):
    """Stable logistic function: ``1 / (1 + e)`` for ``x >= 0``, ``e / (1 + e)`` else."""
    cdef cnp.ndarray xa = _floats("x", x)
    cdef cnp.ndarray o = _result("out", out, cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa),
                                 cnp.PyArray_TYPE(xa))
    if out is not None and np.may_share_memory(o, xa):
        xa = xa.copy()  # the last pass reads x's sign after exp(-|x|) has filled out
    cdef Job job
    job.f64, job.a, job.out = _is_f64(xa), _cdata(xa), <char*>_data(o)
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    with nogil:
        _run(_sigmoid_fwd_job, &job, n, 4096, n, EXP_PARALLEL_MIN)
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
    cdef cnp.ndarray o = _result("out", out, cnp.PyArray_NDIM(d), cnp.PyArray_DIMS(d),
                                 cnp.PyArray_TYPE(d))
    d, ya = _apart(d, o, True), _apart(ya, o, True)
    cdef Job job
    job.f64, job.a, job.b, job.out = _is_f64(d), _cdata(d), _cdata(ya), <char*>_data(o)
    cdef intp_t n = cnp.PyArray_SIZE(d)
    with nogil:
        _run(_sigmoid_bwd_job, &job, n, 4096, n, PARALLEL_MIN)
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
    d = _apart(d, o, False)   # the float64 sums are written into ``out`` as they run
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


def affine_backward(dout, x, W, need_dx=True, dW_out=None, db_out=None):
    """Gradients of ``out = x @ W + b``: ``(dx, dW, db)``; ``dx`` is None without
    ``need_dx``; ``dW`` and ``db`` go into ``dW_out`` and ``db_out`` when given."""
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
    cdef intp_t dx_shape[2]
    dx_shape[0], dx_shape[1] = cnp.PyArray_DIM(xa, 0), cnp.PyArray_DIM(xa, 1)
    cdef cnp.ndarray dW = _result("dW_out", dW_out, 2, cnp.PyArray_DIMS(Wa), cnp.PyArray_TYPE(Wa))
    dx = None
    if need_dx:
        dx = _blas.gemm(d, Wa, cnp.PyArray_EMPTY(2, dx_shape, cnp.PyArray_TYPE(Wa), 0),
                        trans_b=True)
    # the products read dout and x whole before dW is written: an overlapping dW_out
    # gets them copied first (db is then the column sums of the copy, as NumPy's)
    d, xa = _apart(d, dW, False), _apart(xa, dW, False)
    _blas.gemm(xa, d, dW, trans_a=True)
    return dx, dW, bias_grad(d, out=db_out)


def affine_forward(x, W, b, out=None):
    """``out = x @ W + b``: ``x`` (N, D), ``W`` (D, M), ``b`` (M,), one float dtype."""
    cdef intp_t shape[2]
    if (out is None and _is_native(x) and _is_native(W) and _is_native(b)
            and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.PyArray_TYPE(<cnp.ndarray>W)
            and cnp.PyArray_TYPE(<cnp.ndarray>b) == cnp.PyArray_TYPE(<cnp.ndarray>W)
            and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2 and cnp.PyArray_NDIM(<cnp.ndarray>W) == 2
            and cnp.PyArray_NDIM(<cnp.ndarray>b) == 1
            and cnp.PyArray_DIM(<cnp.ndarray>x, 1) == cnp.PyArray_DIM(<cnp.ndarray>W, 0)
            and cnp.PyArray_DIM(<cnp.ndarray>b, 0) == cnp.PyArray_DIM(<cnp.ndarray>W, 1)):
        shape[0], shape[1] = cnp.PyArray_DIM(<cnp.ndarray>x, 0), cnp.PyArray_DIM(<cnp.ndarray>W, 1)
        out = cnp.PyArray_EMPTY(2, shape, cnp.PyArray_TYPE(<cnp.ndarray>W), 0)
    else:
        x, W, b, out = affine_forward_inputs(x, W, b, out)
    return _blas.gemm(x, W, out, bias=b)


def affine_backward_sgd(dout, x, W, b, lr, decay=0.0, need_dx=True):
    """Backward through ``out = x @ W + b`` with the SGD step folded into the weight
    gradient's product: returns ``dx`` (with the old ``W``), sets
    ``W = (1 - lr * decay) * W - lr * x.T @ dout`` (one GEMM, ``beta = 1 - lr * decay``)
    and ``b -= lr * bias_grad(dout)``."""
    d, xa, Wa, ba, lr_, decay_ = affine_sgd_inputs(dout, x, W, b, lr, decay)
    dx = None
    if need_dx:
        dx = _blas.gemm(d, Wa, np.empty((xa.shape[0], xa.shape[1]), Wa.dtype), trans_b=True)
    _blas.gemm(xa, d, Wa, trans_a=True, alpha=-lr_, beta=1.0 - lr_ * decay_)
    sgd_update(ba, bias_grad(d), lr_)
    return dx


# --------------------------------------------------------------------------- Softmax + CE

cdef object _integer_labels(object t, intp_t n):
    """``t`` as a C-contiguous intp array when it is a 1-D integer ndarray of length n
    (MNIST's labels are uint8), else None; the range is checked by the caller."""
    if not isinstance(t, cnp.ndarray):
        return None
    cdef cnp.ndarray ta = <cnp.ndarray>t
    if not (cnp.PyArray_ISINTEGER(ta) and cnp.PyArray_NDIM(ta) == 1 and cnp.PyArray_DIM(ta, 0) == n):
        return None
    if cnp.PyArray_TYPE(ta) == cnp.NPY_INTP and cnp.PyArray_ISCARRAY_RO(ta):
        return ta
    return np.asarray(ta, dtype=np.intp, order="C")  # uint64 beyond intp goes negative: refused


cdef tuple _sce_inputs(object x, object t, str name="x"):
    """(x, labels, onehot) as ``_checks.softmax_inputs`` gives them, checked in C when possible."""
    cdef cnp.ndarray xa
    cdef intp_t n, c
    if _is_native(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2:
        xa = <cnp.ndarray>x
        n, c = cnp.PyArray_DIM(xa, 0), cnp.PyArray_DIM(xa, 1)
        labels = _integer_labels(t, n) if n > 0 and c > 0 else None
        if labels is not None and labels_in_range(<const intp_t*>_data(<cnp.ndarray>labels), n, c):
            return xa, labels, None
    return softmax_inputs(x, t, name)


cdef void _sce_rows_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    """Rows [a, b) of the softmax and their losses; ``j.b`` holds the targets when there
    are no labels."""
    # pointers set by plain statements: a conditional expression makes Cython drop the
    # const of its temporaries
    cdef intp_t c = j.c, off = a * c
    cdef const intp_t* lab = NULL
    cdef const double* t64 = NULL
    cdef const float* t32 = NULL
    if j.labels != NULL:
        lab = j.labels + a
    elif j.f64:
        t64 = <const double*>j.b + off
    else:
        t32 = <const float*>j.b + off
    if j.f64:
        softmax_ce_rows_f64(<const double*>j.a + off, <double*>j.out + off, lab, t64,
                            j.loss + a, b - a, c, EXP_F64)
    else:
        softmax_ce_rows_f32(<const float*>j.a + off, <float*>j.out + off, lab, t32,
                            j.loss + a, b - a, c, EXP_F32)


def softmax_cross_entropy(x, t, out=None):
    """Fused softmax and mean cross-entropy: ``(loss, y)``; see the NumPy twin."""
    xa, labels, onehot = _sce_inputs(x, t)
    cdef cnp.ndarray xc = <cnp.ndarray>xa
    cdef intp_t n = cnp.PyArray_DIM(xc, 0), c = cnp.PyArray_DIM(xc, 1)
    cdef cnp.ndarray y = _result("out", out, 2, cnp.PyArray_DIMS(xc), cnp.PyArray_TYPE(xc))
    if out is not None and np.may_share_memory(y, xc):
        xc = xc.copy()  # the loss reads x after y has been written
    if labels is not None:  # so are the labels and the targets
        labels = _apart(<cnp.ndarray>labels, y, False)
    else:
        onehot = _apart(<cnp.ndarray>onehot, y, False)
    cdef cnp.ndarray row_loss = cnp.PyArray_EMPTY(1, &n, cnp.NPY_DOUBLE, 0)
    cdef Job job
    job.f64, job.a, job.out, job.c = _is_f64(xc), _cdata(xc), <char*>_data(y), c
    job.labels = <const intp_t*>_cdata(labels)
    job.b = _cdata(onehot)
    job.loss = <double*>_data(row_loss)
    cdef double total = 0
    cdef intp_t i
    with nogil:
        _run(_sce_rows_job, &job, n, 1, n * c, EXP_PARALLEL_MIN)
        for i in range(n):
            total += job.loss[i]
    return xc.dtype.type(total / n), y


def softmax_cross_entropy_backward(y, t, dout=1.0, out=None):
    """Gradient of the mean loss w.r.t. the logits: ``(y - onehot(t)) * (dout / N)``."""
    ya, labels, onehot = _sce_inputs(y, t, "y")
    cdef cnp.ndarray yc = <cnp.ndarray>ya
    cdef intp_t n = cnp.PyArray_DIM(yc, 0), c = cnp.PyArray_DIM(yc, 1)
    cdef double scale = real_scalar("dout", dout) / n
    cdef cnp.ndarray o = _result("out", out, 2, cnp.PyArray_DIMS(yc), cnp.PyArray_TYPE(yc))
    yc = _apart(yc, o, True)
    if labels is not None:  # labels[i] is read after earlier rows are written
        labels = _apart(<cnp.ndarray>labels, o, False)
    else:
        onehot = _apart(<cnp.ndarray>onehot, o, True)
    cdef Job job
    job.f64, job.a, job.out, job.c, job.scale = _is_f64(yc), _cdata(yc), <char*>_data(o), c, scale
    job.labels = <const intp_t*>_cdata(labels)
    job.b = _cdata(onehot)
    with nogil:  # split like the forward, so each thread reads the rows it wrote
        _run(_sce_grad_job, &job, n, 1, n * c, EXP_PARALLEL_MIN)
    return o


cdef void _sce_grad_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    """Rows [a, b) of the softmax-with-cross-entropy gradient."""
    cdef intp_t c = j.c, off = a * c
    if j.labels != NULL:
        if j.f64:
            sce_grad_labels_f64(<const double*>j.a + off, j.labels + a, <double*>j.out + off,
                                b - a, c, j.scale)
        else:
            sce_grad_labels_f32(<const float*>j.a + off, j.labels + a, <float*>j.out + off,
                                b - a, c, <float>j.scale)
    elif j.f64:
        sce_grad_targets_f64(<const double*>j.a + off, <const double*>j.b + off,
                             <double*>j.out + off, (b - a) * c, j.scale)
    else:
        sce_grad_targets_f32(<const float*>j.a + off, <const float*>j.b + off,
                             <float*>j.out + off, (b - a) * c, <float>j.scale)


# =========================================================================== chapter 6
# Optimizer updates, dropout and batch normalization: the twins of the chapter-6 section
# of ``_numpy.py`` (read the contract there). The optimizer kernels are one fused pass
# over each parameter and its state, in the book's order of operations and in the
# parameter's own precision (hyperparameters rounded to it once), so they give the
# NumPy twin's results bit for bit; they allocate nothing. Batch normalization walks
# the rows of the C-ordered (N, D) input and accumulates the per-column sums in double
# scratch vectors, so every pass reads memory in order.

from cython cimport floating
from libc.math cimport sqrt, sqrtf
from libc.stdlib cimport free, malloc

from ._numpy import _bn_inputs, _param_inputs


cdef inline bint _is_writable_float(object a):
    """A C-contiguous, aligned, writable float32/float64 ndarray (updatable in place)."""
    if not isinstance(a, cnp.ndarray):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int typenum = cnp.PyArray_TYPE(arr)
    return ((typenum == cnp.NPY_DOUBLE or typenum == cnp.NPY_FLOAT)
            and cnp.PyArray_ISCARRAY(arr))


cdef inline bint _like(object a, cnp.ndarray ref, bint writable):
    """``a`` is an ndarray of ``ref``'s dtype and shape, C-contiguous (and writable)."""
    if not isinstance(a, cnp.ndarray):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != cnp.PyArray_TYPE(ref) or not cnp.PyArray_SAMESHAPE(arr, ref):
        return False
    return cnp.PyArray_ISCARRAY(arr) if writable else cnp.PyArray_ISCARRAY_RO(arr)


cdef cnp.ndarray _opt_grad(object param, object grad, object s1, str n1, object s2, str n2):
    """Checked ``grad`` of an in-place update (in ``param``'s dtype); the checks of
    ``_param_inputs`` run in C for the usual case, through it otherwise."""
    cdef cnp.ndarray p
    if _is_writable_float(param):
        p = <cnp.ndarray>param
        if (_like(grad, p, False) and (n1 is None or _like(s1, p, True))
                and (n2 is None or _like(s2, p, True))):
            return <cnp.ndarray>grad
    state = []
    if n1 is not None:
        state.append((n1, s1))
    if n2 is not None:
        state.append((n2, s2))
    return _param_inputs(param, grad, *state)


cdef inline floating _sqrt(floating a) noexcept nogil:
    if floating is float:
        return sqrtf(a)
    else:
        return sqrt(a)


# --------------------------------------------------------------------------- optimizers

cdef void _sgd(floating* p, const floating* g, floating lr, intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        p[i] = p[i] - lr * g[i]


cdef void _momentum(floating* p, const floating* g, floating* v, floating lr,
                    floating mom, intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        v[i] = v[i] * mom - lr * g[i]
        p[i] = p[i] + v[i]


cdef void _nesterov(floating* p, const floating* g, floating* v, floating lr,
                    floating mom, floating mom2, floating c, intp_t n) noexcept nogil:
    # mom2 = momentum**2 and c = (1 + momentum) * lr, rounded once, as NumPy does
    cdef intp_t i
    for i in range(n):
        v[i] = v[i] * mom - lr * g[i]
        p[i] = (p[i] + mom2 * v[i]) - c * g[i]


cdef void _adagrad(floating* p, const floating* g, floating* h, floating lr,
                   floating eps, intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        h[i] = h[i] + g[i] * g[i]
        p[i] = p[i] - (lr * g[i]) / (_sqrt(h[i]) + eps)


cdef void _rmsprop(floating* p, const floating* g, floating* h, floating lr,
                   floating decay, floating one_minus_decay, floating eps,
                   intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        h[i] = h[i] * decay + (one_minus_decay * g[i]) * g[i]
        p[i] = p[i] - (lr * g[i]) / (_sqrt(h[i]) + eps)


cdef void _adam(floating* p, const floating* g, floating* m, floating* v, floating lr_t,
                floating a1, floating a2, floating eps, intp_t n) noexcept nogil:
    # a1 = 1 - beta1, a2 = 1 - beta2
    cdef intp_t i
    cdef floating gi
    for i in range(n):
        gi = g[i]
        m[i] = m[i] + a1 * (gi - m[i])
        v[i] = v[i] + a2 * (gi * gi - v[i])
        p[i] = p[i] - (lr_t * m[i]) / (_sqrt(v[i]) + eps)


def sgd_update(param, grad, lr):
    """SGD in place: ``param -= lr * grad``. Returns ``param``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, None, None, None, None)
    cdef cnp.ndarray p = <cnp.ndarray>param
    cdef intp_t n = cnp.PyArray_SIZE(p)
    cdef double lr_ = lr
    cdef void* pp = _data(p)
    cdef void* pg = _data(g)
    if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
        with nogil:
            _sgd(<double*>pp, <const double*>pg, lr_, n)
    else:
        with nogil:
            _sgd(<float*>pp, <const float*>pg, <float>lr_, n)
    return param


def momentum_update(param, grad, v, lr, momentum):
    """Momentum SGD in place: ``v = momentum * v - lr * grad; param += v``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, v, "v", None, None)
    cdef cnp.ndarray p = <cnp.ndarray>param
    cdef intp_t n = cnp.PyArray_SIZE(p)
    cdef double lr_ = lr, mom = momentum
    cdef void* pp = _data(p)
    cdef void* pg = _data(g)
    cdef void* pv = _data(<cnp.ndarray>v)
    if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
        with nogil:
            _momentum(<double*>pp, <const double*>pg, <double*>pv, lr_, mom, n)
    else:
        with nogil:
            _momentum(<float*>pp, <const float*>pg, <float*>pv, <float>lr_, <float>mom, n)
    return param


def nesterov_update(param, grad, v, lr, momentum):
    """The book's Nesterov variant, in place: ``v = momentum * v - lr * grad;
    param += momentum**2 * v - (1 + momentum) * lr * grad`` (in that order)."""
    cdef cnp.ndarray g = _opt_grad(param, grad, v, "v", None, None)
    cdef cnp.ndarray p = <cnp.ndarray>param
    cdef intp_t n = cnp.PyArray_SIZE(p)
    cdef double lr_ = lr, mom = momentum
    cdef double mom2 = mom * mom, c = (1 + mom) * lr_
    cdef void* pp = _data(p)
    cdef void* pg = _data(g)
    cdef void* pv = _data(<cnp.ndarray>v)
    if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
        with nogil:
            _nesterov(<double*>pp, <const double*>pg, <double*>pv, lr_, mom, mom2, c, n)
    else:
        with nogil:
            _nesterov(<float*>pp, <const float*>pg, <float*>pv, <float>lr_, <float>mom,
                      <float>mom2, <float>c, n)
    return param


def adagrad_update(param, grad, h, lr, eps):
    """AdaGrad in place: ``h += grad * grad; param -= lr * grad / (sqrt(h) + eps)``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, h, "h", None, None)
    cdef cnp.ndarray p = <cnp.ndarray>param
    cdef intp_t n = cnp.PyArray_SIZE(p)
    cdef double lr_ = lr, eps_ = eps
    cdef void* pp = _data(p)
    cdef void* pg = _data(g)
    cdef void* ph = _data(<cnp.ndarray>h)
    if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
        with nogil:
            _adagrad(<double*>pp, <const double*>pg, <double*>ph, lr_, eps_, n)
    else:
        with nogil:
            _adagrad(<float*>pp, <const float*>pg, <float*>ph, <float>lr_, <float>eps_, n)
    return param


def rmsprop_update(param, grad, h, lr, decay_rate, eps):
    """RMSprop in place: ``h = decay_rate * h + (1 - decay_rate) * grad * grad;
    param -= lr * grad / (sqrt(h) + eps)``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, h, "h", None, None)
    cdef cnp.ndarray p = <cnp.ndarray>param
    cdef intp_t n = cnp.PyArray_SIZE(p)
    cdef double lr_ = lr, d = decay_rate, eps_ = eps
    cdef double omd = 1 - d
    cdef void* pp = _data(p)
    cdef void* pg = _data(g)
    cdef void* ph = _data(<cnp.ndarray>h)
    if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
        with nogil:
            _rmsprop(<double*>pp, <const double*>pg, <double*>ph, lr_, d, omd, eps_, n)
    else:
        with nogil:
            _rmsprop(<float*>pp, <const float*>pg, <float*>ph, <float>lr_, <float>d,
                     <float>omd, <float>eps_, n)
    return param


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """Adam in place, the book's form: ``m += (1 - beta1) * (grad - m);
    v += (1 - beta2) * (grad**2 - v); param -= lr_t * m / (sqrt(v) + eps)``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, m, "m", v, "v")
    cdef cnp.ndarray p = <cnp.ndarray>param
    cdef intp_t n = cnp.PyArray_SIZE(p)
    cdef double lr_ = lr_t, a1 = 1 - <double>beta1, a2 = 1 - <double>beta2, eps_ = eps
    cdef void* pp = _data(p)
    cdef void* pg = _data(g)
    cdef void* pm = _data(<cnp.ndarray>m)
    cdef void* pv = _data(<cnp.ndarray>v)
    if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
        with nogil:
            _adam(<double*>pp, <const double*>pg, <double*>pm, <double*>pv, lr_, a1, a2,
                  eps_, n)
    else:
        with nogil:
            _adam(<float*>pp, <const float*>pg, <float*>pm, <float*>pv, <float>lr_,
                  <float>a1, <float>a2, <float>eps_, n)
    return param


# --------------------------------------------------------------------------- Dropout

cdef void _dropout_fwd(const floating* x, const floating* u, floating ratio,
                       floating scale, floating* out, unsigned char* mask,
                       intp_t n) noexcept nogil:
    # Branch-free (a random mask defeats branch prediction), so gcc vectorises it:
    # out = x * (mask * scale), exactly the NumPy twin's arithmetic.
    cdef intp_t i
    for i in range(n):
        mask[i] = u[i] > ratio
    for i in range(n):
        out[i] = x[i] * (<floating>mask[i] * scale)


cdef void _dropout_bwd(const floating* dout, const unsigned char* mask, floating scale,
                       floating* out, intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(n):
        out[i] = dout[i] * (<floating>mask[i] * scale)


def dropout_forward(x, u, ratio, scale, out=None):
    """Dropout with given uniform draws: ``(out, mask)``, ``mask = u > ratio``,
    ``out = x * (mask * scale)``; see the NumPy twin."""
    cdef cnp.ndarray xa = _floats("x", x)
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef cnp.ndarray ua
    if _like(u, xa, False):
        ua = <cnp.ndarray>u
    else:
        ua = _floats_as("u", u, typenum)
        check_same_shape("u", ua, "x", (<object>xa).shape)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef intp_t* shape = cnp.PyArray_DIMS(xa)
    cdef cnp.ndarray o = _result("out", out, nd, shape, typenum)
    cdef cnp.ndarray mask = cnp.PyArray_EMPTY(nd, shape, cnp.NPY_BOOL, 0)
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    cdef double r = ratio, s = scale
    cdef unsigned char* pm = <unsigned char*>_data(mask)
    cdef void* px = _data(xa)
    cdef void* pu = _data(ua)
    cdef void* po = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            _dropout_fwd(<const double*>px, <const double*>pu, r, s, <double*>po, pm, n)
    else:
        with nogil:
            _dropout_fwd(<const float*>px, <const float*>pu, <float>r, <float>s,
                         <float*>po, pm, n)
    return o, mask


def dropout_backward(dout, mask, scale, out=None):
    """Dropout gradient: ``dout * (mask * scale)``."""
    cdef cnp.ndarray d = _floats("dout", dout)
    cdef int typenum = cnp.PyArray_TYPE(d)
    cdef int nd = cnp.PyArray_NDIM(d)
    cdef intp_t* shape = cnp.PyArray_DIMS(d)
    cdef cnp.ndarray ma
    if (isinstance(mask, cnp.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray>mask) == cnp.NPY_BOOL
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>mask)
            and cnp.PyArray_SAMESHAPE(<cnp.ndarray>mask, d)):
        ma = <cnp.ndarray>mask
    else:
        ma = mask_array("mask", mask, (<object>d).shape)
    cdef cnp.ndarray o = _result("out", out, nd, shape, typenum)
    cdef intp_t n = cnp.PyArray_SIZE(d)
    cdef double s = scale
    cdef const unsigned char* pm = <const unsigned char*>_data(ma)
    cdef void* pd = _data(d)
    cdef void* po = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            _dropout_bwd(<const double*>pd, pm, s, <double*>po, n)
    else:
        with nogil:
            _dropout_bwd(<const float*>pd, pm, <float>s, <float*>po, n)
    return o


# --------------------------------------------------------------------------- BatchNorm

cdef int _bn_fwd(const floating* x, const floating* gamma, const floating* beta,
                 floating* rmean, floating* rvar, floating mom, floating one_minus_mom,
                 floating eps, floating* out, floating* xn, floating* std,
                 intp_t n, intp_t d) noexcept nogil:
    """Training-mode batch norm over the columns of x (n, d). -1 on no memory."""
    cdef intp_t i, j
    cdef const floating* xr
    cdef floating* xnr
    cdef floating* outr
    cdef floating c
    cdef double* acc = <double*>malloc(max(d, 1) * sizeof(double))
    cdef floating* mu = <floating*>malloc(max(d, 1) * sizeof(floating))
    if acc == NULL or mu == NULL:
        free(acc)
        free(mu)
        return -1
    # mean, rounded once to the element type
    for j in range(d):
        acc[j] = 0
    for i in range(n):
        xr = x + i * d
        for j in range(d):
            acc[j] += xr[j]
    for j in range(d):
        mu[j] = <floating>(acc[j] / n)
        acc[j] = 0
    # biased variance of the centred values (second pass: no cancellation)
    for i in range(n):
        xr = x + i * d
        for j in range(d):
            c = xr[j] - mu[j]
            acc[j] += <double>c * <double>c
    for j in range(d):
        std[j] = _sqrt(<floating>(acc[j] / n) + eps)
        rmean[j] = rmean[j] * mom + one_minus_mom * mu[j]
        rvar[j] = rvar[j] * mom + one_minus_mom * <floating>(acc[j] / n)
    for i in range(n):
        xr = x + i * d
        xnr = xn + i * d
        outr = out + i * d
        for j in range(d):
            xnr[j] = (xr[j] - mu[j]) / std[j]
            outr[j] = gamma[j] * xnr[j] + beta[j]
    free(acc)
    free(mu)
    return 0


cdef int _bn_infer(const floating* x, const floating* gamma, const floating* beta,
                   const floating* rmean, const floating* rvar, floating eps,
                   floating* out, intp_t n, intp_t d) noexcept nogil:
    cdef intp_t i, j
    cdef const floating* xr
    cdef floating* outr
    cdef floating* std = <floating*>malloc(max(d, 1) * sizeof(floating))
    if std == NULL:
        return -1
    for j in range(d):
        std[j] = _sqrt(rvar[j] + eps)
    for i in range(n):
        xr = x + i * d
        outr = out + i * d
        for j in range(d):
            outr[j] = ((xr[j] - rmean[j]) / std[j]) * gamma[j] + beta[j]
    free(std)
    return 0


cdef int _bn_bwd(const floating* dout, const floating* xn, const floating* std,
                 const floating* gamma, floating* dx, floating* dgamma, floating* dbeta,
                 intp_t n, intp_t d) noexcept nogil:
    cdef intp_t i, j
    cdef const floating* dr
    cdef const floating* xr
    cdef floating* dxr
    cdef double* acc = <double*>malloc(2 * max(d, 1) * sizeof(double))
    cdef floating* coef = <floating*>malloc(3 * max(d, 1) * sizeof(floating))
    if acc == NULL or coef == NULL:
        free(acc)
        free(coef)
        return -1
    cdef double* accb = acc
    cdef double* accg = acc + d
    cdef floating* a = coef
    cdef floating* c1 = coef + d
    cdef floating* c2 = coef + 2 * d
    for j in range(d):
        accb[j] = 0
        accg[j] = 0
    for i in range(n):
        dr = dout + i * d
        xr = xn + i * d
        for j in range(d):
            accb[j] += dr[j]
            accg[j] += <double>dr[j] * <double>xr[j]
    for j in range(d):
        dbeta[j] = <floating>accb[j]
        dgamma[j] = <floating>accg[j]
        a[j] = <floating>(<double>gamma[j] / <double>std[j])
        c1[j] = <floating>(accb[j] / n)
        c2[j] = <floating>(accg[j] / n)
    for i in range(n):
        dr = dout + i * d
        xr = xn + i * d
        dxr = dx + i * d
        for j in range(d):
            dxr[j] = (dr[j] - (xr[j] * c2[j] + c1[j])) * a[j]
    free(acc)
    free(coef)
    return 0


cdef tuple _bn_args(x, gamma, beta, running_mean, running_var, bint writable_stats):
    """(x, gamma, beta, running_mean, running_var) checked: in C when usual."""
    cdef cnp.ndarray xa
    if _is_native(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2:
        xa = <cnp.ndarray>x
        if (_vec_like(gamma, xa, False) and _vec_like(beta, xa, False)
                and _vec_like(running_mean, xa, writable_stats)
                and _vec_like(running_var, xa, writable_stats)):
            return xa, gamma, beta, running_mean, running_var
    if writable_stats:
        xa, gamma, beta = _bn_inputs(x, gamma, beta, running_mean, running_var)
    else:
        xa, gamma, beta = _bn_inputs(x, gamma, beta, None, None)
        d = (<object>xa).shape[1:]
        running_mean = float_array("running_mean", running_mean, (<object>xa).dtype)
        running_var = float_array("running_var", running_var, (<object>xa).dtype)
        check_same_shape("running_mean", running_mean, "a row of x", d)
        check_same_shape("running_var", running_var, "a row of x", d)
    return xa, gamma, beta, running_mean, running_var


cdef inline bint _vec_like(object a, cnp.ndarray x, bint writable):
    """``a`` is a C-contiguous (D,) array of x's dtype, D = x.shape[1]."""
    if not isinstance(a, cnp.ndarray):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != cnp.PyArray_TYPE(x) or cnp.PyArray_NDIM(arr) != 1
            or cnp.PyArray_DIM(arr, 0) != cnp.PyArray_DIM(x, 1)):
        return False
    return cnp.PyArray_ISCARRAY(arr) if writable else cnp.PyArray_ISCARRAY_RO(arr)


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, out=None):
    """Batch normalization of the columns of ``x`` (N, D), training mode:
    ``(out, xn, std)``; updates the running statistics in place. See the NumPy twin."""
    xa_, g_, b_, rm_, rv_ = _bn_args(x, gamma, beta, running_mean, running_var, True)
    cdef cnp.ndarray xa = <cnp.ndarray>xa_
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef intp_t n = cnp.PyArray_DIM(xa, 0), d = cnp.PyArray_DIM(xa, 1)
    if n == 0:
        raise ValueError("x: empty batch (shape (0, D)): the batch statistics are undefined")
    cdef cnp.ndarray o = _result("out", out, 2, cnp.PyArray_DIMS(xa), typenum)
    cdef cnp.ndarray xn = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(xa), typenum, 0)
    cdef cnp.ndarray std = cnp.PyArray_EMPTY(1, &d, typenum, 0)
    cdef double mom = momentum, omm = 1 - mom, eps_ = eps
    cdef int status
    cdef void* px = _data(xa)
    cdef void* pg = _data(<cnp.ndarray>g_)
    cdef void* pb = _data(<cnp.ndarray>b_)
    cdef void* prm = _data(<cnp.ndarray>rm_)
    cdef void* prv = _data(<cnp.ndarray>rv_)
    cdef void* po = _data(o)
    cdef void* pxn = _data(xn)
    cdef void* ps = _data(std)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            status = _bn_fwd(<const double*>px, <const double*>pg, <const double*>pb,
                             <double*>prm, <double*>prv, mom, omm, eps_, <double*>po,
                             <double*>pxn, <double*>ps, n, d)
    else:
        with nogil:
            status = _bn_fwd(<const float*>px, <const float*>pg, <const float*>pb,
                             <float*>prm, <float*>prv, <float>mom, <float>omm,
                             <float>eps_, <float*>po, <float*>pxn, <float*>ps, n, d)
    if status != 0:
        raise MemoryError()
    return o, xn, std


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps, out=None):
    """Batch normalization with the running statistics (test mode):
    ``out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``."""
    xa_, g_, b_, rm_, rv_ = _bn_args(x, gamma, beta, running_mean, running_var, False)
    cdef cnp.ndarray xa = <cnp.ndarray>xa_
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef intp_t n = cnp.PyArray_DIM(xa, 0), d = cnp.PyArray_DIM(xa, 1)
    cdef cnp.ndarray o = _result("out", out, 2, cnp.PyArray_DIMS(xa), typenum)
    cdef double eps_ = eps
    cdef int status
    cdef void* px = _data(xa)
    cdef void* pg = _data(<cnp.ndarray>g_)
    cdef void* pb = _data(<cnp.ndarray>b_)
    cdef void* prm = _data(<cnp.ndarray>rm_)
    cdef void* prv = _data(<cnp.ndarray>rv_)
    cdef void* po = _data(o)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            status = _bn_infer(<const double*>px, <const double*>pg, <const double*>pb,
                               <const double*>prm, <const double*>prv, eps_,
                               <double*>po, n, d)
    else:
        with nogil:
            status = _bn_infer(<const float*>px, <const float*>pg, <const float*>pb,
                               <const float*>prm, <const float*>prv, <float>eps_,
                               <float*>po, n, d)
    if status != 0:
        raise MemoryError()
    return o


def batchnorm_backward(dout, xn, std, gamma, out=None):
    """Gradients of training-mode batch normalization: ``(dx, dgamma, dbeta)``;
    ``dx = gamma / std * (dout - (dbeta + xn * dgamma) / N)``. See the NumPy twin."""
    cdef cnp.ndarray d = _floats("dout", dout)
    if cnp.PyArray_NDIM(d) != 2:
        raise ValueError(f"dout: expected a 2-D array (batch, features), got shape {(<object>d).shape}")
    cdef int typenum = cnp.PyArray_TYPE(d)
    cdef cnp.ndarray xa, sa, ga
    if _like(xn, d, False):
        xa = <cnp.ndarray>xn
    else:
        xa = _floats_as("xn", xn, typenum)
        check_same_shape("xn", xa, "dout", (<object>d).shape)
    if _vec_like(std, d, False):
        sa = <cnp.ndarray>std
    else:
        sa = _floats_as("std", std, typenum)
        check_same_shape("std", sa, "a row of dout", (<object>d).shape[1:])
    if _vec_like(gamma, d, False):
        ga = <cnp.ndarray>gamma
    else:
        ga = _floats_as("gamma", gamma, typenum)
        check_same_shape("gamma", ga, "a row of dout", (<object>d).shape[1:])
    cdef intp_t n = cnp.PyArray_DIM(d, 0), m = cnp.PyArray_DIM(d, 1)
    cdef cnp.ndarray dx = _result("out", out, 2, cnp.PyArray_DIMS(d), typenum)
    cdef cnp.ndarray dgamma = cnp.PyArray_EMPTY(1, &m, typenum, 0)
    cdef cnp.ndarray dbeta = cnp.PyArray_EMPTY(1, &m, typenum, 0)
    cdef int status
    cdef void* pd = _data(d)
    cdef void* pxn = _data(xa)
    cdef void* ps = _data(sa)
    cdef void* pg = _data(ga)
    cdef void* pdx = _data(dx)
    cdef void* pdg = _data(dgamma)
    cdef void* pdb = _data(dbeta)
    if typenum == cnp.NPY_DOUBLE:
        with nogil:
            status = _bn_bwd(<const double*>pd, <const double*>pxn, <const double*>ps,
                             <const double*>pg, <double*>pdx, <double*>pdg,
                             <double*>pdb, n, m)
    else:
        with nogil:
            status = _bn_bwd(<const float*>pd, <const float*>pxn, <const float*>ps,
                             <const float*>pg, <float*>pdx, <float*>pdg,
                             <float*>pdb, n, m)
    if status != 0:
        raise MemoryError()
    return dx, dgamma, dbeta


__all__ += [
    "sgd_update",
    "momentum_update",
    "nesterov_update",
    "adagrad_update",
    "rmsprop_update",
    "adam_update",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_inference",
    "batchnorm_backward",
]
