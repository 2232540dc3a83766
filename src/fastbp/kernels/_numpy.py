"""The reference kernels: fastbp's kernel contract, written in plain NumPy.

Every function here has a compiled twin in ``_cython.pyx`` with the same name,
signature and semantics; ``tests/test_kernels.py`` runs every case on both and
``tests/test_backends.py`` checks that the signatures match.

Contract (shared by both backends):

- Inputs may be any layout (C, Fortran, strided, read-only); they are copied to
  C-contiguous at the boundary only when they have to be. Inputs are never written to,
  except an ``out=`` buffer, which may be one of the inputs for an in-place update.
- ``out=`` must be a C-contiguous, writable ndarray of the result's exact shape and
  dtype, otherwise ``ValueError``/``TypeError``: no silent copy.
- dtypes follow the rule in ``_checks.py``: float32/float64 native, integer/bool
  converted to float64, anything else ``TypeError``.
- Sums (``bias_grad``, the softmax normaliser and the loss) accumulate in float64 and are
  rounded once to the result dtype.
"""
import numpy as np

from ._checks import (
    affine_shapes,
    check_same_shape,
    common_dtype,
    float_array,
    mask_array,
    out_or_empty,
    softmax_inputs,
)

__all__ = [
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "bias_grad",
    "affine_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
]


def relu_forward(x, out=None):
    """ReLU: ``(out, mask)`` with ``mask = x <= 0`` and ``out = where(mask, +0.0, x)``.

    Any shape. NaN is not ``<= 0``, so it propagates (mask False); ``-0.0`` and
    ``-inf`` give ``+0.0``. ``out`` may be ``x`` itself for an in-place forward.
    """
    x = float_array("x", x)
    out = out_or_empty("out", out, x.shape, x.dtype)
    mask = np.less_equal(x, 0)
    np.copyto(out, x)
    np.copyto(out, 0, where=mask)
    return out, mask


def relu_backward(dout, mask, out=None):
    """ReLU gradient: ``where(mask, +0.0, dout)``; 0 at the kink ``x == 0``.

    ``dout`` is left untouched unless it is passed as ``out`` (the in-place variant).
    """
    dout = float_array("dout", dout)
    mask = mask_array("mask", mask, dout.shape)
    out = out_or_empty("out", out, dout.shape, dout.dtype)
    np.copyto(out, dout)
    np.copyto(out, 0, where=mask)
    return out


def sigmoid_forward(x, out=None):
    """Logistic function, stable for every input: never evaluates ``exp`` of a positive
    number, so no overflow warning. ``x >= 0``: ``1 / (1 + e)``; ``x < 0``:
    ``e / (1 + e)``, with ``e = exp(-|x|)``. NaN propagates, ``sigmoid(+-inf) = 1, 0``.
    """
    x = float_array("x", x)
    out = out_or_empty("out", out, x.shape, x.dtype)
    positive = x >= 0  # taken first: out may be x
    e = np.exp(-np.abs(x))
    one_plus_e = 1 + e
    np.divide(e, one_plus_e, out=out)
    np.divide(1, one_plus_e, out=out, where=positive)
    return out


def sigmoid_backward(dout, y, out=None):
    """Sigmoid gradient ``dout * (1 - y) * y``, evaluated in that order."""
    dt = common_dtype(("dout", dout), ("y", y))
    dout = float_array("dout", dout, dt)
    y = float_array("y", y, dt)
    check_same_shape("y", y, "dout", dout.shape)
    out = out_or_empty("out", out, dout.shape, dt)
    np.multiply(dout, 1 - y, out=out)
    out *= y
    return out


def bias_grad(dout, out=None):
    """Column sums of a 2-D ``dout`` (N, M): the bias gradient ``db`` (M,).

    Accumulated in float64 row after row, rounded once to ``dout``'s dtype.
    """
    dout = float_array("dout", dout)
    if dout.ndim != 2:
        raise ValueError(f"dout: expected a 2-D array (batch, features), got shape {dout.shape}")
    out = out_or_empty("out", out, dout.shape[1:], dout.dtype)
    with np.errstate(invalid="ignore"):  # inf - inf gives NaN, as in the compiled twin
        out[...] = dout.sum(axis=0, dtype=np.float64)
    return out


def affine_backward(dout, x, W, need_dx=True):
    """Gradients of ``out = x @ W + b``: ``(dx, dW, db)``.

    ``dout`` (N, M), ``x`` (N, D), ``W`` (D, M). ``dx = dout @ W.T`` (None when
    ``need_dx`` is false: the first layer of a network never uses it),
    ``dW = x.T @ dout``, ``db = bias_grad(dout)``. The matrix products go to BLAS.
    """
    dt = common_dtype(("dout", dout), ("x", x), ("W", W))
    dout = float_array("dout", dout, dt)
    x = float_array("x", x, dt)
    W = float_array("W", W, dt)
    affine_shapes(dout, x, W)
    dx = np.matmul(dout, W.T) if need_dx else None
    dW = np.matmul(x.T, dout)
    return dx, dW, bias_grad(dout)


def softmax_cross_entropy(x, t, out=None):
    """Fused softmax and mean cross-entropy: ``(loss, y)``.

    ``x`` (N, C) logits; ``t`` integer labels (N,) or one-hot/probability targets
    (N, C). Per row: ``m = max``, ``s = sum(exp(x - m))`` in float64,
    ``y = exp(x - m) / s``, ``loss_i = log(s) + m - x[label]`` (for targets:
    ``sum_j t_j * (log(s) + m - x_j)``): the exact loss, no epsilon in the log.
    ``loss`` is the mean over rows, a scalar of ``x``'s dtype. A NaN or +inf anywhere
    in a row makes that row's ``y`` and the loss NaN.
    """
    x, labels, onehot = softmax_inputs(x, t)
    n = x.shape[0]
    y = out_or_empty("out", out, x.shape, x.dtype)
    with np.errstate(invalid="ignore"):  # NaN/inf rows give NaN, as documented
        z = x - x.max(axis=1, keepdims=True)
        np.exp(z, out=y)
        s = y.sum(axis=1, keepdims=True, dtype=np.float64)
        np.multiply(y, 1 / s, out=y, casting="same_kind")
        log_s = np.log(s[:, 0])
        if labels is not None:
            rows = log_s - z[np.arange(n), labels]
        else:  # a zero target ignores its logit, even -inf (0 * inf would be NaN)
            terms = onehot * (log_s[:, None] - z)
            terms[onehot == 0] = 0
            rows = terms.sum(axis=1, dtype=np.float64)
    return x.dtype.type(rows.sum(dtype=np.float64) / n), y


def softmax_cross_entropy_backward(y, t, dout=1.0, out=None):
    """Gradient of the mean loss w.r.t. the logits: ``(y - onehot(t)) * (dout / N)``.

    ``y`` (N, C) is the forward's probabilities, ``t`` as in the forward.
    ``out`` may be ``y`` itself.
    """
    y, labels, onehot = softmax_inputs(y, t)
    n = y.shape[0]
    scale = y.dtype.type(float(dout) / n)
    out = out_or_empty("out", out, y.shape, y.dtype)
    if labels is not None:
        np.copyto(out, y)
        out[np.arange(n), labels] -= 1
        out *= scale
    else:
        np.subtract(y, onehot, out=out)
        out *= scale
    return out
