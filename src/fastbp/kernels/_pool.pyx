"""fastbp's thread pool (``_pool.h``): the one set of helper threads every compiled
kernel and the matrix products run their blocks on, and the thread setting.

Compiled modules use it through ``_pool.pxd`` (``run_blocks``); Python sees the setting
(``set_num_threads``/``get_num_threads``), whether threads are available
(``HAVE_THREADS``), and the helpers' spin (``set_spin_ns``, for measurements).
"""
import operator

cdef extern from "_pool.h" nogil:
    ctypedef void (*c_block_fn "fastbp_block_fn")(void* ctx, intptr_t block, int worker) noexcept nogil
    const bint FASTBP_HAVE_POOL
    const int FASTBP_POOL_MAX_THREADS
    int fastbp_pool_threads
    long long fastbp_pool_spin_ns
    int fastbp_pool_init()
    int fastbp_pool_helpers()
    int fastbp_run_blocks(c_block_fn fn, void* ctx, intptr_t count, int threads)

#: Whether this build runs blocks on helper threads (POSIX threads); without, every
#: block runs on the calling thread.
HAVE_THREADS = bool(FASTBP_HAVE_POOL)
#: The most threads a job may use (the caller and its helpers).
MAX_THREADS = FASTBP_POOL_MAX_THREADS if FASTBP_HAVE_POOL else 1

if fastbp_pool_init() != 0:
    raise ImportError("fastbp: could not register the thread pool's fork handler")


cdef int run_blocks(block_fn fn, void* ctx, intptr_t count, int threads) noexcept nogil:
    return fastbp_run_blocks(<c_block_fn>fn, ctx, count, threads)


cdef int num_threads() noexcept nogil:
    return fastbp_pool_threads


def set_num_threads(n):
    """Threads a job may use (the caller and ``n - 1`` helpers), at most MAX_THREADS;
    1 without threads in the build."""
    global fastbp_pool_threads
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"n: expected a positive number of threads, got {n}")
    fastbp_pool_threads = min(n, MAX_THREADS)


def get_num_threads():
    return fastbp_pool_threads


def helpers():
    """Helper threads started so far (they start when a job first needs them)."""
    return fastbp_pool_helpers()


def set_spin_ns(ns):
    """How long an idle helper (and a caller waiting for a helper's block) spins
    before it sleeps, in nanoseconds; returns the previous value."""
    global fastbp_pool_spin_ns
    previous = fastbp_pool_spin_ns
    fastbp_pool_spin_ns = max(0, int(ns))
    return previous


cdef void _count_block(void* ctx, intptr_t i, int worker) noexcept nogil:
    # test job: each block adds its index + 1 to its own slot
    (<long long*>ctx)[i] += i + 1


def _self_test(Py_ssize_t count, int threads):
    """Run ``count`` blocks that each write their own slot; returns the slots and the
    threads that could take part (for the tests)."""
    import numpy as np
    slots = np.zeros(count, dtype=np.int64)
    cdef long long[::1] view = slots
    cdef int used
    with nogil:
        used = fastbp_run_blocks(<c_block_fn>_count_block, &view[0] if count else NULL, count, threads)
    return slots, used
