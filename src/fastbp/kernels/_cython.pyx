"""Compiled twins of the reference kernels in ``_numpy.py``.

Same names, signatures and semantics; read the contract in ``_numpy.py``.

Design:
- Entry points take plain ndarrays and read their data pointers through NumPy's C API.
  Acquiring a typed memoryview argument costs a sizeable share of a whole kernel at the
  book's batch of 100 (docs/benchmarks.md).
- The fast path (a C-contiguous, aligned float32/float64 ndarray) is checked in C;
  anything else goes through ``_checks.py``, the code the NumPy twin uses, so both
  backends convert and refuse identically and give the same messages.
- Every kernel has one shape: boundary check -> a ``Job`` (pointers, sizes,
  hyperparameters) -> ``_run`` (one thread, or whole grains per OpenMP thread) -> a
  range function here that picks the dtype's loop -> the loop in ``_loops.h``: one C
  body for float and double, written so the compiler vectorises it, built for each SIMD
  level, run with the GIL released. This module owns the boundary; ``_loops.h`` owns
  every loop.
- ``out=`` (and every array a kernel writes) follows the overlap rule of
  ``_checks.apart``: a bounds test in C here, the shared function on any overlap.
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
from libc.stdint cimport intptr_t

from fastbp.kernels._pool cimport num_threads as pool_threads, run_blocks

from . import _blas, _pool
from ._checks import (
    KERNELS,
    affine_forward_inputs,
    affine_sgd_inputs,
    affine_shapes as _affine_shapes,
    apart,
    arg_max_array,
    arg_max_range_error,
    image_shape,
    input_shape_arg,
    pool_window,
    window,
    bn_inputs,
    check_out,
    check_same_shape,
    common_dtype,
    float_array,
    mask_array,
    param_inputs,
    real_scalar,
    softmax_inputs,
)

cnp.import_array()

__all__ = list(KERNELS)

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
    void colsum_ld_f32(const float*, intp_t, double*, intp_t, intp_t)
    void colsum_ld_f64(const double*, intp_t, double*, intp_t, intp_t)
    void softmax_ce_rows_f32(const float*, float*, const intp_t*, const float*, double*,
                             intp_t, intp_t, exp_t)
    void softmax_ce_rows_f64(const double*, double*, const intp_t*, const double*, double*,
                             intp_t, intp_t, exp_t)
    void sce_grad_labels_f32(const float*, const intp_t*, float*, intp_t, intp_t, float)
    void sce_grad_labels_f64(const double*, const intp_t*, double*, intp_t, intp_t, double)
    void sce_grad_targets_f32(const float*, const float*, float*, intp_t, float)
    void sce_grad_targets_f64(const double*, const double*, double*, intp_t, double)
    bint labels_in_range(const intp_t*, intp_t, intp_t)
    ctypedef struct Window "fastbp_window":
        intp_t c, h, w, fh, fw, stride, pad, oh, ow
    void im2col_f32(const float*, float*, const Window*, intp_t, intp_t)
    void im2col_f64(const double*, double*, const Window*, intp_t, intp_t)
    void col2im_f32(const float*, float*, const Window*, intp_t, intp_t)
    void col2im_f64(const double*, double*, const Window*, intp_t, intp_t)
    void maxpool_fwd_f32(const float*, float*, intp_t*, const Window*, intp_t, intp_t)
    void maxpool_fwd_f64(const double*, double*, intp_t*, const Window*, intp_t, intp_t)
    void maxpool_bwd_f32(const float*, const intp_t*, float*, const Window*, intp_t, intp_t)
    void maxpool_bwd_f64(const double*, const intp_t*, double*, const Window*, intp_t, intp_t)
    void conv_bias_grad_f32(const float*, float*, intp_t, intp_t, intp_t, intp_t, intp_t)
    void conv_bias_grad_f64(const double*, double*, intp_t, intp_t, intp_t, intp_t, intp_t)
    const char* simd_level()
    # chapter 6
    void sgd_f32(float*, const float*, float, intp_t)
    void sgd_f64(double*, const double*, double, intp_t)
    void momentum_f32(float*, const float*, float*, float, float, intp_t)
    void momentum_f64(double*, const double*, double*, double, double, intp_t)
    void nesterov_f32(float*, const float*, float*, float, float, float, float, intp_t)
    void nesterov_f64(double*, const double*, double*, double, double, double, double, intp_t)
    void adagrad_f32(float*, const float*, float*, float, float, intp_t)
    void adagrad_f64(double*, const double*, double*, double, double, intp_t)
    void rmsprop_f32(float*, const float*, float*, float, float, float, float, intp_t)
    void rmsprop_f64(double*, const double*, double*, double, double, double, double, intp_t)
    void adam_f32(float*, const float*, float*, float*, float, float, float, float, intp_t)
    void adam_f64(double*, const double*, double*, double*, double, double, double, double, intp_t)
    void dropout_fwd_f32(const float*, const float*, float, float, float*, unsigned char*, intp_t)
    void dropout_fwd_f64(const double*, const double*, double, double, double*, unsigned char*, intp_t)
    void dropout_bwd_f32(const float*, const unsigned char*, float, float*, intp_t)
    void dropout_bwd_f64(const double*, const unsigned char*, double, double*, intp_t)
    void bn_fwd_f32(const float*, const float*, const float*, float*, float*, float, float, float,
                    float*, float*, float*, double*, float*, float*, intp_t, intp_t, intp_t)
    void bn_fwd_f64(const double*, const double*, const double*, double*, double*, double, double,
                    double, double*, double*, double*, double*, double*, double*, intp_t, intp_t,
                    intp_t)
    void bn_infer_f32(const float*, const float*, const float*, const float*, const float*, float,
                      float*, float*, intp_t, intp_t, intp_t)
    void bn_infer_f64(const double*, const double*, const double*, const double*, const double*,
                      double, double*, double*, intp_t, intp_t, intp_t)
    void bn_bwd_f32(const float*, const float*, const float*, const float*, float*, float*, float*,
                    double*, float*, intp_t, intp_t, intp_t)
    void bn_bwd_f64(const double*, const double*, const double*, const double*, double*, double*,
                    double*, double*, double*, intp_t, intp_t, intp_t)

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


cdef inline bint _meets(object a, object b):
    """The memory of two C-contiguous arrays (None: no array) intersects: the bounds
    test of ``np.may_share_memory``, exact for such arrays, in C."""
    if a is None or b is None:
        return False
    cdef char* pa = <char*>cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef char* pb = <char*>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef intp_t na = cnp.PyArray_NBYTES(<cnp.ndarray>a), nb = cnp.PyArray_NBYTES(<cnp.ndarray>b)
    return na > 0 and nb > 0 and pa < pb + nb and pb < pa + na


cdef cnp.ndarray _apart(cnp.ndarray a, cnp.ndarray o, bint same_ok, str aname="an input",
                       str oname="out"):
    """The overlap rule (``_checks.apart``) for output ``o`` and input ``a`` (named
    ``oname`` and ``aname`` in the message, as the NumPy twin names them): ``a`` when
    they are apart, or when ``o`` is exactly ``a`` and the loop reads element i before
    it writes element i (``same_ok``); a copy of ``a`` when ``o`` is exactly ``a`` but
    the loop reads ``a`` after writing ``o`` (a row loop, the softmax's loss); the
    shared ValueError for any other overlap."""
    if not _meets(o, a):
        return a
    apart([(oname, o)], [(aname, a)])  # raises unless exactly the same array
    return a if same_ok else a.copy()


cdef inline double _real(str name, object value) except? -1.0:
    """A hyperparameter as a double: a Python float as it is, the rest checked by
    ``_checks.real_scalar`` (the NumPy twin's check)."""
    if type(value) is float:
        return <double>value
    return real_scalar(name, value)


# --------------------------------------------------------------------------- threads
#
# Work on large arrays is cut into blocks that fastbp's pool (_pool.h) runs: the calling
# thread starts at once and helpers take blocks as they come, so a helper the scheduler
# does not run costs nothing. A job costs a few microseconds to hand out, and
# memory-bound loops gain only when the arrays outgrow the caches, so they split from
# PARALLEL_MIN elements; loops around exp are compute-bound and split from
# EXP_PARALLEL_MIN. Results do not depend on the blocks or the thread count: elementwise
# work is independent, column kernels own whole columns, and the softmax writes one
# loss per row, summed in row order afterwards.

cdef intp_t PARALLEL_MIN = 1 << 20
cdef intp_t EXP_PARALLEL_MIN = 1 << 15
cdef intp_t MAX_BLOCKS = 64

#: Whether the kernels can run on several threads (fastbp's pool; the name is from
#: when OpenMP ran them).
HAVE_OPENMP = HAVE_THREADS = _pool.HAVE_THREADS
#: The build of the inner loops that runs on this CPU: "avx512f", "avx2" or "baseline".
SIMD = simd_level().decode()


def _default_threads():
    """``FASTBP_NUM_THREADS`` when it is a positive whole number, else (with a warning
    naming the variable when it is set to something else) the CPU count, at most 8."""
    default = min(os.cpu_count() or 1, 8) if HAVE_THREADS else 1
    env = os.environ.get("FASTBP_NUM_THREADS", "").strip()
    if not env:
        return default
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        warnings.warn(f"FASTBP_NUM_THREADS: expected a positive whole number of threads, "
                      f"got {env!r}; using {default}", RuntimeWarning, stacklevel=2)
        return default
    return n if HAVE_THREADS else 1


def set_num_threads(n):
    """Threads the compiled kernels may use on large arrays (1 turns threading off;
    without threads in the build the kernels run on one thread whatever ``n``)."""
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"n: expected a positive number of threads, got {n}")
    _pool.set_num_threads(n if HAVE_THREADS else 1)


def get_num_threads():
    """Threads the compiled kernels use on large arrays."""
    return _pool.get_num_threads()


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
    intp_t c               # columns (row and column kernels)
    double scale
    const char* in3        # third to fifth inputs (chapter 6)
    const char* in4
    const char* in5
    char* out2             # second and third outputs (batch norm)
    char* out3
    char* s1               # state updated in place: optimizer buffers, running statistics
    char* s2
    double* work           # per-column double scratch, split like the columns
    intp_t rows            # rows (column kernels: their ranges are columns)
    double hp[4]           # hyperparameters, rounded to the element type by the loop call
    const Window* win      # image and window geometry (convolution, pooling)
    intp_t* index          # an index output (the pooling argmax)

ctypedef void (*range_fn)(const Job*, intp_t, intp_t) noexcept nogil


ctypedef struct Split:
    range_fn fn
    const Job* job
    intp_t n, step


cdef void _split_block(void* ctx, intptr_t i, int worker) noexcept nogil:
    cdef const Split* s = <const Split*>ctx
    cdef intp_t start = i * s.step
    if start < s.n:
        s.fn(s.job, start, min(s.n, start + s.step))


cdef void _run(range_fn fn, const Job* job, intp_t n, intp_t grain, intp_t elements,
               intp_t min_elements) noexcept nogil:
    """``fn(job, start, stop)`` over [0, n): on the calling thread, or, when the work
    touches at least ``min_elements`` elements, in blocks of whole grains (about a
    quarter of ``min_elements`` each, at most MAX_BLOCKS) on fastbp's pool."""
    cdef Split s
    cdef intp_t blocks = 1
    if elements >= min_elements:
        blocks = min(min((n + grain - 1) // grain, elements // (min_elements // 4)), MAX_BLOCKS)
    if blocks <= 1 or pool_threads() <= 1:
        fn(job, 0, n)
        return
    s.fn, s.job, s.n = fn, job, n
    s.step = ((n + blocks - 1) // blocks + grain - 1) // grain * grain
    run_blocks(_split_block, &s, (n + s.step - 1) // s.step, 0)


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
    xa = _apart(xa, o, True, "x")
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
    d = _apart(d, o, True, "dout")
    ma = _apart(ma, o, True, "mask")  # a bool mask is never exactly out
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
    # the last pass reads x's sign after exp(-|x|) has filled out: exactly x is copied
    xa = _apart(xa, o, False, "x")
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
    d = _apart(d, o, True, "dout")
    ya = _apart(ya, o, True, "y")
    cdef Job job
    job.f64, job.a, job.b, job.out = _is_f64(d), _cdata(d), _cdata(ya), <char*>_data(o)
    cdef intp_t n = cnp.PyArray_SIZE(d)
    with nogil:
        _run(_sigmoid_bwd_job, &job, n, 4096, n, PARALLEL_MIN)
    return o


# --------------------------------------------------------------------------- Affine

cdef void _colsum_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    """Columns [a, b) of the column sums of the (rows, c) input ``j.a``: into ``j.work``
    (double; ``out`` itself for float64), rounded into ``j.out`` for float32."""
    cdef intp_t k
    cdef double* acc = j.work + a
    for k in range(b - a):
        acc[k] = 0
    if j.f64:
        colsum_ld_f64(<const double*>j.a + a, j.c, acc, j.rows, b - a)
    else:
        colsum_ld_f32(<const float*>j.a + a, j.c, acc, j.rows, b - a)
        for k in range(b - a):
            (<float*>j.out)[a + k] = <float>acc[k]


def bias_grad(dout, out=None):
    """Column sums of a 2-D ``dout`` (N, M): the bias gradient ``db`` (M,)."""
    cdef cnp.ndarray d = _floats("dout", dout)
    if cnp.PyArray_NDIM(d) != 2:
        raise ValueError(f"dout: expected a 2-D array (batch, features), got shape {(<object>d).shape}")
    cdef int typenum = cnp.PyArray_TYPE(d)
    cdef intp_t n = cnp.PyArray_DIM(d, 0), m = cnp.PyArray_DIM(d, 1)
    cdef cnp.ndarray o = _result("out", out, 1, &m, typenum)
    d = _apart(d, o, True, "dout")  # a (M,) out is never exactly the (N, M) dout
    # float64 sums run in ``out`` itself; float32 ones in a double scratch
    cdef cnp.ndarray acc = o if typenum == cnp.NPY_DOUBLE else cnp.PyArray_EMPTY(1, &m, cnp.NPY_DOUBLE, 0)
    cdef Job job
    job.f64, job.a, job.out, job.c, job.rows = _is_f64(d), _cdata(d), <char*>_data(o), m, n
    job.work = <double*>_data(acc)
    with nogil:  # threads split the columns: each column keeps its one order
        _run(_colsum_job, &job, m, 64, n * m, PARALLEL_MIN)
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
    if dW_out is not None:
        _result("dW_out", dW_out, 2, cnp.PyArray_DIMS(Wa), cnp.PyArray_TYPE(Wa))
    if db_out is not None:
        _result("db_out", db_out, 1, cnp.PyArray_DIMS(Wa) + 1, cnp.PyArray_TYPE(Wa))
    if (_meets(dW_out, db_out) or _meets(dW_out, d) or _meets(dW_out, xa)
            or _meets(dW_out, Wa) or _meets(db_out, d) or _meets(db_out, xa)
            or _meets(db_out, Wa)):
        # an input that is exactly dW_out is read whole by the products: copy it first
        same = apart([("dW_out", dW_out), ("db_out", db_out)], [("dout", d), ("x", xa), ("W", Wa)])
        d = d.copy() if "dout" in same else d
        xa = xa.copy() if "x" in same else xa
        Wa = Wa.copy() if "W" in same else Wa
    db = bias_grad(d, out=db_out)
    cdef intp_t dx_shape[2]
    dx_shape[0], dx_shape[1] = cnp.PyArray_DIM(xa, 0), cnp.PyArray_DIM(xa, 1)
    dx = None
    if need_dx:
        dx = _blas.gemm(d, Wa, cnp.PyArray_EMPTY(2, dx_shape, cnp.PyArray_TYPE(Wa), 0),
                        trans_b=True)
    dW = dW_out if dW_out is not None else cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(Wa),
                                                             cnp.PyArray_TYPE(Wa), 0)
    _blas.gemm(xa, d, dW, trans_a=True)
    return dx, dW, db


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
    gradient's product (one GEMM, ``beta = 1 - lr * decay``): returns ``dx`` (with the old
    ``W``), sets ``W = (1 - lr * decay) * W - lr * x.T @ dout``, ``b -= lr * bias_grad(dout)``."""
    d, xa, Wa, ba, lr_, decay_ = affine_sgd_inputs(dout, x, W, b, lr, decay)
    dx = _blas.gemm(d, Wa, np.empty((xa.shape[0], xa.shape[1]), Wa.dtype), trans_b=True) if need_dx else None
    beta = 1.0 - lr_ * decay_
    if Wa.dtype.type(beta) and Wa.dtype.type(lr_):
        _blas.gemm(xa, d, Wa, trans_a=True, alpha=-lr_, beta=beta)
    else:  # BLAS reads no W when beta is 0 (nor the product when alpha is 0): 0 * inf is NaN
        dW = _blas.gemm(xa, d, np.empty_like(Wa), trans_a=True)
        sgd_update(np.multiply(Wa, beta, out=Wa), dW, lr_)  # as the NumPy twin does
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
    # a copy (aligned, as the loops read it); uint64 beyond intp goes negative: refused
    return np.array(ta, dtype=np.intp, order="C")


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
    xc = _apart(xc, y, False, "x")  # the loss reads x after y is written
    if labels is not None:  # and the labels or the targets too
        labels = _apart(<cnp.ndarray>labels, y, False, "t")
    else:
        onehot = _apart(<cnp.ndarray>onehot, y, False, "t")
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
    yc = _apart(yc, o, True, "y")
    if labels is not None:  # labels[i] is read after earlier rows are written
        labels = _apart(<cnp.ndarray>labels, o, False, "t")
    else:
        onehot = _apart(<cnp.ndarray>onehot, o, True, "t")
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
# of ``_numpy.py`` (read the contract there), in the same shape as the kernels above.
# The optimizer loops are one fused pass over each parameter and its state, in the
# book's order of operations and in the parameter's own precision (hyperparameters
# rounded to it once), so they give the NumPy twin's results bit for bit; they allocate
# nothing. Batch normalization walks the rows of the C-ordered (N, D) input, its column
# sums in double scratch, and splits the columns over threads.

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
    """Checked ``grad`` of an in-place update (in ``param``'s dtype): the checks of
    ``_checks.param_inputs`` run in C for the usual case (arrays of one shape and dtype,
    apart from each other), through it otherwise (which also copies a ``grad`` that is
    exactly ``param`` or a state buffer; the loops would not need it)."""
    cdef cnp.ndarray p
    if _is_writable_float(param):
        p = <cnp.ndarray>param
        if (_like(grad, p, False) and (n1 is None or _like(s1, p, True))
                and (n2 is None or _like(s2, p, True))
                and not (_meets(p, grad) or _meets(p, s1) or _meets(p, s2) or _meets(s1, s2)
                         or _meets(s1, grad) or _meets(s2, grad))):
            return <cnp.ndarray>grad
    state = []
    if n1 is not None:
        state.append((n1, s1))
    if n2 is not None:
        state.append((n2, s2))
    return param_inputs(param, grad, *state)


cdef Job _opt_job(object param, cnp.ndarray g, object s1, object s2):
    cdef Job job
    cdef cnp.ndarray p = <cnp.ndarray>param
    job.f64, job.out, job.a = _is_f64(p), <char*>_data(p), _cdata(g)
    job.s1 = <char*>_cdata(s1)
    job.s2 = <char*>_cdata(s2)
    return job


# --------------------------------------------------------------------------- optimizers

cdef void _sgd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        sgd_f64(<double*>j.out + a, <const double*>j.a + a, j.hp[0], b - a)
    else:
        sgd_f32(<float*>j.out + a, <const float*>j.a + a, <float>j.hp[0], b - a)


cdef void _momentum_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        momentum_f64(<double*>j.out + a, <const double*>j.a + a, <double*>j.s1 + a,
                     j.hp[0], j.hp[1], b - a)
    else:
        momentum_f32(<float*>j.out + a, <const float*>j.a + a, <float*>j.s1 + a,
                     <float>j.hp[0], <float>j.hp[1], b - a)


cdef void _nesterov_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        nesterov_f64(<double*>j.out + a, <const double*>j.a + a, <double*>j.s1 + a,
                     j.hp[0], j.hp[1], j.hp[2], j.hp[3], b - a)
    else:
        nesterov_f32(<float*>j.out + a, <const float*>j.a + a, <float*>j.s1 + a,
                     <float>j.hp[0], <float>j.hp[1], <float>j.hp[2], <float>j.hp[3], b - a)


cdef void _adagrad_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        adagrad_f64(<double*>j.out + a, <const double*>j.a + a, <double*>j.s1 + a,
                    j.hp[0], j.hp[1], b - a)
    else:
        adagrad_f32(<float*>j.out + a, <const float*>j.a + a, <float*>j.s1 + a,
                    <float>j.hp[0], <float>j.hp[1], b - a)


cdef void _rmsprop_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        rmsprop_f64(<double*>j.out + a, <const double*>j.a + a, <double*>j.s1 + a,
                    j.hp[0], j.hp[1], j.hp[2], j.hp[3], b - a)
    else:
        rmsprop_f32(<float*>j.out + a, <const float*>j.a + a, <float*>j.s1 + a,
                    <float>j.hp[0], <float>j.hp[1], <float>j.hp[2], <float>j.hp[3], b - a)


cdef void _adam_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        adam_f64(<double*>j.out + a, <const double*>j.a + a, <double*>j.s1 + a,
                 <double*>j.s2 + a, j.hp[0], j.hp[1], j.hp[2], j.hp[3], b - a)
    else:
        adam_f32(<float*>j.out + a, <const float*>j.a + a, <float*>j.s1 + a,
                 <float*>j.s2 + a, <float>j.hp[0], <float>j.hp[1], <float>j.hp[2],
                 <float>j.hp[3], b - a)


# Memory-bound like ReLU: split from PARALLEL_MIN elements only.
cdef inline void _run_update(range_fn fn, const Job* job, intp_t n) noexcept nogil:
    _run(fn, job, n, 4096, n, PARALLEL_MIN)


def sgd_update(param, grad, lr):
    """SGD in place: ``param -= lr * grad``. Returns ``param``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, None, None, None, None)
    cdef Job job = _opt_job(param, g, None, None)
    job.hp[0] = _real("lr", lr)
    cdef intp_t n = cnp.PyArray_SIZE(g)
    with nogil:
        _run_update(_sgd_job, &job, n)
    return param


def momentum_update(param, grad, v, lr, momentum):
    """Momentum SGD in place: ``v = momentum * v - lr * grad; param += v``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, v, "v", None, None)
    cdef Job job = _opt_job(param, g, v, None)
    job.hp[0], job.hp[1] = _real("lr", lr), _real("momentum", momentum)
    cdef intp_t n = cnp.PyArray_SIZE(g)
    with nogil:
        _run_update(_momentum_job, &job, n)
    return param


def nesterov_update(param, grad, v, lr, momentum):
    """Nesterov's accelerated gradient in place (Bengio et al. 2012, arXiv:1212.0901,
    eq. 7; the book's fixed form): ``param += momentum**2 * v;
    param -= (1 + momentum) * lr * grad; v = momentum * v - lr * grad``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, v, "v", None, None)
    cdef Job job = _opt_job(param, g, v, None)
    cdef double lr_ = _real("lr", lr), mom = _real("momentum", momentum)
    # momentum**2 and (1 + momentum) * lr in double, rounded once, as NumPy does
    job.hp[0], job.hp[1], job.hp[2], job.hp[3] = lr_, mom, mom * mom, (1 + mom) * lr_
    cdef intp_t n = cnp.PyArray_SIZE(g)
    with nogil:
        _run_update(_nesterov_job, &job, n)
    return param


def adagrad_update(param, grad, h, lr, eps):
    """AdaGrad in place: ``h += grad * grad; param -= lr * grad / (sqrt(h) + eps)``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, h, "h", None, None)
    cdef Job job = _opt_job(param, g, h, None)
    job.hp[0], job.hp[1] = _real("lr", lr), _real("eps", eps)
    cdef intp_t n = cnp.PyArray_SIZE(g)
    with nogil:
        _run_update(_adagrad_job, &job, n)
    return param


def rmsprop_update(param, grad, h, lr, decay_rate, eps):
    """RMSprop in place: ``h = decay_rate * h + (1 - decay_rate) * grad * grad;
    param -= lr * grad / (sqrt(h) + eps)``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, h, "h", None, None)
    cdef Job job = _opt_job(param, g, h, None)
    cdef double lr_ = _real("lr", lr), d = _real("decay_rate", decay_rate)
    job.hp[0], job.hp[1], job.hp[2], job.hp[3] = lr_, d, 1 - d, _real("eps", eps)
    cdef intp_t n = cnp.PyArray_SIZE(g)
    with nogil:
        _run_update(_rmsprop_job, &job, n)
    return param


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """Adam in place, the book's form: ``m += (1 - beta1) * (grad - m);
    v += (1 - beta2) * (grad**2 - v); param -= lr_t * m / (sqrt(v) + eps)``."""
    cdef cnp.ndarray g = _opt_grad(param, grad, m, "m", v, "v")
    cdef Job job = _opt_job(param, g, m, v)
    cdef double lr_ = _real("lr_t", lr_t), b1 = _real("beta1", beta1)
    cdef double b2 = _real("beta2", beta2)
    job.hp[0], job.hp[1], job.hp[2], job.hp[3] = lr_, 1 - b1, 1 - b2, _real("eps", eps)
    cdef intp_t n = cnp.PyArray_SIZE(g)
    with nogil:
        _run_update(_adam_job, &job, n)
    return param


# --------------------------------------------------------------------------- Dropout

cdef void _dropout_fwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        dropout_fwd_f64(<const double*>j.a + a, <const double*>j.b + a, j.hp[0], j.scale,
                        <double*>j.out + a, j.mask + a, b - a)
    else:
        dropout_fwd_f32(<const float*>j.a + a, <const float*>j.b + a, <float>j.hp[0],
                        <float>j.scale, <float*>j.out + a, j.mask + a, b - a)


cdef void _dropout_bwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    cdef const unsigned char* m = <const unsigned char*>j.b + a
    if j.f64:
        dropout_bwd_f64(<const double*>j.a + a, m, j.scale, <double*>j.out + a, b - a)
    else:
        dropout_bwd_f32(<const float*>j.a + a, m, <float>j.scale, <float*>j.out + a, b - a)


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
    xa = _apart(xa, o, True, "x")
    ua = _apart(ua, o, True, "u")  # the mask is taken before out is written
    cdef Job job
    job.hp[0], job.scale = _real("ratio", ratio), _real("scale", scale)
    cdef cnp.ndarray mask = cnp.PyArray_EMPTY(nd, shape, cnp.NPY_BOOL, 0)
    job.f64, job.a, job.b, job.out = _is_f64(xa), _cdata(xa), _cdata(ua), <char*>_data(o)
    job.mask = <unsigned char*>_data(mask)
    cdef intp_t n = cnp.PyArray_SIZE(xa)
    with nogil:
        _run(_dropout_fwd_job, &job, n, 4096, n, PARALLEL_MIN)
    return o, mask


def dropout_backward(dout, mask, scale, out=None):
    """Dropout gradient: ``dout * (mask * scale)``."""
    cdef cnp.ndarray d = _floats("dout", dout)
    cdef int nd = cnp.PyArray_NDIM(d)
    cdef cnp.ndarray ma
    if (isinstance(mask, cnp.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray>mask) == cnp.NPY_BOOL
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>mask)
            and cnp.PyArray_SAMESHAPE(<cnp.ndarray>mask, d)):
        ma = <cnp.ndarray>mask
    else:
        ma = mask_array("mask", mask, (<object>d).shape)
    cdef cnp.ndarray o = _result("out", out, nd, cnp.PyArray_DIMS(d), cnp.PyArray_TYPE(d))
    d = _apart(d, o, True, "dout")
    ma = _apart(ma, o, True, "mask")  # a bool mask is never exactly out
    cdef Job job
    job.scale = _real("scale", scale)
    job.f64, job.a, job.b, job.out = _is_f64(d), _cdata(d), _cdata(ma), <char*>_data(o)
    cdef intp_t n = cnp.PyArray_SIZE(d)
    with nogil:
        _run(_dropout_bwd_job, &job, n, 4096, n, PARALLEL_MIN)
    return o


# --------------------------------------------------------------------------- BatchNorm
#
# The range functions get columns [a, b) of the (rows, c) arrays; ``work`` holds the
# per-column scratch, laid out so that disjoint column ranges use disjoint parts.

cdef void _bn_fwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    # work: acc (c doubles), then mu and var (c elements each, in c doubles apiece)
    cdef intp_t c = j.c
    if j.f64:
        bn_fwd_f64(<const double*>j.a + a, <const double*>j.b + a, <const double*>j.in3 + a,
                   <double*>j.s1 + a, <double*>j.s2 + a, j.hp[0], j.hp[1], j.hp[2],
                   <double*>j.out + a, <double*>j.out2 + a, <double*>j.out3 + a,
                   j.work + a, <double*>(j.work + c) + a, <double*>(j.work + 2 * c) + a,
                   j.rows, c, b - a)
    else:
        bn_fwd_f32(<const float*>j.a + a, <const float*>j.b + a, <const float*>j.in3 + a,
                   <float*>j.s1 + a, <float*>j.s2 + a, <float>j.hp[0], <float>j.hp[1],
                   <float>j.hp[2], <float*>j.out + a, <float*>j.out2 + a,
                   <float*>j.out3 + a, j.work + a, <float*>(j.work + c) + a,
                   <float*>(j.work + 2 * c) + a, j.rows, c, b - a)


cdef void _bn_infer_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    # work: std (c elements)
    if j.f64:
        bn_infer_f64(<const double*>j.a + a, <const double*>j.b + a, <const double*>j.in3 + a,
                     <const double*>j.in4 + a, <const double*>j.in5 + a, j.hp[0],
                     <double*>j.out + a, <double*>j.work + a, j.rows, j.c, b - a)
    else:
        bn_infer_f32(<const float*>j.a + a, <const float*>j.b + a, <const float*>j.in3 + a,
                     <const float*>j.in4 + a, <const float*>j.in5 + a, <float>j.hp[0],
                     <float*>j.out + a, <float*>j.work + a, j.rows, j.c, b - a)


cdef void _bn_bwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    # work: acc (2 doubles a column), then coef (3 elements a column)
    cdef intp_t c = j.c
    if j.f64:
        bn_bwd_f64(<const double*>j.a + a, <const double*>j.b + a, <const double*>j.in3 + a,
                   <const double*>j.in4 + a, <double*>j.out + a, <double*>j.out2 + a,
                   <double*>j.out3 + a, j.work + 2 * a, <double*>(j.work + 2 * c) + 3 * a,
                   j.rows, c, b - a)
    else:
        bn_bwd_f32(<const float*>j.a + a, <const float*>j.b + a, <const float*>j.in3 + a,
                   <const float*>j.in4 + a, <float*>j.out + a, <float*>j.out2 + a,
                   <float*>j.out3 + a, j.work + 2 * a, <float*>(j.work + 2 * c) + 3 * a,
                   j.rows, c, b - a)


cdef inline bint _vec_like(object a, cnp.ndarray x, bint writable):
    """``a`` is a C-contiguous (D,) array of x's dtype, D = x.shape[1]."""
    if not isinstance(a, cnp.ndarray):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != cnp.PyArray_TYPE(x) or cnp.PyArray_NDIM(arr) != 1
            or cnp.PyArray_DIM(arr, 0) != cnp.PyArray_DIM(x, 1)):
        return False
    return cnp.PyArray_ISCARRAY(arr) if writable else cnp.PyArray_ISCARRAY_RO(arr)


cdef tuple _bn_args(x, gamma, beta, running_mean, running_var, bint training):
    """(x, gamma, beta, running_mean, running_var) as ``_checks.bn_inputs`` gives them,
    checked in C when usual."""
    cdef cnp.ndarray xa
    if _is_native(x) and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2:
        xa = <cnp.ndarray>x
        if (_vec_like(gamma, xa, False) and _vec_like(beta, xa, False)
                and _vec_like(running_mean, xa, training)
                and _vec_like(running_var, xa, training)):
            return xa, gamma, beta, running_mean, running_var
    return bn_inputs(x, gamma, beta, running_mean, running_var, training)


cdef inline cnp.ndarray _work(intp_t n):
    return cnp.PyArray_EMPTY(1, &n, cnp.NPY_DOUBLE, 0)


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
    if (_meets(o, rm_) or _meets(o, rv_) or _meets(rm_, rv_) or _meets(o, xa) or _meets(o, g_)
            or _meets(o, b_) or _meets(rm_, xa) or _meets(rm_, g_) or _meets(rm_, b_)
            or _meets(rv_, xa) or _meets(rv_, g_) or _meets(rv_, b_)):
        # exactly x as out, gamma or beta as a running statistic: the loop reads them first
        apart([("out", o), ("running_mean", rm_), ("running_var", rv_)],
              [("x", xa), ("gamma", g_), ("beta", b_)])
    cdef Job job
    cdef double mom = _real("momentum", momentum)
    job.hp[0], job.hp[1], job.hp[2] = mom, 1 - mom, _real("eps", eps)
    cdef cnp.ndarray xn = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(xa), typenum, 0)
    cdef cnp.ndarray std = cnp.PyArray_EMPTY(1, &d, typenum, 0)
    cdef cnp.ndarray work = _work(3 * d)
    job.f64, job.a, job.b, job.in3 = _is_f64(xa), _cdata(xa), _cdata(g_), _cdata(b_)
    job.s1, job.s2 = <char*>_data(<cnp.ndarray>rm_), <char*>_data(<cnp.ndarray>rv_)
    job.out, job.out2, job.out3 = <char*>_data(o), <char*>_data(xn), <char*>_data(std)
    job.work, job.rows, job.c = <double*>_data(work), n, d
    with nogil:  # threads split the columns: every column sum keeps its order
        _run(_bn_fwd_job, &job, d, 64, n * d, PARALLEL_MIN)
    return o, xn, std


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps, out=None):
    """Batch normalization with the running statistics (test mode):
    ``out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``."""
    xa_, g_, b_, rm_, rv_ = _bn_args(x, gamma, beta, running_mean, running_var, False)
    cdef cnp.ndarray xa = <cnp.ndarray>xa_
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef intp_t n = cnp.PyArray_DIM(xa, 0), d = cnp.PyArray_DIM(xa, 1)
    cdef cnp.ndarray o = _result("out", out, 2, cnp.PyArray_DIMS(xa), typenum)
    if (_meets(o, xa) or _meets(o, g_) or _meets(o, b_) or _meets(o, rm_)
            or _meets(o, rv_)):
        apart([("out", o)], [("x", xa), ("gamma", g_), ("beta", b_),
                             ("running_mean", rm_), ("running_var", rv_)])
    cdef Job job
    job.hp[0] = _real("eps", eps)
    cdef cnp.ndarray work = _work(d)
    job.f64, job.a, job.b, job.in3 = _is_f64(xa), _cdata(xa), _cdata(g_), _cdata(b_)
    job.in4, job.in5, job.out = _cdata(rm_), _cdata(rv_), <char*>_data(o)
    job.work, job.rows, job.c = <double*>_data(work), n, d
    with nogil:
        _run(_bn_infer_job, &job, d, 64, n * d, PARALLEL_MIN)
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
    # exactly dout or xn is fine: the sums come first, and the last pass reads element
    # (i, j) of both before it writes it
    d = _apart(d, dx, True, "dout")
    xa = _apart(xa, dx, True, "xn")
    sa = _apart(sa, dx, True, "std")
    ga = _apart(ga, dx, True, "gamma")
    cdef cnp.ndarray dgamma = cnp.PyArray_EMPTY(1, &m, typenum, 0)
    cdef cnp.ndarray dbeta = cnp.PyArray_EMPTY(1, &m, typenum, 0)
    cdef cnp.ndarray work = _work(5 * m)
    cdef Job job
    job.f64, job.a, job.b, job.in3, job.in4 = _is_f64(d), _cdata(d), _cdata(xa), _cdata(sa), _cdata(ga)
    job.out, job.out2, job.out3 = <char*>_data(dx), <char*>_data(dgamma), <char*>_data(dbeta)
    job.work, job.rows, job.c = <double*>_data(work), n, m
    with nogil:
        _run(_bn_bwd_job, &job, m, 64, n * m, PARALLEL_MIN)
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- chapter 7
# Convolution and pooling windows (the contract is in the NumPy twin). The geometry is
# checked in Python (_checks.py, shared with the twin): a few microseconds against loops
# over a whole batch of images. The batch is split over threads, whole images per
# thread, once the arrays outgrow the caches (PARALLEL_MIN elements).

cdef Window _window(intp_t n, intp_t c, intp_t h, intp_t w, intp_t fh, intp_t fw,
                    intp_t s, intp_t p, intp_t oh, intp_t ow):
    cdef Window g
    g.c, g.h, g.w, g.fh, g.fw, g.stride, g.pad, g.oh, g.ow = c, h, w, fh, fw, s, p, oh, ow
    return g


cdef void _im2col_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        im2col_f64(<const double*>j.a, <double*>j.out, j.win, a, b)
    else:
        im2col_f32(<const float*>j.a, <float*>j.out, j.win, a, b)


cdef void _col2im_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        col2im_f64(<const double*>j.a, <double*>j.out, j.win, a, b)
    else:
        col2im_f32(<const float*>j.a, <float*>j.out, j.win, a, b)


cdef void _maxpool_fwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        maxpool_fwd_f64(<const double*>j.a, <double*>j.out, j.index, j.win, a, b)
    else:
        maxpool_fwd_f32(<const float*>j.a, <float*>j.out, j.index, j.win, a, b)


cdef void _maxpool_bwd_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    if j.f64:
        maxpool_bwd_f64(<const double*>j.a, j.labels, <double*>j.out, j.win, a, b)
    else:
        maxpool_bwd_f32(<const float*>j.a, j.labels, <float*>j.out, j.win, a, b)


cdef void _conv_bias_grad_job(const Job* j, intp_t a, intp_t b) noexcept nogil:
    # j.c: images; the window's c and h * w: channels and elements per plane
    if j.f64:
        conv_bias_grad_f64(<const double*>j.a, <double*>j.out, j.c, j.win.c, j.win.h, a, b)
    else:
        conv_bias_grad_f32(<const float*>j.a, <float*>j.out, j.c, j.win.c, j.win.h, a, b)


def im2col(x, filter_h, filter_w, stride=1, pad=0, out=None):
    """Unfold the windows of ``x`` (N, C, H, W) into ``col`` (N*out_h*out_w, C*fh*fw),
    the book's layout; see the NumPy twin."""
    fh, fw, s, p = window(filter_h, filter_w, stride, pad)
    cdef cnp.ndarray xa = _floats("x", x)
    n, c, h, w, oh, ow = image_shape("x", (<object>xa).shape, fh, fw, s, p)
    cdef intp_t shape[2]
    shape[0], shape[1] = n * oh * ow, c * fh * fw
    cdef cnp.ndarray o = _result("out", out, 2, shape, cnp.PyArray_TYPE(xa))
    xa = _apart(xa, o, False, "x")
    cdef Window g = _window(n, c, h, w, fh, fw, s, p, oh, ow)
    cdef Job job
    job.f64, job.a, job.out, job.win = _is_f64(xa), _cdata(xa), <char*>_data(o), &g
    cdef intp_t size = cnp.PyArray_SIZE(o), images = n if size else 0  # empty: no loop
    with nogil:
        _run(_im2col_job, &job, images, 1, size, PARALLEL_MIN)
    return o


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0, out=None):
    """The adjoint of ``im2col``: ``dx`` (N, C, H, W), overlapping windows accumulated;
    see the NumPy twin."""
    fh, fw, s, p = window(filter_h, filter_w, stride, pad)
    shape4 = input_shape_arg(input_shape)
    cdef cnp.ndarray ca = _floats("col", col)
    n, c, h, w, oh, ow = image_shape("input_shape", shape4, fh, fw, s, p)
    check_same_shape("col", ca, f"im2col's output for input_shape {shape4}",
                     (n * oh * ow, c * fh * fw))
    cdef intp_t shape[4]
    shape[0], shape[1], shape[2], shape[3] = n, c, h, w
    cdef cnp.ndarray o = _result("out", out, 4, shape, cnp.PyArray_TYPE(ca))
    ca = _apart(ca, o, False, "col")
    cdef Window g = _window(n, c, h, w, fh, fw, s, p, oh, ow)
    cdef Job job
    job.f64, job.a, job.out, job.win = _is_f64(ca), _cdata(ca), <char*>_data(o), &g
    cdef intp_t size = cnp.PyArray_SIZE(ca)
    with nogil:
        _run(_col2im_job, &job, shape[0] if cnp.PyArray_SIZE(o) else 0, 1, size, PARALLEL_MIN)
    return o


def maxpool_forward(x, pool_h, pool_w, stride=2, pad=0, out=None):
    """Max pooling of ``x`` (N, C, H, W): ``(out, arg_max)``, padding as -inf, arg_max
    the book's (flat, order (n, i, j, c)); see the NumPy twin."""
    ph, pw, s, p = pool_window(pool_h, pool_w, stride, pad)
    cdef cnp.ndarray xa = _floats("x", x)
    n, c, h, w, oh, ow = image_shape("x", (<object>xa).shape, ph, pw, s, p)
    cdef intp_t shape[4]
    shape[0], shape[1], shape[2], shape[3] = n, c, oh, ow
    cdef cnp.ndarray o = _result("out", out, 4, shape, cnp.PyArray_TYPE(xa))
    xa = _apart(xa, o, False, "x")
    cdef intp_t size = cnp.PyArray_SIZE(o)
    cdef cnp.ndarray arg = cnp.PyArray_EMPTY(1, &size, cnp.NPY_INTP, 0)
    cdef Window g = _window(n, c, h, w, ph, pw, s, p, oh, ow)
    cdef Job job
    job.f64, job.a, job.out, job.win = _is_f64(xa), _cdata(xa), <char*>_data(o), &g
    job.index = <intp_t*>_data(arg)
    cdef intp_t elements = cnp.PyArray_SIZE(xa)
    with nogil:
        _run(_maxpool_fwd_job, &job, shape[0] if size else 0, 1, elements, PARALLEL_MIN)
    return o, arg


def maxpool_backward(dout, arg_max, input_shape, pool_h, pool_w, stride=2, pad=0, out=None):
    """Gradient of max pooling: each ``dout`` element goes to the input element its
    window's ``arg_max`` points at; see the NumPy twin."""
    ph, pw, s, p = pool_window(pool_h, pool_w, stride, pad)
    shape4 = input_shape_arg(input_shape)
    n, c, h, w, oh, ow = image_shape("input_shape", shape4, ph, pw, s, p)
    cdef cnp.ndarray d = _floats("dout", dout)
    check_same_shape("dout", d, f"the pooling output for input_shape {shape4}", (n, c, oh, ow))
    cdef cnp.ndarray arg
    if (isinstance(arg_max, cnp.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray>arg_max) == cnp.NPY_INTP
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>arg_max) and cnp.PyArray_NDIM(<cnp.ndarray>arg_max) == 1
            and cnp.PyArray_SIZE(<cnp.ndarray>arg_max) == cnp.PyArray_SIZE(d)):
        arg = <cnp.ndarray>arg_max
    else:
        arg = arg_max_array(arg_max, cnp.PyArray_SIZE(d))
    if not labels_in_range(<const intp_t*>_data(arg), cnp.PyArray_SIZE(arg), ph * pw):
        raise arg_max_range_error(arg, ph * pw)
    cdef intp_t shape[4]
    shape[0], shape[1], shape[2], shape[3] = n, c, h, w
    cdef cnp.ndarray o = _result("out", out, 4, shape, cnp.PyArray_TYPE(d))
    d, arg = _apart(d, o, False, "dout"), _apart(arg, o, False, "arg_max")
    cdef Window g = _window(n, c, h, w, ph, pw, s, p, oh, ow)
    cdef Job job
    job.f64, job.a, job.out, job.win = _is_f64(d), _cdata(d), <char*>_data(o), &g
    job.labels = <const intp_t*>_data(arg)
    cdef intp_t elements = cnp.PyArray_SIZE(o)
    with nogil:
        _run(_maxpool_bwd_job, &job, shape[0] if elements else 0, 1, elements, PARALLEL_MIN)
    return o


def conv_bias_grad(dout, out=None):
    """Bias gradient of a convolution: sums of ``dout`` (N, C, H, W) over N, H, W in
    double, (C,)."""
    cdef cnp.ndarray d = _floats("dout", dout)
    if cnp.PyArray_NDIM(d) != 4:
        raise ValueError(f"dout: expected a 4-D array (N, C, H, W), got shape {(<object>d).shape}")
    cdef intp_t c = cnp.PyArray_DIM(d, 1)
    cdef cnp.ndarray o = _result("out", out, 1, &c, cnp.PyArray_TYPE(d))
    d = _apart(d, o, False, "dout")
    cdef Window g   # only c (channels) and h (elements per plane) are read
    g.c, g.h = c, cnp.PyArray_DIM(d, 2) * cnp.PyArray_DIM(d, 3)
    cdef Job job
    job.f64, job.a, job.out, job.win = _is_f64(d), _cdata(d), <char*>_data(o), &g
    job.c = cnp.PyArray_DIM(d, 0) if cnp.PyArray_SIZE(d) else 0  # empty: zeros, no image loop
    cdef intp_t size = cnp.PyArray_SIZE(d)
    with nogil:
        _run(_conv_bias_grad_job, &job, c, 1, size, PARALLEL_MIN)
    return o


# The convolution and 2x2 pooling kernels live in their own module (_conv.pyx).
from ._conv import (conv_backward, conv_forward, maxpool2_backward, maxpool2_forward,  # noqa: E402
                    relu_maxpool2_forward)
