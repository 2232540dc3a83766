"""fastbp's matrix products: ``C = alpha * op(A) @ B + beta * C`` through CBLAS, on
fastbp's own threads.

The BLAS is the one NumPy already loaded (``_blas.py`` finds it and passes its function
pointers to ``bind``), so fastbp adds no library. Each product is cut into a fixed number
of row blocks that depends only on its shape; each block is one single-threaded BLAS
call, and fastbp's OpenMP threads share the blocks. So:

- results do not depend on the thread count (a block always runs on one BLAS thread,
  and the cut does not move with the number of threads); they may differ from
  ``np.matmul``'s by the rounding of a different blocking (a few ulp of the sum);
- the BLAS's own thread pool is never woken by fastbp, so no idle BLAS thread spins on
  a core the next kernel needs, and the thread count can follow the machine's load
  (``_blas.py`` chooses it per product);
- ``alpha`` and ``beta`` fold an SGD update into the gradient's product.
"""
from cython.parallel cimport prange

from libc.stdint cimport int64_t

cimport numpy as cnp

cnp.import_array()

ctypedef int64_t blasint  # the ILP64 interface of NumPy's OpenBLAS

# CBLAS enums (cblas.h)
cdef enum:
    ROW_MAJOR = 101
    NO_TRANS = 111
    TRANS = 112

ctypedef void (*sgemm_t)(int, int, int, blasint, blasint, blasint, float, const float*,
                         blasint, const float*, blasint, float, float*, blasint) noexcept nogil
ctypedef void (*dgemm_t)(int, int, int, blasint, blasint, blasint, double, const double*,
                         blasint, const double*, blasint, double, double*, blasint) noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil
ctypedef int (*get_threads_t)() noexcept nogil

cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL
cdef set_threads_t _set_threads = NULL
cdef get_threads_t _get_threads = NULL


def bind(size_t sgemm, size_t dgemm, size_t set_threads, size_t get_threads):
    """Use these CBLAS ``sgemm``/``dgemm`` and OpenBLAS thread-count functions."""
    global _sgemm, _dgemm, _set_threads, _get_threads
    _sgemm = <sgemm_t>sgemm
    _dgemm = <dgemm_t>dgemm
    _set_threads = <set_threads_t>set_threads
    _get_threads = <get_threads_t>get_threads


def bound():
    return _dgemm != NULL


cdef void _block(bint f64, bint trans_a, bint trans_b, blasint r0, blasint r1, blasint n, blasint k,
                 double alpha, const char* a, blasint lda, const char* b, blasint ldb,
                 double beta, char* c, blasint ldc, const char* bias) noexcept nogil:
    # rows r0..r1 of C; op(A)'s rows are A's rows (no transpose) or A's columns
    cdef blasint off_a = r0 if trans_a else r0 * lda
    cdef blasint i, j
    cdef int ta = TRANS if trans_a else NO_TRANS
    cdef int tb = TRANS if trans_b else NO_TRANS
    if f64:
        if bias != NULL:  # C's rows start as the bias: the GEMM adds onto it (beta = 1)
            for i in range(r0, r1):
                for j in range(n):
                    (<double*>c)[i * ldc + j] = (<const double*>bias)[j]
        _dgemm(ROW_MAJOR, ta, tb, r1 - r0, n, k, alpha, <const double*>a + off_a, lda,
               <const double*>b, ldb, beta, <double*>c + r0 * ldc, ldc)
    else:
        if bias != NULL:
            for i in range(r0, r1):
                for j in range(n):
                    (<float*>c)[i * ldc + j] = (<const float*>bias)[j]
        _sgemm(ROW_MAJOR, ta, tb, r1 - r0, n, k, <float>alpha, <const float*>a + off_a,
               lda, <const float*>b, ldb, <float>beta, <float*>c + r0 * ldc, ldc)


def gemm(cnp.ndarray a, bint trans_a, cnp.ndarray b, bint trans_b, cnp.ndarray c, double alpha,
         double beta, cnp.ndarray bias, Py_ssize_t blocks, int threads):
    """``c = alpha * op(a) @ op(b) + beta * c`` (+ ``bias`` on every row, with ``beta = 1``
    applied after C is filled with it), in ``blocks`` row blocks on ``threads`` threads.

    The caller (``_blas.py``) has checked everything: ``a``, ``b``, ``c`` and ``bias``
    C-contiguous, of one dtype (float32 or float64), ``op(x)`` is ``x`` or, with
    ``trans_x``, its transpose; shapes matching; ``c`` not overlapping the inputs.
    """
    cdef bint f64 = cnp.PyArray_TYPE(c) == cnp.NPY_DOUBLE
    cdef blasint m = cnp.PyArray_DIM(c, 0)
    cdef blasint n = cnp.PyArray_DIM(c, 1)
    cdef blasint k = cnp.PyArray_DIM(a, 0) if trans_a else cnp.PyArray_DIM(a, 1)
    cdef blasint lda = cnp.PyArray_DIM(a, 1)
    cdef blasint ldb = cnp.PyArray_DIM(b, 1)
    cdef const char* pa = <const char*>cnp.PyArray_DATA(a)
    cdef const char* pb = <const char*>cnp.PyArray_DATA(b)
    cdef char* pc = <char*>cnp.PyArray_DATA(c)
    cdef const char* pbias = NULL if bias is None else <const char*>cnp.PyArray_DATA(bias)
    cdef Py_ssize_t i, nb = max(1, min(blocks, m))
    cdef int previous
    if pbias != NULL:
        beta = 1.0
    with nogil:
        previous = _get_threads()
        if previous != 1:
            _set_threads(1)
        if threads > 1 and nb > 1:
            for i in prange(nb, num_threads=threads, schedule="dynamic"):
                _block(f64, trans_a, trans_b, m * i // nb, m * (i + 1) // nb, n, k, alpha,
                       pa, lda, pb, ldb, beta, pc, n, pbias)
        else:
            for i in range(nb):
                _block(f64, trans_a, trans_b, m * i // nb, m * (i + 1) // nb, n, k, alpha,
                       pa, lda, pb, ldb, beta, pc, n, pbias)
        if previous != 1:
            _set_threads(previous)
    return c
