"""Kernel backends: which implementation of the hot paths runs.

``_numpy`` is the reference (the contract, in plain NumPy); ``_cython`` is its compiled
twin, used when it was built. ``FASTBP_BACKEND=numpy|cython`` chooses at import;
``set_backend`` and the ``use_backend`` context manager switch at run time.

The choice is held in a ``contextvars.ContextVar`` (as thinc holds its current ops):
``use_backend`` changes the backend of its own context only (its thread, or its
asyncio task), so two threads inside ``use_backend`` blocks each keep theirs and the
process ends on the backend it had. ``set_backend`` sets the process default, which
every context not inside a ``use_backend`` block sees (a new thread starts there), and
also the calling context's backend from then on; a ``use_backend`` block it is called
in still restores, on exit, the backend the block found on entry.
"""
import os
from contextlib import contextmanager
from contextvars import ContextVar

from . import _numpy

try:
    from . import _cython
except ImportError as exc:  # not compiled: fastbp still works, on NumPy
    _cython = None
    _cython_error = exc
else:
    _cython_error = None

HAVE_CYTHON = _cython is not None
if HAVE_CYTHON:
    from . import _blas  # the compiled backend's matrix products

    _blas.set_max_threads(_cython.get_num_threads())
BACKENDS = ("cython", "numpy")

__all__ = ["HAVE_CYTHON", "BACKENDS", "active", "get_backend", "set_backend", "use_backend",
           "get_num_threads", "set_num_threads"]


def _module(name):
    if name == "numpy":
        return _numpy
    if name == "cython":
        if _cython is None:
            raise RuntimeError(
                "fastbp's compiled kernels are not available "
                f"({_cython_error}); reinstall with `pip install .` from a source tree, "
                "or use the 'numpy' backend"
            )
        return _cython
    raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


def _default():
    name = os.environ.get("FASTBP_BACKEND", "").strip().lower()
    if name:
        return _module(name)
    return _cython if HAVE_CYTHON else _numpy


_process_default = _default()
# The backend of the current context; unset (the process default) outside use_backend
# blocks. Reading it is one ContextVar.get per kernel call, the layers' only overhead.
_context_backend = ContextVar("fastbp_backend")


def active():
    """The kernel module in use in this context (``_cython`` or ``_numpy``)."""
    return _context_backend.get(_process_default)


def get_backend():
    """``"cython"`` or ``"numpy"``: the backend the layers use now, in this context."""
    return "cython" if active() is _cython else "numpy"


def set_backend(name):
    """Use backend ``name`` (``"cython"`` or ``"numpy"``) from now on: it becomes the
    process default (seen by every thread and task not inside a ``use_backend`` block)
    and the backend of the calling context."""
    global _process_default
    module = _module(name)
    _process_default = module
    if _context_backend.get(None) is not None:  # inside a block: switch it too, now
        _context_backend.set(module)


@contextmanager
def use_backend(name):
    """Use backend ``name`` inside a ``with`` block, in this context only (other threads
    keep theirs), then restore the one this context had."""
    token = _context_backend.set(_module(name))
    try:
        yield _context_backend.get()
    finally:
        _context_backend.reset(token)


def get_num_threads():
    """Threads the compiled kernels use on large arrays (1 without them: NumPy's are
    single-threaded)."""
    return _cython.get_num_threads() if HAVE_CYTHON else 1


def set_num_threads(n):
    """Let the compiled kernels use ``n`` threads (the calling thread and ``n - 1`` of
    fastbp's helpers): on large arrays (from 32,768 elements for the softmax and the
    sigmoid, a million for the other kernels), and in the matrix products, which choose
    between one thread and ``n`` by timing.

    The default is the number of CPUs (at most 8), or ``FASTBP_NUM_THREADS``. Results
    do not depend on it. Without the compiled kernels, or on a system without POSIX
    threads, the kernels run on one thread. A forked child keeps the setting and starts
    its own helpers when it needs them.
    """
    if HAVE_CYTHON:
        _cython.set_num_threads(n)
        _blas.set_max_threads(_cython.get_num_threads())
