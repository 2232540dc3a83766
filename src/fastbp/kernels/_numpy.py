"""The reference kernels: fastbp's kernel contract, written in plain NumPy.

Every function here has a compiled twin in ``_cython.pyx`` with the same name,
signature and semantics; ``tests/test_kernels.py`` runs every case on both and
``tests/test_backends.py`` checks that the names (``_checks.KERNELS``) and
signatures match.

Contract (shared by both backends):

- Inputs may be any layout (C, Fortran, strided, read-only); they are copied to
  C-contiguous at the boundary only when they have to be. Inputs are never written to,
  except an ``out=`` buffer, which may be one of the inputs for an in-place update.
- ``out=`` must be a C-contiguous, aligned, writable ndarray of the result's exact shape
  and dtype, otherwise ``ValueError``/``TypeError``: no silent copy. It may be exactly
  one of the inputs (an in-place call) or apart from them; a partial overlap is a
  ``ValueError`` (the rule, for every written argument, is ``_checks.apart``).
- dtypes follow the rule in ``_checks.py``: float32/float64 native, integer/bool
  converted to float64, anything else ``TypeError``.
- Sums (``bias_grad``, the softmax normaliser and the loss) accumulate in float64 and are
  rounded once to the result dtype. Column sums (``bias_grad``, batch normalization's
  statistics and gradients) have one order on both backends: from 0, each row added in
  turn (``_column_sums``).
- Hyperparameters (``lr``, ``eps``, ``scale``, ...) are real numbers, checked by
  ``_checks.real_scalar`` on both backends.
"""
import numpy as np

from ._checks import (
    KERNELS,
    NATIVE,
    affine_forward_inputs,
    affine_sgd_inputs,
    affine_shapes,
    apart,
    bn_inputs,
    check_out,
    check_same_shape,
    common_dtype,
    float_array,
    mask_array,
    out_or_empty,
    param_inputs,
    real_scalar,
    softmax_inputs,
    uniform_inputs,
)

__all__ = list(KERNELS)


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
    out = out_or_empty("out", out, x.shape, x.dtype, [("x", x)])
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
    out = out_or_empty("out", out, dout.shape, dout.dtype, [("dout", dout), ("mask", mask)])
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
    # out may be exactly x: each slice reads its part of x before writing it
    out = out_or_empty("out", out, x.shape, x.dtype, [("x", x)])
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
    out = out_or_empty("out", out, dout.shape, dt, [("dout", dout), ("y", y)])
    tmp = 1 - y
    tmp *= dout  # ``out`` is written last: it may be ``dout`` or ``y``
    np.multiply(tmp, y, out=out)
    return out


def _column_sums(a):
    """float64 column sums of a C-contiguous 2-D array, in the one order both backends
    use: from 0, each row added in turn (the compiled ``colsum`` loops); a float32
    element is widened before it is added.

    NumPy's reduction over the rows runs in that order, except over a single column,
    which it sums pairwise: there a running sum (``cumsum``) gives the order, and adding
    +0.0 turns an all-(-0.0) column into the +0.0 that starting from 0 gives.
    """
    with np.errstate(invalid="ignore"):  # inf - inf gives NaN, as in the compiled twin
        if a.shape[1] == 1 and a.shape[0] > 1:
            return np.cumsum(a, axis=0, dtype=np.float64)[-1] + 0.0
        return a.sum(axis=0, dtype=np.float64)


def bias_grad(dout, out=None):
    """Column sums of a 2-D ``dout`` (N, M): the bias gradient ``db`` (M,).

    Accumulated in float64 from 0, one row after another (whatever N and M), rounded
    once to ``dout``'s dtype.
    """
    dout = float_array("dout", dout)
    if dout.ndim != 2:
        raise ValueError(f"dout: expected a 2-D array (batch, features), got shape {dout.shape}")
    out = out_or_empty("out", out, dout.shape[1:], dout.dtype, [("dout", dout)])
    out[...] = _column_sums(dout)
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
    ``db_out``). The matrix products go to BLAS. ``dW_out`` may be exactly ``W`` (or
    ``dout`` or ``x`` when their shape is ``W``'s): ``db`` and ``dx`` are computed
    before it is written.
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
    if db_out is not None:
        check_out("db_out", db_out, W.shape[1:], dt)
    apart([("dW_out", dW_out), ("db_out", db_out)], [("dout", dout), ("x", x), ("W", W)])
    db = bias_grad(dout, out=db_out)  # dout is read before dW_out (perhaps dout) is written
    dx = np.matmul(dout, W.T) if need_dx else None
    dW = np.matmul(x.T, dout, out=dW_out)  # matmul copies an input that is its output
    return dx, dW, db


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
    read = [("x", x), ("t", labels if onehot is None else onehot)]
    if out is not None and "t" in apart([("out", y)], read):
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
    out = out_or_empty("out", out, y.shape, y.dtype,
                       [("y", y), ("t", labels if onehot is None else onehot)])
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
# formulas to the last bit. Hyperparameters are real numbers (``_checks.real_scalar``),
# rounded to the parameter's dtype where they meet it (NumPy's rule for a Python scalar
# with an array): a float32 parameter is updated in float32 arithmetic.
#
# This twin is the reference: it allocates temporaries the size of the parameter.
# The compiled twin makes one fused pass per parameter and allocates nothing.


def sgd_update(param, grad, lr):
    """SGD in place: ``param -= lr * grad``. Returns ``param``."""
    if not (_is_native(param) and param.flags.writeable and _is_native(grad)
            and grad.dtype == param.dtype and grad.shape == param.shape
            and not np.may_share_memory(param, grad)):
        grad = param_inputs(param, grad)
    lr, step = real_scalar("lr", lr), _SLICE_BYTES // param.itemsize
    if param.size <= step:
        param -= lr * grad
        return param
    p, g = param.reshape(-1), grad.reshape(-1)
    for start in range(0, p.size, step):
        p[start:start + step] -= lr * g[start:start + step]
    return param


def momentum_update(param, grad, v, lr, momentum):
    """Momentum SGD in place: ``v = momentum * v - lr * grad; param += v``."""
    grad = param_inputs(param, grad, ("v", v))
    lr, momentum = real_scalar("lr", lr), real_scalar("momentum", momentum)
    v *= momentum
    v -= lr * grad
    param += v
    return param


def nesterov_update(param, grad, v, lr, momentum):
    """Nesterov's accelerated gradient in place, in the form of Bengio, Boulanger-Lewandowski
    and Pascanu, "Advances in optimizing recurrent networks" (arXiv:1212.0901, eq. 7),
    which is the book's ``common/optimizer.py`` since its fix of the Nesterov update:
    the parameter moves with the *previous* velocity,
    ``param += momentum**2 * v; param -= (1 + momentum) * lr * grad;
    v = momentum * v - lr * grad`` (in that order)."""
    grad = param_inputs(param, grad, ("v", v))
    lr, momentum = real_scalar("lr", lr), real_scalar("momentum", momentum)
    param += (momentum * momentum) * v
    param -= ((1 + momentum) * lr) * grad
    v *= momentum
    v -= lr * grad
    return param


def adagrad_update(param, grad, h, lr, eps):
    """AdaGrad in place: ``h += grad * grad; param -= lr * grad / (sqrt(h) + eps)``."""
    grad = param_inputs(param, grad, ("h", h))
    lr, eps = real_scalar("lr", lr), real_scalar("eps", eps)
    h += grad * grad
    param -= lr * grad / (np.sqrt(h) + eps)
    return param


def rmsprop_update(param, grad, h, lr, decay_rate, eps):
    """RMSprop in place: ``h = decay_rate * h + (1 - decay_rate) * grad * grad;
    param -= lr * grad / (sqrt(h) + eps)``."""
    grad = param_inputs(param, grad, ("h", h))
    lr, decay_rate = real_scalar("lr", lr), real_scalar("decay_rate", decay_rate)
    eps = real_scalar("eps", eps)
    h *= decay_rate
    h += (1 - decay_rate) * grad * grad
    param -= lr * grad / (np.sqrt(h) + eps)
    return param


def adam_update(param, grad, m, v, lr_t, beta1, beta2, eps):
    """Adam in place, the book's form: ``m += (1 - beta1) * (grad - m);
    v += (1 - beta2) * (grad**2 - v); param -= lr_t * m / (sqrt(v) + eps)``.

    ``lr_t`` is the step's bias-corrected rate,
    ``lr * sqrt(1 - beta2**t) / (1 - beta1**t)`` (``fastbp.optimizers.Adam`` computes it).
    """
    grad = param_inputs(param, grad, ("m", m), ("v", v))
    lr_t, beta1 = real_scalar("lr_t", lr_t), real_scalar("beta1", beta1)
    beta2, eps = real_scalar("beta2", beta2), real_scalar("eps", eps)
    m += (1 - beta1) * (grad - m)
    v += (1 - beta2) * (grad * grad - v)
    param -= lr_t * m / (np.sqrt(v) + eps)
    return param


# --------------------------------------------------------------------------- Dropout

def dropout_forward(x, u, ratio, scale, out=None):
    """Dropout with given uniform draws: ``(out, mask)``.

    ``mask = u > ratio`` (the book's rule; ``u`` uniform in [0, 1), the shape of
    ``x``, converted to ``x``'s dtype); ``out = x * (mask * scale)``, with ``scale``
    ``1 / (1 - ratio)`` for inverted dropout, 1 for the book's, rounded to ``x``'s
    dtype. A dropped unit is ``x * 0`` as in the book's ``x * mask`` (so NaN and inf
    give NaN there). ``out`` may be exactly ``x`` or ``u``.
    """
    x, u = uniform_inputs(x, u)
    out = out_or_empty("out", out, x.shape, x.dtype, [("x", x), ("u", u)])
    ratio, scale = real_scalar("ratio", ratio), real_scalar("scale", scale)
    mask = np.greater(u, ratio)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, silently, as in the compiled twin
        np.multiply(x, mask * x.dtype.type(scale), out=out)
    return out, mask


def dropout_backward(dout, mask, scale, out=None):
    """Dropout gradient: ``dout * (mask * scale)`` (the book's ``dout * mask`` when
    ``scale`` is 1)."""
    dout = float_array("dout", dout)
    mask = mask_array("mask", mask, dout.shape)
    out = out_or_empty("out", out, dout.shape, dout.dtype, [("dout", dout), ("mask", mask)])
    scale = real_scalar("scale", scale)
    with np.errstate(invalid="ignore"):
        np.multiply(dout, mask * dout.dtype.type(scale), out=out)
    return out


# --------------------------------------------------------------------------- BatchNorm

def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, out=None):
    """Batch normalization of the columns of ``x`` (N, D), training mode: ``(out, xn, std)``.

    Per column: ``mu = mean(x)``, ``var = mean((x - mu)**2)`` (biased, two passes,
    column sums in float64 in the order of ``bias_grad``), ``std = sqrt(var + eps)``,
    ``xn = (x - mu) / std``, ``out = gamma * xn + beta``. ``running_mean`` and
    ``running_var`` (D,) are updated in place, last:
    ``r = momentum * r + (1 - momentum) * stat``. ``xn`` (N, D) and ``std`` (D,) are what
    the backward pass needs. Needs N >= 1.
    """
    x, gamma, beta, running_mean, running_var = bn_inputs(
        x, gamma, beta, running_mean, running_var, True)
    n = x.shape[0]
    if n == 0:
        raise ValueError("x: empty batch (shape (0, D)): the batch statistics are undefined")
    given, out = out, out_or_empty("out", out, x.shape, x.dtype)
    apart([("out", given), ("running_mean", running_mean), ("running_var", running_var)],
          [("x", x), ("gamma", gamma), ("beta", beta)])
    momentum, eps = real_scalar("momentum", momentum), real_scalar("eps", eps)
    mu = _column_sums(x) / n
    xc = x - mu.astype(x.dtype)
    var = _column_sums(np.square(xc, dtype=np.float64)) / n
    std = np.sqrt(var.astype(x.dtype) + x.dtype.type(eps))
    xn = xc / std
    np.multiply(gamma, xn, out=out)
    out += beta
    running_mean *= momentum
    running_mean += (1 - momentum) * mu.astype(x.dtype)
    running_var *= momentum
    running_var += (1 - momentum) * var.astype(x.dtype)
    return out, xn, std


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps, out=None):
    """Batch normalization with the running statistics (test mode):
    ``out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``."""
    x, gamma, beta, running_mean, running_var = bn_inputs(
        x, gamma, beta, running_mean, running_var, False)
    out = out_or_empty("out", out, x.shape, x.dtype,
                       [("x", x), ("gamma", gamma), ("beta", beta),
                        ("running_mean", running_mean), ("running_var", running_var)])
    eps = real_scalar("eps", eps)
    std = np.sqrt(running_var + x.dtype.type(eps))
    np.subtract(x, running_mean, out=out)
    out /= std
    out *= gamma
    out += beta
    return out


def batchnorm_backward(dout, xn, std, gamma, out=None):
    """Gradients of training-mode batch normalization: ``(dx, dgamma, dbeta)``.

    ``dout``, ``xn`` (N, D); ``std``, ``gamma`` (D,). ``dbeta = sum(dout)``,
    ``dgamma = sum(dout * xn)`` (column sums in float64, in the order of ``bias_grad``),
    ``dx = gamma / std * (dout - (dbeta + xn * dgamma) / N)``: the closed form of the
    book's step-by-step backward pass. ``out`` may be exactly ``dout`` or ``xn``.
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
    given, out = out, out_or_empty("out", out, dout.shape, dt)
    aliased = apart([("out", given)], [("dout", dout), ("xn", xn), ("std", std), ("gamma", gamma)])
    dbeta64 = _column_sums(dout)
    dgamma64 = _column_sums(np.multiply(dout, xn, dtype=np.float64))
    dbeta, dgamma = dbeta64.astype(dt), dgamma64.astype(dt)
    # Per column: a = gamma / std, c1 = dbeta / N, c2 = dgamma / N, in float64 once.
    a = (gamma.astype(np.float64) / std).astype(dt)
    c1 = (dbeta64 / n).astype(dt)
    c2 = (dgamma64 / n).astype(dt)
    # dx = (dout - (xn * c2 + c1)) * a; built in ``out`` unless out is dout, read below
    tmp = np.empty_like(out) if "dout" in aliased else out
    np.multiply(xn, c2, out=tmp)
    tmp += c1
    np.subtract(dout, tmp, out=out)
    out *= a
    return out, dgamma, dbeta


# =========================================================================== chapter 7
# Convolution and pooling (fastbp.util, Convolution, Pooling). Images are NCHW. ``col``
# has the book's layout: one row per output position (n, i, j), one column per window
# element (c, ky, kx), so that a convolution is one matrix product ``col @ W.reshape(FN,
# -1).T``. Accumulations (col2im, the pooling backward) add the contributions to an
# input element in window order (ky, kx), on both backends, so they agree bit for bit.

from numpy.lib.stride_tricks import sliding_window_view as _windows

from ._checks import (arg_max_array, arg_max_range_error, image_shape, input_shape_arg,
                      pool_window, window)


def _padded(x, pad, value=0.0):
    if pad == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=value)


def _window_view(xp, fh, fw, stride, out_h, out_w):
    """(N, C, out_h, out_w, fh, fw) view of the windows of the padded image ``xp``."""
    v = _windows(xp, (fh, fw), axis=(2, 3))
    return v[:, :, : stride * (out_h - 1) + 1 : stride, : stride * (out_w - 1) + 1 : stride]


def im2col(x, filter_h, filter_w, stride=1, pad=0, out=None):
    """Unfold the windows of ``x`` (N, C, H, W) into ``col`` (N*out_h*out_w, C*fh*fw).

    Row ``(n * out_h + i) * out_w + j`` holds the window at output position (i, j) of
    image n, element ``(c * fh + ky) * fw + kx`` is ``x[n, c, i*stride + ky - pad,
    j*stride + kx - pad]``, 0 in the padding: the book's ``im2col``, in ``x``'s dtype.
    """
    fh, fw, s, p = window(filter_h, filter_w, stride, pad)
    x = float_array("x", x)
    n, c, _, _, oh, ow = image_shape("x", x.shape, fh, fw, s, p)
    col = out_or_empty("out", out, (n * oh * ow, c * fh * fw), x.dtype, [("x", x)])
    if col.size == 0:  # an empty result costs nothing, whatever the other extents
        return col
    v = _window_view(_padded(x, p), fh, fw, s, oh, ow)
    np.copyto(col.reshape(n, oh, ow, c, fh, fw), v.transpose(0, 2, 3, 1, 4, 5))
    return col


def _accumulate(dst, src, fh, fw, stride, out_h, out_w):
    """``dst[:, :, y, x] += src[:, :, ky, kx, i, j]`` at y = i*stride + ky, x = j*stride + kx,
    one strided slice per window element, in window order."""
    for ky in range(fh):
        for kx in range(fw):
            dst[:, :, ky : ky + stride * out_h : stride, kx : kx + stride * out_w : stride] += src[:, :, ky, kx]


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0, out=None):
    """The adjoint of ``im2col``: ``dx`` (N, C, H, W) where each element of ``col`` is
    added to the input element it was taken from (overlapping windows accumulate; the
    padding is dropped). ``col`` must be (N*out_h*out_w, C*fh*fw) for ``input_shape``."""
    fh, fw, s, p = window(filter_h, filter_w, stride, pad)
    shape = input_shape_arg(input_shape)
    col = float_array("col", col)
    n, c, h, w, oh, ow = image_shape("input_shape", shape, fh, fw, s, p)
    check_same_shape("col", col, f"im2col's output for input_shape {shape}",
                     (n * oh * ow, c * fh * fw))
    dx = out_or_empty("out", out, shape, col.dtype, [("col", col)])
    if dx.size == 0:
        return dx
    src = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = dx if p == 0 else np.empty((n, c, h + 2 * p, w + 2 * p), dx.dtype)
    img.fill(0)
    _accumulate(img, src, fh, fw, s, oh, ow)
    if p:
        np.copyto(dx, img[:, :, p : p + h, p : p + w])
    return dx


def maxpool_forward(x, pool_h, pool_w, stride=2, pad=0, out=None):
    """Max pooling of ``x`` (N, C, H, W): ``(out, arg_max)``.

    ``out`` (N, C, out_h, out_w) is the maximum of each window; the padding counts as
    -inf (it never wins over an element of the image; ``pad`` must be smaller than the
    window). ``arg_max`` is the book's: the window index ``ky * pool_w + kx`` of the
    first maximum (the first NaN if there is one: NaN propagates), intp, flat in the
    order (n, i, j, c).
    """
    ph, pw, s, p = pool_window(pool_h, pool_w, stride, pad)
    x = float_array("x", x)
    n, c, _, _, oh, ow = image_shape("x", x.shape, ph, pw, s, p)
    o = out_or_empty("out", out, (n, c, oh, ow), x.dtype, [("x", x)])
    if o.size == 0:  # (take_along_axis would build index arrays as long as N)
        return o, np.empty(0, np.intp)
    v = _window_view(_padded(x, p, -np.inf), ph, pw, s, oh, ow).reshape(n, c, oh, ow, ph * pw)
    arg = np.argmax(v, axis=4) if v.size else np.zeros((n, c, oh, ow), np.intp)
    np.copyto(o, np.take_along_axis(v, arg[..., None], axis=4)[..., 0])
    return o, np.ascontiguousarray(arg.transpose(0, 2, 3, 1), dtype=np.intp).reshape(-1)


def maxpool_backward(dout, arg_max, input_shape, pool_h, pool_w, stride=2, pad=0, out=None):
    """Gradient of max pooling: ``dout[n, c, i, j]`` goes to the input element its
    window's ``arg_max`` points at (accumulated where windows overlap; nothing to the
    padding). ``dout`` (N, C, out_h, out_w), ``arg_max`` as the forward gives it."""
    ph, pw, s, p = pool_window(pool_h, pool_w, stride, pad)
    shape = input_shape_arg(input_shape)
    n, c, h, w, oh, ow = image_shape("input_shape", shape, ph, pw, s, p)
    dout = float_array("dout", dout)
    check_same_shape("dout", dout, f"the pooling output for input_shape {shape}", (n, c, oh, ow))
    arg = arg_max_array(arg_max, dout.size)
    if arg.size and (arg.min() < 0 or arg.max() >= ph * pw):
        raise arg_max_range_error(arg, ph * pw)
    dx = out_or_empty("out", out, shape, dout.dtype, [("dout", dout), ("arg_max", arg)])
    if dx.size == 0:
        return dx
    if out is not None and np.may_share_memory(dx, dout):
        dout = dout.copy()  # exactly dout (a 1x1 window): read before dx is cleared
    arg = arg.reshape(n, oh, ow, c).transpose(0, 3, 1, 2)
    img = dx if p == 0 else np.empty((n, c, h + 2 * p, w + 2 * p), dx.dtype)
    img.fill(0)
    zero = dout.dtype.type(0)
    for k in range(ph * pw):
        ky, kx = divmod(k, pw)
        img[:, :, ky : ky + s * oh : s, kx : kx + s * ow : s] += np.where(arg == k, dout, zero)
    if p:
        np.copyto(dx, img[:, :, p : p + h, p : p + w])
    return dx


def conv_bias_grad(dout, out=None):
    """Bias gradient of a convolution: the sums of ``dout`` (N, C, H, W) over N, H and
    W, (C,), accumulated in float64 and rounded once to ``dout``'s dtype."""
    dout = float_array("dout", dout)
    if dout.ndim != 4:
        raise ValueError(f"dout: expected a 4-D array (N, C, H, W), got shape {dout.shape}")
    out = out_or_empty("out", out, dout.shape[1:2], dout.dtype, [("dout", dout)])
    n, c, h, w = dout.shape
    if dout.size == 0:  # zeros, without per-image sums of nothing
        out[...] = 0
        return out
    with np.errstate(invalid="ignore"):  # inf - inf gives NaN, as in the compiled twin
        per_image = _row_sums(dout.reshape(n, c, h * w))  # (N, C)
        out[...] = _column_sums(per_image)
    return out


# Running sums the compiled ``row_sum`` loop keeps (``FASTBP_LANES`` in _loops.h).
_LANES = 8


def _row_sums(a):
    """float64 sums over the last axis of ``a``, in the compiled ``row_sum`` order:
    ``_LANES`` running sums from 0 over the whole blocks (lane k takes elements k, k +
    8, ...), added lane by lane from 0, then the remaining elements one by one."""
    *lead, m = a.shape
    whole = m // _LANES * _LANES
    blocks = a[..., :whole].reshape(*lead, whole // _LANES, _LANES).astype(np.float64)
    if whole:  # a reduction over a non-contiguous axis runs in order (see _column_sums)
        lanes = np.add.reduce(blocks, axis=-2) + 0.0
    else:
        lanes = np.zeros((*lead, _LANES))
    total = np.zeros(lead)
    for k in range(_LANES):
        total += lanes[..., k]
    for j in range(whole, m):
        total += a[..., j]
    return total



# Convolution as whole-layer kernels, and 2x2 pooling with a byte index. The compiled
# twins lower one image (a block of its output rows) at a time and run the products in
# the layout that writes NCHW; here the same results come from im2col and matmul, up to
# the rounding of the products (a different blocking of the same sums).

from ._checks import conv_inputs, pool_index_array


def conv_forward(x, W, b, stride=1, pad=0, out=None):
    """Convolution of ``x`` (N, C, H, W) with filters ``W`` (FN, C, FH, FW) plus bias
    ``b`` (FN,): ``out`` (N, FN, out_h, out_w), ``out[n, f] = b[f] + sum over (c, ky, kx)
    of W[f, c, ky, kx] * x[n, c, i*stride + ky - pad, j*stride + kx - pad]`` (0 in the
    padding). ``x``, ``W`` and ``b`` meet in their common dtype."""
    x, W, b, (n, c, h, w, fn, fh, fw, s, p, oh, ow) = conv_inputs(x, W, stride, pad,
                                                                   [("b", b)])
    check_same_shape("b", b, "W's first axis", (fn,))
    o = out_or_empty("out", out, (n, fn, oh, ow), x.dtype, [("x", x), ("W", W), ("b", b)])
    col = im2col(x, fh, fw, s, p).reshape(n, oh * ow, c * fh * fw)
    prod = np.matmul(W.reshape(fn, -1), col.transpose(0, 2, 1))  # (N, FN, P)
    np.add(prod, b.reshape(fn, 1), out=o.reshape(n, fn, oh * ow))
    return o


def conv_backward(dout, x, W, stride=1, pad=0, need_dx=True, dW_out=None, db_out=None):
    """Gradients of ``conv_forward``: ``(dx, dW, db)`` for ``dout`` (N, FN, out_h,
    out_w); ``dx`` is None without ``need_dx``; ``db`` is ``conv_bias_grad(dout)``;
    ``dW`` and ``db`` go into ``dW_out`` and ``db_out`` when given (every input is read
    before they are written)."""
    x, W, dout, (n, c, h, w, fn, fh, fw, s, p, oh, ow) = conv_inputs(
        x, W, stride, pad, [("dout", dout)])
    check_same_shape("dout", dout, "the convolution's output", (n, fn, oh, ow))
    read = [("dout", dout), ("x", x), ("W", W)]
    dW = out_or_empty("dW_out", dW_out, W.shape, x.dtype, read)
    db = out_or_empty("db_out", db_out, (fn,), x.dtype, read)
    apart([("dW_out", dW), ("db_out", db)])
    d = dout.reshape(n, fn, oh * ow)
    col = im2col(x, fh, fw, s, p)  # (N*P, K)
    grad_w = np.matmul(d.transpose(1, 0, 2).reshape(fn, -1), col)
    dx = None
    if need_dx:
        dcol = np.matmul(W.reshape(fn, -1).T, d)  # (N, K, P)
        dx = col2im(dcol.transpose(0, 2, 1).reshape(n * oh * ow, c * fh * fw), x.shape,
                    fh, fw, s, p)
    grad_b = conv_bias_grad(dout)
    dW.reshape(fn, -1)[...] = grad_w
    db[...] = grad_b
    return dx, dW, db


def maxpool2_forward(x, out=None):
    """2x2 max pooling with stride 2, no padding, of ``x`` (N, C, H, W): ``(out,
    index)``, ``out`` (N, C, H // 2, W // 2) the maximum of each window and ``index``
    the same shape in uint8, the window index ``ky * 2 + kx`` of its first maximum (the
    first NaN if any); ``maxpool_forward(x, 2, 2, 2)`` with a compact index in NCHW."""
    x = float_array("x", x)
    n, c, h, w, oh, ow = image_shape("x", x.shape, 2, 2, 2, 0)
    o = out_or_empty("out", out, (n, c, oh, ow), x.dtype, [("x", x)])
    v = x[:, :, :2 * oh, :2 * ow].reshape(n, c, oh, 2, ow, 2).transpose(0, 1, 2, 4, 3, 5)
    v = v.reshape(n, c, oh, ow, 4)
    if o.size == 0:  # nothing to pool: no work, whatever the other extents
        return o, np.zeros(o.shape, np.uint8)
    index = np.argmax(v, axis=4)
    np.copyto(o, np.take_along_axis(v, index[..., None], axis=4)[..., 0])
    return o, index.astype(np.uint8)


def relu_maxpool2_forward(x, out=None):
    """ReLU then 2x2 max pooling, in one pass: ``out = relu(maxpool2(x))`` (a maximum
    <= 0 gives +0.0, NaN passes), which equals the pooling of ``relu(x)``; ``index`` as
    ``maxpool2_forward``'s, but 4 where the maximum was <= 0 (the ReLU passes no
    gradient there), so ``maxpool2_backward`` gives the gradient of both layers."""
    o, index = maxpool2_forward(x, out)
    zeroed = o <= 0
    o[zeroed] = 0.0
    index[zeroed] = 4
    return o, index


def maxpool2_backward(dout, index, input_shape, out=None):
    """Gradient of ``maxpool2_forward`` (and of ``relu_maxpool2_forward``):
    ``dout[n, c, i, j]`` to the element ``index`` points at in its window (nowhere for
    index 4), 0 elsewhere; ``dx`` has ``input_shape``."""
    shape = input_shape_arg(input_shape)
    n, c, h, w, oh, ow = image_shape("input_shape", shape, 2, 2, 2, 0)
    dout = float_array("dout", dout)
    check_same_shape("dout", dout, f"the pooling output for input_shape {shape}", (n, c, oh, ow))
    index = pool_index_array(index, dout.shape)
    dx = out_or_empty("out", out, shape, dout.dtype, [("dout", dout), ("index", index)])
    dx.fill(0)
    zero = dout.dtype.type(0)
    for k in range(4):
        ky, kx = divmod(k, 2)
        dx[:, :, ky:2 * oh:2, kx:2 * ow:2] += np.where(index == k, dout, zero)
    return dx
