"""Kernel backends: which implementation of the hot paths runs.

``_numpy`` is the reference (the contract, in plain NumPy); ``_cython`` is its compiled
twin, used when it was built. ``FASTBP_BACKEND=numpy|cython`` chooses at import;
``set_backend`` and the ``use_backend`` context manager switch at run time. The choice
is process-wide (not per thread).
"""
import os
from contextlib import contextmanager

from . import _numpy

# The compiled kernels' OpenMP runtime (libgomp) reads its spin policy once, when it
# loads with them. By default a thread spins for some milliseconds after each parallel
# region, on a core that OpenBLAS's threads need for the next matrix product: training
# steps with a threaded softmax ran twice as slow. Unless the user chose a policy,
# spin about as long as a kernel call (the variable is set for the load only).
_OMP_ENV = {"GOMP_SPINCOUNT": "3000"}
_omp_env = {} if {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ) else _OMP_ENV
os.environ.update(_omp_env)
try:
    from . import _cython
except ImportError as exc:  # not compiled: fastbp still works, on NumPy
    _cython = None
    _cython_error = exc
else:
    _cython_error = None
finally:
    for _name in _omp_env:
        del os.environ[_name]

HAVE_CYTHON = _cython is not None
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


_active = _default()


def active():
    """The kernel module in use (``_cython`` or ``_numpy``)."""
    return _active


def get_backend():
    """``"cython"`` or ``"numpy"``: the backend the layers use now."""
    return "cython" if _active is _cython else "numpy"


def set_backend(name):
    """Use backend ``name`` (``"cython"`` or ``"numpy"``) from now on."""
    global _active
    _active = _module(name)


@contextmanager
def use_backend(name):
    """Use backend ``name`` inside a ``with`` block, then restore the previous one."""
    global _active
    previous = _active
    _active = _module(name)
    try:
        yield _active
    finally:
        _active = previous


def get_num_threads():
    """Threads the compiled kernels use on large arrays (1 without them: NumPy's are
    single-threaded)."""
    return _cython.get_num_threads() if HAVE_CYTHON else 1


def set_num_threads(n):
    """Let the compiled kernels use ``n`` OpenMP threads on large arrays (from 32,768
    elements for the softmax and the sigmoid, a million for the other kernels).

    The default is the number of CPUs (at most 8), or ``FASTBP_NUM_THREADS``. Results
    do not depend on it. Without the compiled kernels, in a build without OpenMP, or in
    a forked process (OpenMP cannot start threads safely there once any library has
    used it; asking for more warns), the kernels run on one thread.
    """
    if HAVE_CYTHON:
        _cython.set_num_threads(n)
