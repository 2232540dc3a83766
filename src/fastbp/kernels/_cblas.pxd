# The CBLAS declarations fastbp's compiled modules share (_gemm, _conv): the ILP64 integer
# of NumPy's OpenBLAS, the cblas.h enums and the types of the sgemm/dgemm entry points
# that _blas finds in its private copy of the library. Declarations only: nothing to
# import at run time.
from libc.stdint cimport int64_t

ctypedef int64_t blasint  # the ILP64 interface of NumPy's OpenBLAS

cdef enum:
    ROW_MAJOR = 101
    NO_TRANS = 111
    TRANS = 112

ctypedef void (*sgemm_t)(int, int, int, blasint, blasint, blasint, float, const float*,
                         blasint, const float*, blasint, float, float*, blasint) noexcept nogil
ctypedef void (*dgemm_t)(int, int, int, blasint, blasint, blasint, double, const double*,
                         blasint, const double*, blasint, double, double*, blasint) noexcept nogil
