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
    NATIVE,
    affine_forward_inputs,
    affine_sgd_inputs,
    check_out,
    affine_shapes,
    check_same_shape,
    common_dtype,
    float_array,
    mask_array,
    out_or_empty,
    real_scalar,
    softmax_inputs,
)

__all__ = [
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "bias_grad",
    "affine_forward",
    "affine_backward",
    "affine_backward_sgd",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
]


# Bytes per slice where a kernel needs an array-sized temporary (the sigmoid, the SGD
# update): a slice's temporary stays below the allocator's mmap threshold (128 KiB), so
# it is recycled instead of being a fresh, page-faulting mapping at every call (a third
# of a NumPy-backend training step, and most of a sigmoid forward, otherwise).
_SLICE_BYTES = 65536


def _is_native(a):
    """A C-contiguous float32/float64 ndarray: used as it is (a cheap check)."""
    return type(a) is np.ndarray and a.dtype in NATIVE and a.flags.c_contiguous


def relu_forward(x, out=None):
    """ReLU: ``(out, mask)`` with ``mask = x <= 0`` and ``out = where(mask, +0.0, x)``.

    Any shape. NaN is not ``<= 0``, so it propagates (mask False); ``-0.0`` and
    ``-inf`` give ``+0.0``. ``out`` may be ``x`` itself for an in-place forward.
    """
    x = float_array("x", x)
    out = out_or_empty("out", out, x.shape, x.dtype)
    mask = np.less_equal(x, 0)
    # maximum keeps NaN and turns -inf into 0, but keeps -0.0; adding +0.0 makes it
    # +0.0. Two plain passes: a masked copyto(where=) is several times slower.
    np.maximum(x, 0, out=out)
    np.add(out, 0, out=out)
    return out, mask


def relu_backward(dout, mask, out=None):
    """ReLU gradient: ``where(mask, +0.0, dout)``; 0 at the kink ``x == 0``.

    ``dout`` is left untouched unless it is passed as ``out`` (the in-place variant).
    """
    dout = float_array("dout", dout)
    mask = mask_array("mask", mask, dout.shape)
    out = out_or_empty("out", out, dout.shape, dout.dtype)
    # Bitwise select, exact for NaN and inf (a product with 0/1 is not): all-ones bits
    # where the mask is False, zero bits (+0.0) where it is True. Plain SIMD passes; a
    # masked copyto(where=) is several times slower.
    # The bits are built in ``out`` itself unless it is ``dout`` (one array fewer: a
    # second array-sized temporary made glibc return and re-fault the heap at each call).
    bits = np.uint64 if dout.dtype == np.float64 else np.uint32
    keep = out.view(bits) if not np.may_share_memory(out, dout) else None
    keep = np.subtract(mask, 1, dtype=bits, out=keep)  # False -> 0 - 1 wraps to all ones
    np.bitwise_and(dout.view(bits), keep, out=out.view(bits))
    return out


def sigmoid_forward(x, out=None):
    """Logistic function, stable for every input: never evaluates ``exp`` of a positive
    number, so no overflow warning. ``x >= 0``: ``1 / (1 + e)``; ``x < 0``:
    ``e / (1 + e)``, with ``e = exp(-|x|)``. NaN propagates, ``sigmoid(+-inf) = 1, 0``.
    """
    x = float_array("x", x)
    out = out_or_empty("out", out, x.shape, x.dtype)
    # In slices, so that the temporary 1 + e stays small (see _SLICE_BYTES)
    xs, ys, step = x.reshape(-1), out.reshape(-1), _SLICE_BYTES // x.itemsize
    for start in range(0, xs.size, step):
        xi, e = xs[start:start + step], ys[start:start + step]
        positive = xi >= 0  # taken first: out may be x
        np.negative(np.abs(xi, out=e), out=e)
        np.exp(e, out=e)
        one_plus_e = 1 + e
        # numerator (x >= 0 ? 1 : e) as max(e, positive), since 0 < e <= 1 (NaN stays
        # NaN): plain SIMD passes, where a masked divide(where=) is several times slower
        np.maximum(e, positive, out=e)
        np.divide(e, one_plus_e, out=e)
    return out


def sigmoid_backward(dout, y, out=None):
    """Sigmoid gradient ``dout * (1 - y) * y``, evaluated in that order."""
    dt = common_dtype(("dout", dout), ("y", y))
    dout = float_array("dout", dout, dt)
    y = float_array("y", y, dt)
    check_same_shape("y", y, "dout", dout.shape)
    if out is None:  # (1 - y) * dout is dout * (1 - y) bit for bit
        out = np.subtract(1, y, dtype=dt)
        out *= dout
        out *= y
        return out
    out = check_out("out", out, dout.shape, dt)
    tmp = 1 - y
    tmp *= dout  # ``out`` is written last: it may be ``dout`` or ``y``
    np.multiply(tmp, y, out=out)
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


def affine_forward(x, W, b, out=None):
    """``out = x @ W + b``: ``x`` (N, D), ``W`` (D, M), ``b`` (M,), one float dtype.

    The product goes to BLAS (``np.matmul``); ``out`` must not overlap the inputs.
    """
    if not (_is_native(x) and _is_native(W) and _is_native(b) and out is None
            and x.dtype == W.dtype == b.dtype and x.ndim == 2 and W.ndim == 2
            and x.shape[1] == W.shape[0] and b.shape == (W.shape[1],)):
        x, W, b, out = affine_forward_inputs(x, W, b, out)
    out = np.matmul(x, W, out=out)
    out += b
    return out


def affine_backward_sgd(dout, x, W, b, lr, decay=0.0, need_dx=True):
    """Backward through ``out = x @ W + b`` with the SGD step folded in: returns ``dx``
    (None without ``need_dx``), computed with the old ``W``, and updates in place
    ``W = (1 - lr * decay) * W - lr * x.T @ dout`` and ``b -= lr * bias_grad(dout)``.

    ``decay`` is the L2 weight decay (the book's ``weight_decay_lambda``: the gradient
    ``dW + decay * W``). ``W`` and ``b`` must be writable C-contiguous arrays apart
    from ``dout`` and ``x``.
    """
    dout, x, W, b, lr, decay = affine_sgd_inputs(dout, x, W, b, lr, decay)
    dx = np.matmul(dout, W.T) if need_dx else None
    dW = np.matmul(x.T, dout)
    if decay:
        W *= 1.0 - lr * decay
    sgd_update(W, dW, lr)
    sgd_update(b, bias_grad(dout), lr)
    return dx


def affine_backward(dout, x, W, need_dx=True, dW_out=None, db_out=None):
    """Gradients of ``out = x @ W + b``: ``(dx, dW, db)``.

    ``dout`` (N, M), ``x`` (N, D), ``W`` (D, M). ``dx = dout @ W.T`` (None when
    ``need_dx`` is false: the first layer of a network never uses it),
    ``dW = x.T @ dout`` (into ``dW_out`` when given), ``db = bias_grad(dout)`` (into
    ``db_out``). The matrix products go to BLAS.
    """
    if not (_is_native(dout) and _is_native(x) and _is_native(W)
            and dout.dtype == x.dtype == W.dtype):
        dt = common_dtype(("dout", dout), ("x", x), ("W", W))
        dout = float_array("dout", dout, dt)
        x = float_array("x", x, dt)
        W = float_array("W", W, dt)
    dt = W.dtype
    affine_shapes(dout, x, W)
    if dW_out is not None:
        check_out("dW_out", dW_out, W.shape, dt)
    dx = np.matmul(dout, W.T) if need_dx else None
    dW = np.matmul(x.T, dout, out=dW_out)
    return dx, dW, bias_grad(dout, out=db_out)


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
    if onehot is not None and out is not None and np.may_share_memory(out, onehot):
        onehot = onehot.copy()  # read after ``y`` is written
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
    y, labels, onehot = softmax_inputs(y, t, "y")
    n = y.shape[0]
    scale = y.dtype.type(real_scalar("dout", dout) / n)
    out = out_or_empty("out", out, y.shape, y.dtype)
    if labels is not None:
        np.copyto(out, y)
        out[np.arange(n), labels] -= 1
        out *= scale
    else:
        np.subtract(y, onehot, out=out)
        out *= scale
    return out


# =========================================================================== chapter 6
# Optimizer updates, dropout and batch normalization (fastbp.optimizers, Dropout,
# BatchNormalization). The optimizer kernels update ``param`` and the state buffers in
# place, in the book's order of operations, so a float64 trajectory equals the book's
# formulas to the last bit. Hyperparameters are Python floats, rounded to the
# parameter's dtype where they meet it (NumPy's rule for a Python scalar with an
# array): a float32 parameter is updated in float32 arithmetic.
#
# This twin is the reference: it allocates temporaries the size of the parameter.
# The compiled twin makes one fused pass per parameter and allocates nothing.



def _param_inputs(param, grad, *state):
    """Check an in-place optimizer update: ``param`` and the state buffers must be
    writable C-contiguous float arrays of one shape and dtype (no silent copy: they are
    updated in place); ``grad`` is converted to ``param``'s dtype if needed.

    ``state`` holds ``(name, array)`` pairs. Returns ``grad`` as a C-contiguous array.
    """
    if not isinstance(param, np.ndarray):
        raise TypeError(f"param: expected an ndarray (it is updated in place), got type {type(param).__name__}")
    if param.dtype not in (np.float32, np.float64):
        raise TypeError(f"param: expected a float32 or float64 array, got dtype {param.dtype}")
    check_out("param", param, param.shape, param.dtype)
    for name, a in state:
        check_out(name, a, param.shape, param.dtype)
    grad = float_array("grad", grad)
    check_same_shape("grad", grad, "param", param.shape)
    return np.asarray(grad, dtype=param.dtype, order="C")  # 0-d stays 0-d


def sgd_update(param, grad, lr):
    """SGD in place: ``param -= lr * grad``. Returns ``param``."""
    if not (_is_native(param) and param.flags.writeable and _is_native(grad)
            and grad.dtype == param.dtype and grad.shape == param.shape):
        grad = _param_inputs(param, grad)
    lr, step = float(lr), _SLICE_BYTES // param.itemsize
    if param.size <= step:
        param -= lr * grad
        return param
    p, g = param.reshape(-1), grad.reshape(-1)
    for start in range(0, p.size, step):
        p[start:start + step] -= lr * g[start:start + step]
    return param


def momentum_update(param, grad, v, lr, momentum):
    """Momentum SGD in place: ``v = momentum * v - lr * grad; param += v``."""
    grad = _param_inputs(param, grad, ("v", v))
    v *= float(momentum)
    v -= float(lr) * grad
    param += v
    return param


def nesterov_update(param, grad, v, lr, momentum):
    """The book's Nesterov variant, in place: ``v = momentum * v - lr * grad;
    param += momentum**2 * v - (1 + momentum) * lr * grad`` (in that order)."""
    lr, momentum = float(lr), float(momentum)
    grad = _param_inputs(param, grad, ("v", v))
    v *= momentum
    v -= lr * grad
    param += (momentum * momentum) * v
    param -= ((1 + momentum) * lr) * grad
    return param


def adagrad_update(param, grad, h, lr, eps):
    """AdaGrad in place: ``h += grad * grad; param -= lr * grad / (sqrt(h) + eps)``."""
    grad = _param_inputs(param, grad, ("h", h))
    h += grad * grad
    param -= float(lr) * grad / (np.sqrt(h) + float(eps))
    return param


def rmsprop_update(param, grad, h, lr, decay_rate, eps):
    """RMSprop in place: ``h = decay_rate * h + (1 - decay_rate) * grad * grad;
    param -= lr * grad / (sqrt(h) + eps)``."""
    decay_rate = float(decay_rate)
    grad = _param_inputs(param, grad, ("h", h))
    h *= decay_rate
    h += (1 - decay_rate) * grad * grad
    param -= float(lr) * grad / (np.sqrt(h) + float(eps))
    return param


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """Adam in place, the book's form: ``m += (1 - beta1) * (grad - m);
    v += (1 - beta2) * (grad**2 - v); param -= lr_t * m / (sqrt(v) + eps)``.

    ``lr_t`` is the step's bias-corrected rate,
    ``lr * sqrt(1 - beta2**t) / (1 - beta1**t)`` (``fastbp.optimizers.Adam`` computes it).
    """
    beta1, beta2 = float(beta1), float(beta2)
    grad = _param_inputs(param, grad, ("m", m), ("v", v))
    m += (1 - beta1) * (grad - m)
    v += (1 - beta2) * (grad * grad - v)
    param -= float(lr_t) * m / (np.sqrt(v) + float(eps))
    return param


# --------------------------------------------------------------------------- Dropout

def _uniform_inputs(x, u):
    x = float_array("x", x)
    u = float_array("u", u, x.dtype)
    check_same_shape("u", u, "x", x.shape)
    return x, u


def dropout_forward(x, u, ratio, scale, out=None):
    """Dropout with given uniform draws: ``(out, mask)``.

    ``mask = u > ratio`` (the book's rule; ``u`` uniform in [0, 1), the shape of
    ``x``, converted to ``x``'s dtype); ``out = x * (mask * scale)``, with ``scale``
    ``1 / (1 - ratio)`` for inverted dropout, 1 for the book's, rounded to ``x``'s
    dtype. A dropped unit is ``x * 0`` as in the book's ``x * mask`` (so NaN and inf
    give NaN there).
    """
    x, u = _uniform_inputs(x, u)
    out = out_or_empty("out", out, x.shape, x.dtype)
    mask = np.greater(u, float(ratio))
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, silently, as in the compiled twin
        np.multiply(x, mask * x.dtype.type(scale), out=out)
    return out, mask


def dropout_backward(dout, mask, scale, out=None):
    """Dropout gradient: ``dout * (mask * scale)`` (the book's ``dout * mask`` when
    ``scale`` is 1)."""
    dout = float_array("dout", dout)
    mask = mask_array("mask", mask, dout.shape)
    out = out_or_empty("out", out, dout.shape, dout.dtype)
    with np.errstate(invalid="ignore"):
        np.multiply(dout, mask * dout.dtype.type(scale), out=out)
    return out


# --------------------------------------------------------------------------- BatchNorm

def _bn_inputs(x, gamma, beta, running_mean, running_var):
    """``x`` (N, D) float; ``gamma``, ``beta`` (D,) in ``x``'s dtype; the running
    statistics (D,) writable C-contiguous in ``x``'s dtype (they are updated in place)."""
    x = float_array("x", x)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (batch, features), got shape {x.shape}")
    d = x.shape[1:]
    gamma = float_array("gamma", gamma, x.dtype)
    beta = float_array("beta", beta, x.dtype)
    check_same_shape("gamma", gamma, "a row of x", d)
    check_same_shape("beta", beta, "a row of x", d)
    if running_mean is not None:
        check_out("running_mean", running_mean, d, x.dtype)
        check_out("running_var", running_var, d, x.dtype)
    return x, gamma, beta


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, out=None):
    """Batch normalization of the columns of ``x`` (N, D), training mode: ``(out, xn, std)``.

    Per column: ``mu = mean(x)``, ``var = mean((x - mu)**2)`` (biased, two passes,
    accumulated in float64), ``std = sqrt(var + eps)``, ``xn = (x - mu) / std``,
    ``out = gamma * xn + beta``. ``running_mean`` and ``running_var`` (D,) are updated
    in place: ``r = momentum * r + (1 - momentum) * stat``. ``xn`` (N, D) and ``std``
    (D,) are what the backward pass needs. Needs N >= 1.
    """
    x, gamma, beta = _bn_inputs(x, gamma, beta, running_mean, running_var)
    n = x.shape[0]
    if n == 0:
        raise ValueError("x: empty batch (shape (0, D)): the batch statistics are undefined")
    out = out_or_empty("out", out, x.shape, x.dtype)
    mu = x.sum(axis=0, dtype=np.float64) / n
    xc = x - mu.astype(x.dtype)
    var = np.square(xc, dtype=np.float64).sum(axis=0) / n
    std = np.sqrt(var.astype(x.dtype) + x.dtype.type(eps))
    xn = xc / std
    np.multiply(gamma, xn, out=out)
    out += beta
    momentum = float(momentum)
    running_mean *= momentum
    running_mean += (1 - momentum) * mu.astype(x.dtype)
    running_var *= momentum
    running_var += (1 - momentum) * var.astype(x.dtype)
    return out, xn, std


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps, out=None):
    """Batch normalization with the running statistics (test mode):
    ``out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``."""
    x, gamma, beta = _bn_inputs(x, gamma, beta, None, None)
    d = x.shape[1:]
    running_mean = float_array("running_mean", running_mean, x.dtype)
    running_var = float_array("running_var", running_var, x.dtype)
    check_same_shape("running_mean", running_mean, "a row of x", d)
    check_same_shape("running_var", running_var, "a row of x", d)
    out = out_or_empty("out", out, x.shape, x.dtype)
    std = np.sqrt(running_var + x.dtype.type(eps))
    np.subtract(x, running_mean, out=out)
    out /= std
    out *= gamma
    out += beta
    return out


def batchnorm_backward(dout, xn, std, gamma, out=None):
    """Gradients of training-mode batch normalization: ``(dx, dgamma, dbeta)``.

    ``dout``, ``xn`` (N, D); ``std``, ``gamma`` (D,). ``dbeta = sum(dout)``,
    ``dgamma = sum(dout * xn)`` (column sums in float64),
    ``dx = gamma / std * (dout - (dbeta + xn * dgamma) / N)``: the closed form of the
    book's step-by-step backward pass.
    """
    dout = float_array("dout", dout)
    if dout.ndim != 2:
        raise ValueError(f"dout: expected a 2-D array (batch, features), got shape {dout.shape}")
    dt = dout.dtype
    xn = float_array("xn", xn, dt)
    std = float_array("std", std, dt)
    gamma = float_array("gamma", gamma, dt)
    check_same_shape("xn", xn, "dout", dout.shape)
    check_same_shape("std", std, "a row of dout", dout.shape[1:])
    check_same_shape("gamma", gamma, "a row of dout", dout.shape[1:])
    n = dout.shape[0]
    out = out_or_empty("out", out, dout.shape, dt)
    dbeta64 = dout.sum(axis=0, dtype=np.float64)
    dgamma64 = np.multiply(dout, xn, dtype=np.float64).sum(axis=0)
    dbeta, dgamma = dbeta64.astype(dt), dgamma64.astype(dt)
    # Per column: a = gamma / std, c1 = dbeta / N, c2 = dgamma / N, in float64 once.
    a = (gamma.astype(np.float64) / std).astype(dt)
    c1 = (dbeta64 / n).astype(dt)
    c2 = (dgamma64 / n).astype(dt)
    np.multiply(xn, c2, out=out)
    out += c1
    np.subtract(dout, out, out=out)
    out *= a
    return out, dgamma, dbeta


__all__ += [
    "sgd_update",
    "momentum_update",
    "nesterov_update",
    "adagrad_update",
    "rmsprop_update",
    "adam_update",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_inference",
    "batchnorm_backward",
]
