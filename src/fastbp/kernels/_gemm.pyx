"""fastbp's matrix products: ``C = alpha * op(A) @ B + beta * C`` through CBLAS, on
fastbp's own threads.

The BLAS is fastbp's private instance of the OpenBLAS NumPy ships (``_blas.py`` loads a
copy of the library and passes its function pointers to ``bind``), set to one thread
once: its thread count is its own, so fastbp never changes the count NumPy's products
use. Each product is cut into a fixed number of row blocks that depends only on its
shape; each block is one single-threaded BLAS call, and fastbp's pool (``_pool.h``)
runs the blocks. So:

- results do not depend on the thread count (a block always runs on one BLAS thread,
  and the cut does not move with the number of threads); they may differ from
  ``np.matmul``'s by the rounding of a different blocking (a few ulp of the sum);
- no BLAS thread pool is ever woken by fastbp, so no idle BLAS thread spins on a core
  the next kernel needs, and the thread count can follow the machine's load
  (``_blas.py`` chooses it per product);
- ``alpha`` and ``beta`` fold an SGD update into the gradient's product.
"""
from libc.stdint cimport intptr_t

cimport numpy as cnp

from fastbp.kernels._cblas cimport NO_TRANS, ROW_MAJOR, TRANS, blasint, dgemm_t, sgemm_t
from fastbp.kernels._pool cimport run_blocks

cnp.import_array()

cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL


def bind(size_t sgemm, size_t dgemm):
    """Use these CBLAS ``sgemm``/``dgemm`` (single-threaded ones: the caller's duty)."""
    global _sgemm, _dgemm
    _sgemm = <sgemm_t>sgemm
    _dgemm = <dgemm_t>dgemm


cdef void _block(bint f64, bint trans_a, bint trans_b, blasint r0, blasint r1, blasint c0,
                 blasint c1, blasint k, double alpha, const char* a, blasint lda, const char* b,
                 blasint ldb, double beta, char* c, blasint ldc, const char* bias) noexcept nogil:
    # rows r0..r1 and columns c0..c1 of C; op(A)'s rows are A's rows (no transpose) or
    # A's columns, op(B)'s columns are B's columns or (transposed) B's rows
    cdef blasint off_a = r0 if trans_a else r0 * lda
    cdef blasint off_b = c0 * ldb if trans_b else c0
    cdef blasint i, j, off_c = r0 * ldc + c0
    cdef int ta = TRANS if trans_a else NO_TRANS
    cdef int tb = TRANS if trans_b else NO_TRANS
    if f64:
        if bias != NULL:  # C starts as the bias: the GEMM adds onto it (beta = 1)
            for i in range(r0, r1):
                for j in range(c0, c1):
                    (<double*>c)[i * ldc + j] = (<const double*>bias)[j]
        _dgemm(ROW_MAJOR, ta, tb, r1 - r0, c1 - c0, k, alpha, <const double*>a + off_a, lda,
               <const double*>b + off_b, ldb, beta, <double*>c + off_c, ldc)
    else:
        if bias != NULL:
            for i in range(r0, r1):
                for j in range(c0, c1):
                    (<float*>c)[i * ldc + j] = (<const float*>bias)[j]
        _sgemm(ROW_MAJOR, ta, tb, r1 - r0, c1 - c0, k, <float>alpha, <const float*>a + off_a,
               lda, <const float*>b + off_b, ldb, <float>beta, <float*>c + off_c, ldc)


ctypedef struct Product:
    bint f64, trans_a, trans_b, by_columns
    blasint m, n, k, lda, ldb, blocks
    double alpha, beta
    const char* a
    const char* b
    char* c
    const char* bias


cdef void _product_block(void* ctx, intptr_t i, int worker) noexcept nogil:
    cdef const Product* p = <const Product*>ctx
    if p.by_columns:
        _block(p.f64, p.trans_a, p.trans_b, 0, p.m, p.n * i // p.blocks,
               p.n * (i + 1) // p.blocks, p.k, p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, p.c,
               p.n, p.bias)
    else:
        _block(p.f64, p.trans_a, p.trans_b, p.m * i // p.blocks, p.m * (i + 1) // p.blocks, 0,
               p.n, p.k, p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, p.c, p.n, p.bias)


def gemm(cnp.ndarray a, bint trans_a, cnp.ndarray b, bint trans_b, cnp.ndarray c, double alpha,
         double beta, cnp.ndarray bias, Py_ssize_t blocks, int threads, bint by_columns=False):
    """``c = alpha * op(a) @ op(b) + beta * c`` (+ ``bias`` on every row, with ``beta = 1``
    applied after C is filled with it), in ``blocks`` row blocks (column blocks with
    ``by_columns``) on at most ``threads`` threads of fastbp's pool.

    The caller (``_blas.py``) has checked everything: ``a``, ``b``, ``c`` and ``bias``
    C-contiguous, of one dtype (float32 or float64), ``op(x)`` is ``x`` or, with
    ``trans_x``, its transpose; shapes matching; ``c`` not overlapping the inputs.
    """
    cdef Product p
    p.f64 = cnp.PyArray_TYPE(c) == cnp.NPY_DOUBLE
    p.trans_a, p.trans_b = trans_a, trans_b
    p.m = cnp.PyArray_DIM(c, 0)
    p.n = cnp.PyArray_DIM(c, 1)
    p.k = cnp.PyArray_DIM(a, 0) if trans_a else cnp.PyArray_DIM(a, 1)
    p.lda = cnp.PyArray_DIM(a, 1)
    p.ldb = cnp.PyArray_DIM(b, 1)
    p.a = <const char*>cnp.PyArray_DATA(a)
    p.b = <const char*>cnp.PyArray_DATA(b)
    p.c = <char*>cnp.PyArray_DATA(c)
    p.bias = NULL
    if bias is not None:
        p.bias = <const char*>cnp.PyArray_DATA(bias)
    p.by_columns = by_columns
    p.blocks = max(1, min(blocks, p.n if by_columns else p.m))
    p.alpha = alpha
    p.beta = 1.0 if p.bias != NULL else beta
    with nogil:
        run_blocks(_product_block, &p, p.blocks, threads)
    return c
