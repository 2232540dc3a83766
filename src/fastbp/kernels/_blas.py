"""fastbp's matrix products and their thread policy (the compiled backend's products).

NumPy hands a product to its BLAS with the BLAS's own thread count: on a 2-CPU machine
two OpenBLAS threads even for the small products of the book's network (100x784 @
784x50, 7.8 MFLOP). On an idle machine the second thread gains little there; when
another process holds a core it is a disaster, because the product waits for the thread
the scheduler does not run and OpenBLAS's idle threads spin on the core the main thread
needs. So the compiled backend calls the BLAS itself (``_gemm.pyx``, through the
library NumPy loaded: no second BLAS), one BLAS thread per call, and owns the threads:

- a product is cut into row blocks whose number depends only on its shape (1 below
  ``SMALL_FLOPS``, else a power of two up to ``MAX_BLOCKS``), so the result does not depend on the
  thread count or on the machine's load;
- a product of several blocks is timed now and then on one thread and on ``n``
  (``fastbp.set_num_threads``), and runs on whichever was faster lately. The choice is
  kept per shape and re-timed every ``EXPLORE_EVERY`` calls, so it follows the load
  as it changes (another process starting or stopping);
- ``alpha``/``beta`` and a bias row fold an SGD step or a bias add into the product.

Without a BLAS fastbp can bind (a NumPy built against another BLAS than its bundled
OpenBLAS), ``gemm`` computes the same expression with ``np.matmul``.
"""
import ctypes
import glob
import os
import threading
import time
import warnings

import numpy as np

from . import _gemm

__all__ = ["gemm", "blas_info", "set_max_threads"]

#: Below this many floating-point operations (2 M K N) a product is one block.
SMALL_FLOPS = 1 << 22
#: At most this many row blocks; a block has at least MIN_ROWS rows and BLOCK_FLOPS work.
MAX_BLOCKS = 2  # each block's BLAS call packs the other operand again: with 8 blocks the
# 784-1000-1000-10 float32 step ran 0.78x as fast as with NumPy's products, with 2, 0.97-1.05x
MIN_ROWS = 16
BLOCK_FLOPS = 1 << 21
#: The thread count not in use for a shape is re-timed once every this many calls.
EXPLORE_EVERY = 16
#: Timings kept per shape and thread count; their median decides.
WINDOW = 5


def _find_openblas():
    """Addresses of NumPy's bundled OpenBLAS (ILP64, scipy-openblas symbol names):
    ``(sgemm, dgemm, set_num_threads, get_num_threads, path)``, or None.

    NumPy's wheels ship it beside the package (numpy.libs on Linux and Windows,
    numpy/.dylibs on macOS); NumPy has loaded it, so opening it again gives the same
    library, with the thread pool NumPy's own products use.
    """
    root = os.path.dirname(np.__file__)
    patterns = [os.path.join(root, os.pardir, "numpy.libs", "*openblas64*"),
                os.path.join(root, ".dylibs", "*openblas64*")]
    names = ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_",
             "scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_")
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            lib = ctypes.CDLL(path)
            found = [ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in names]
        except (OSError, AttributeError):
            continue
        return (*found, path)
    return None


#: The values of FASTBP_BLAS: NumPy's bundled OpenBLAS, called on fastbp's threads (the
#: default), or NumPy's own ``matmul`` for every product.
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


_found = None if _blas_choice() == "numpy" else _find_openblas()
if _found:
    _gemm.bind(*_found[:4])
BOUND = bool(_found)


def blas_info():
    """``{"library": path or None, "bound": bool}``: the BLAS the products call."""
    return {"library": _found[4] if _found else None, "bound": BOUND}


def blocks(m, k, n):
    """Row blocks of an (m, k) @ (k, n) product: a function of the shape alone."""
    flops = 2 * m * k * n
    if flops < SMALL_FLOPS:
        return 1
    most = min(MAX_BLOCKS, m // MIN_ROWS, flops // BLOCK_FLOPS)
    count = 1
    while count * 2 <= most:
        count *= 2
    return count


class _Choice:
    """The thread counts timed for one product shape, and which was faster lately.

    ``best`` is decided when a timing arrives (a median of ``WINDOW``, in plain Python:
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
            self.best = 1 if _median(one) <= _median(many) else most


def _median(values):
    return sorted(values)[len(values) // 2]


_choices = {}
# OpenBLAS's thread count is one global (its "_local" setter is not per thread in the
# 0.3.31 NumPy ships: a count set in one thread reached products in another, tested),
# and ``_gemm`` sets it to 1 around each product. Two Python threads multiplying at once
# would each restore it while the other's calls run, and those calls would round as a
# two-thread product does: fastbp's products run one at a time (the GIL is released
# inside, so other work goes on).
_one_product = threading.Lock()
_max_threads = 1


def set_max_threads(n):
    """The most threads a product may use (``fastbp.set_num_threads``)."""
    global _max_threads
    _max_threads = n
    _choices.clear()


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
    count = blocks(m, k, n)
    most = min(_max_threads, count)
    if most == 1:
        with _one_product:
            return _gemm.gemm(a, trans_a, b, trans_b, out, alpha, beta, bias, count, 1)
    key = (m, k, n, trans_a, trans_b, out.dtype.char)
    choice = _choices.get(key)
    if choice is None:
        choice = _choices[key] = _Choice()
    threads = choice.pick(most)
    start = time.perf_counter()
    with _one_product:
        _gemm.gemm(a, trans_a, b, trans_b, out, alpha, beta, bias, count, threads)
    choice.record(threads, time.perf_counter() - start, most)
    return out
