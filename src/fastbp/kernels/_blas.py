"""fastbp's matrix products and their thread policy (the compiled backend's products).

NumPy hands a product to its BLAS with the BLAS's own thread count: on a 2-CPU machine
two OpenBLAS threads even for the small products of the book's network (100x784 @
784x50, 7.8 MFLOP). On an idle machine the second thread gains little there; when
another process holds a core it is a disaster, because the product waits for the thread
the scheduler does not run and OpenBLAS's idle threads spin on the core the main thread
needs. So the compiled backend calls the BLAS itself (``_gemm.pyx``), one BLAS thread
per call, and runs the calls on fastbp's pool (``_pool.h``):

- the BLAS is a private instance of the OpenBLAS NumPy ships: a copy of the library
  loaded once at import (an anonymous in-memory file on Linux, an unlinked temporary
  file elsewhere), with one thread. OpenBLAS's thread count is a process-wide global
  of the library instance (its ``_local`` setter is global too in the pthreads build
  NumPy ships), so setting NumPy's instance to one thread around fastbp's calls would
  change how NumPy's own products, in other threads, are split and rounded. The copy
  has its own count, pool and buffers; NumPy's are never touched;
- a product is cut into blocks whose number and direction depend only on its shape
  (1 below ``SMALL_FLOPS``, else a power of two up to ``MAX_BLOCKS``; blocks of rows,
  or of columns when C is wider than tall and A is not transposed: each block's BLAS
  call packs the operand it does not cut again, and A (m x k) is then the smaller one
  to pack twice; a transposed A is the slower one to pack), so the result does not
  depend on the thread count or on the machine's load;
- a product of several blocks is timed now and then on one thread and on ``n``
  (``fastbp.set_num_threads``), and runs on whichever cost less lately (the mean of the
  last ``WINDOW`` timings: a stall behind a descheduled thread counts in full). The
  choice is kept per shape and re-timed every ``EXPLORE_EVERY`` calls, so it follows
  the load as it changes (another process starting or stopping);
- ``alpha``/``beta`` and a bias row fold an SGD step or a bias add into the product.

Without a BLAS fastbp can load privately (a NumPy built against another BLAS than its
bundled OpenBLAS, no POSIX system, ``FASTBP_BLAS=numpy``), ``gemm`` computes the same
expression with ``np.matmul``.
"""
import ctypes
import glob
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from . import _gemm

__all__ = ["gemm", "blas_info", "set_max_threads"]

#: Below this many floating-point operations (2 M K N) a product is one block.
SMALL_FLOPS = 1 << 22
#: At most this many blocks; a block has at least MIN_ROWS rows (or columns) and
#: BLOCK_FLOPS work.
MAX_BLOCKS = 2  # each block's BLAS call packs the other operand again, so more blocks
# cost more than they split (docs/benchmarks.md, "Figures behind choices in the code")
MIN_ROWS = 16
BLOCK_FLOPS = 1 << 21
#: The thread count not in use for a shape is re-timed once every this many calls.
EXPLORE_EVERY = 16
#: Timings kept per shape and thread count; their mean decides.
WINDOW = 5


def _bundled_openblas():
    """The path of NumPy's bundled OpenBLAS (ILP64, scipy-openblas symbol names), or None.

    NumPy's wheels ship it beside the package (numpy.libs on Linux, numpy/.dylibs on
    macOS); NumPy has loaded it, so its dependencies (libgfortran) are loaded too.
    """
    root = os.path.dirname(np.__file__)
    patterns = [os.path.join(root, os.pardir, "numpy.libs", "*openblas64*.so*"),
                os.path.join(root, ".dylibs", "*openblas64*.dylib")]
    found = sorted(p for pattern in patterns for p in glob.glob(pattern))
    return found[0] if found else None


_NAMES = ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_set_num_threads64_")


def _load_private_copy(path):
    """A private instance of the library at ``path``, on one thread: ``(lib, sgemm,
    dgemm)``, or None.

    The dynamic loader shares a library between everyone who opens the same file, so
    the instance is a copy: an anonymous in-memory file on Linux, else a temporary file
    unlinked once loaded. OpenBLAS reads ``OPENBLAS_NUM_THREADS`` as it loads; it is set
    to 1 for the load only (the copy then starts no threads) and restored at once.
    """
    if os.name != "posix":
        return None
    fd, name = None, None
    try:
        if hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd"):
            fd = os.memfd_create("fastbp-openblas")
            target = f"/proc/{os.getpid()}/fd/{fd}"
            with open(path, "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            suffix = os.path.splitext(path)[1]
            handle, name = tempfile.mkstemp(prefix="fastbp-openblas-", suffix=suffix)
            with open(path, "rb") as src, os.fdopen(handle, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            target = name
        saved = os.environ.get("OPENBLAS_NUM_THREADS")
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        try:
            lib = ctypes.CDLL(target, mode=os.RTLD_LOCAL | os.RTLD_NOW)
        finally:
            if saved is None:
                del os.environ["OPENBLAS_NUM_THREADS"]
            else:
                os.environ["OPENBLAS_NUM_THREADS"] = saved
        sgemm, dgemm, set_threads = (ctypes.cast(getattr(lib, n), ctypes.c_void_p).value
                                     for n in _NAMES)
        lib.scipy_openblas_set_num_threads64_(1)  # its own global, whatever the variable did
        return lib, sgemm, dgemm
    except (OSError, AttributeError, ValueError):
        return None
    finally:
        if fd is not None:
            os.close(fd)  # the loader keeps its own mapping
        if name is not None:
            os.unlink(name)


#: The values of FASTBP_BLAS: a private copy of NumPy's bundled OpenBLAS, called on
#: fastbp's threads (the default), or NumPy's own ``matmul`` for every product.
BLAS_CHOICES = ("openblas", "numpy")


def _blas_choice():
    """``FASTBP_BLAS`` (any case; unset or blank: ``openblas``). Another value warns,
    naming the variable, the value and the accepted ones, and the default is used."""
    value = os.environ.get("FASTBP_BLAS", "").strip()
    if value.lower() in BLAS_CHOICES or not value:
        return value.lower() or BLAS_CHOICES[0]
    warnings.warn(f"FASTBP_BLAS: expected one of {', '.join(BLAS_CHOICES)}, got {value!r}; "
                  f"using {BLAS_CHOICES[0]}", RuntimeWarning, stacklevel=2)
    return BLAS_CHOICES[0]


_source = None if _blas_choice() == "numpy" else _bundled_openblas()
_private = _load_private_copy(_source) if _source else None
if _private:
    _gemm.bind(_private[1], _private[2])
BOUND = bool(_private)


def blas_info():
    """``{"library": path or None, "bound": bool, "private": bool}``: the library the
    products call (a private copy of it when bound)."""
    return {"library": _source if BOUND else None, "bound": BOUND, "private": BOUND}


def split(m, k, n, trans_a=False):
    """``(blocks, by_columns)`` for an (m, k) @ (k, n) product: a function of the shape
    alone. Columns when n > m and A is not transposed (A is then packed again per
    block, not B)."""
    by_columns = n > m and not trans_a
    flops = 2 * m * k * n
    if flops < SMALL_FLOPS:
        return 1, by_columns
    most = min(MAX_BLOCKS, (n if by_columns else m) // MIN_ROWS, flops // BLOCK_FLOPS)
    count = 1
    while count * 2 <= most:
        count *= 2
    return count, by_columns


def blocks(m, k, n, trans_a=False):
    """How many blocks an (m, k) @ (k, n) product is cut into (``split``)."""
    return split(m, k, n, trans_a)[0]


class _Choice:
    """The thread counts timed for one product shape, and which was faster lately.

    ``best`` is decided when a timing arrives (a mean of ``WINDOW``, in plain Python:
    ``pick`` runs before every product and must cost well under a microsecond)."""
    __slots__ = ("calls", "times", "best")

    def __init__(self):
        self.calls = 0
        self.times = {}  # thread count -> its last WINDOW timings
        self.best = None  # None until both counts have WINDOW timings

    def pick(self, most):
        self.calls += 1
        if self.best is None:  # warm-up: WINDOW timings of each before choosing
            return 1 if len(self.times.get(1, ())) < WINDOW else most
        if self.calls % EXPLORE_EVERY == 0:  # re-time the count not in use
            return most if self.best == 1 else 1
        return self.best

    def record(self, n, seconds, most):
        kept = self.times.setdefault(n, [])
        kept.append(seconds)
        if len(kept) > WINDOW:
            del kept[0]
        one, many = self.times.get(1, ()), self.times.get(most, ())
        if len(one) == WINDOW and len(many) == WINDOW:
            self.best = 1 if sum(one) <= sum(many) else most


_choices = {}
_max_threads = 1


def set_max_threads(n):
    """The most threads a product may use (``fastbp.set_num_threads``)."""
    global _max_threads
    _max_threads = n
    _choices.clear()


# A forked child starts its timings afresh: the parent's were taken under another load.
os.register_at_fork(after_in_child=_choices.clear)


def gemm(a, b, out, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None):
    """``out = alpha * op(a) @ op(b) + beta * out`` (with ``bias`` added to every row).

    ``a``, ``b``, ``out`` (and ``bias``) C-contiguous, one float dtype, ``out`` not
    overlapping the inputs (the callers guarantee it); ``op(x)`` is ``x.T`` with
    ``trans_x``. With ``bias``, ``out``'s old values are not read (``beta`` is ignored).
    Returns ``out``.
    """
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    m, k = opa.shape
    n = opb.shape[1]
    if not BOUND:
        product = np.matmul(opa, opb)
        if bias is not None:
            product += bias
            out[...] = product
        elif beta == 0:
            np.multiply(product, alpha, out=out)
        else:
            out *= beta
            out += alpha * product
        return out
    count, by_columns = split(m, k, n, trans_a)
    most = min(_max_threads, count)
    if most == 1:
        return _gemm.gemm(a, trans_a, b, trans_b, out, alpha, beta, bias, count, 1, by_columns)
    key = (m, k, n, trans_a, trans_b, out.dtype.char)
    choice = _choices.get(key)
    if choice is None:
        choice = _choices[key] = _Choice()
    threads = choice.pick(most)
    start = time.perf_counter()
    _gemm.gemm(a, trans_a, b, trans_b, out, alpha, beta, bias, count, threads, by_columns)
    choice.record(threads, time.perf_counter() - start, most)
    return out
