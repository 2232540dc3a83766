# fastbp's thread pool, for compiled modules: ``from fastbp.kernels._pool cimport
# run_blocks, block_fn`` (Cython resolves it through this module at import).
#
# run_blocks(fn, ctx, count, threads) runs fn(ctx, i, worker) once for each i in
# [0, count) (worker: 0 for the caller, 1.. for helpers, below ``threads``: an index
# for per-thread scratch),
# without the GIL, on the calling thread and fastbp's helper threads: blocks are taken
# one at a time from a shared counter, the caller starts at once, and a helper the
# scheduler does not run costs nothing (its blocks go to the threads that run).
# ``threads`` <= 0 means fastbp's setting (``fastbp.set_num_threads``); 1 runs every
# block on the caller. Cut the work into blocks that depend on the sizes alone (never
# on the thread count), so results do not depend on which thread runs a block. At most
# 65,535 blocks per call (more run on the caller). Returns the most threads that could
# take part (1: the caller ran every block).
from libc.stdint cimport intptr_t

ctypedef void (*block_fn)(void* ctx, intptr_t block, int worker) noexcept nogil

cdef int run_blocks(block_fn fn, void* ctx, intptr_t count, int threads) noexcept nogil
cdef int num_threads() noexcept nogil
