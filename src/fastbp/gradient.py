"""Numerical differentiation (the book's ``common/gradient.py``)."""
import numpy as np

__all__ = ["numerical_gradient", "numerical_gradient_2d"]


def numerical_gradient(f, x, h=1e-4):
    """Central-difference gradient of ``f`` at ``x``: ``(f(x + h) - f(x - h)) / 2h``.

    As in the book, ``x`` is perturbed **in place**, one element at a time, and ``f``
    is called with it: this is how ``TwoLayerNet.numerical_gradient`` reaches the
    layers, which hold the parameters by reference. Every element is restored
    afterwards, even when ``f`` raises. ``x`` must be a float32 or float64 ndarray
    (an integer array cannot hold ``x + h``). Returns an array like ``x``.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a float ndarray (it is perturbed in place), got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"x: expected a float32 or float64 array (it is perturbed in place), got dtype {x.dtype}"
        )
    if not x.flags.writeable:
        raise ValueError("x: is read-only, but is perturbed in place")
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"h: expected a positive finite step, got {h!r}")
    grad = np.zeros_like(x)
    if x.size == 0:  # nditer refuses zero-size arrays
        return grad
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        original = x[idx]
        try:
            x[idx] = original + h
            fxh1 = f(x)
            x[idx] = original - h
            fxh2 = f(x)
        finally:
            x[idx] = original
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        it.iternext()
    return grad


def numerical_gradient_2d(f, X, h=1e-4):
    """The book's row-wise variant: for a 2-D ``X``, ``f`` is differentiated at each row
    separately (``f`` receives the 1-D row, perturbed in place); a 1-D ``X`` is one row.
    Same checks and restoring as ``numerical_gradient``."""
    if isinstance(X, np.ndarray) and X.ndim == 2:
        grad = np.zeros_like(X)
        for idx in range(X.shape[0]):
            grad[idx] = numerical_gradient(f, X[idx], h)
        return grad
    return numerical_gradient(f, X, h)
