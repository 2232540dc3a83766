"""The book's functions (``common/functions.py``): activations, softmax, the losses."""
import numpy as np

from . import kernels as _kernels
from .kernels._checks import as_array, float_array, softmax_inputs

__all__ = ["identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad",
           "softmax", "sum_squared_error", "cross_entropy_error", "softmax_loss"]


def identity_function(x):
    """The output layer's activation for regression: ``x`` itself."""
    return x


def step_function(x):
    """1 where ``x > 0``, else 0, as integers (the perceptron's activation)."""
    return np.asarray(np.asarray(x) > 0, dtype=int)


def sigmoid(x):
    """Logistic function, numerically stable for every input (no overflow warning)."""
    return _kernels.active().sigmoid_forward(x)


def sigmoid_grad(x):
    """Derivative of the sigmoid at ``x``: ``(1 - s) * s``."""
    s = sigmoid(x)
    return _kernels.active().sigmoid_backward(np.ones_like(s), s)


def relu(x):
    return _kernels.active().relu_forward(x)[0]


def relu_grad(x):
    """1 where ``x > 0``, else 0: the same gradient as ``Relu`` (0 at the kink).

    The book's ``relu_grad`` gives 1 at ``x == 0`` while its layer gives 0; fastbp
    uses the layer's convention everywhere.
    """
    x = float_array("x", x)
    return (x > 0).astype(x.dtype)


def softmax(x):
    """Row-wise softmax of a 1-D or 2-D array, shifted by the max (no overflow)."""
    x = float_array("x", x)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x: expected at least one class along the last axis, got shape {x.shape}")
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sum_squared_error(y, t):
    """``0.5 * sum((y - t)**2)`` over the whole batch (not divided by its size)."""
    d = np.asarray(y) - np.asarray(t)
    return 0.5 * np.sum(d * d)


def cross_entropy_error(y, t, eps=1e-7):
    """Mean cross-entropy of probabilities ``y`` against labels or one-hot ``t``.

    As in the book, ``eps`` (1e-7) is added inside the log so that a zero probability
    gives a large finite loss instead of ``inf``; pass ``eps=0`` for the exact value.
    ``SoftmaxWithLoss`` does not go through this function: it computes the exact loss
    from the logits (log-softmax), so its gradient matches its loss.
    """
    y = float_array("y", y)
    t = as_array("t", t)
    if y.ndim == 1:  # one sample: a batch of one, with a label or a one-hot row
        y = y.reshape(1, y.size)
        t = t.reshape(1, t.size) if t.size == y.size else t.reshape(t.size)
    # the same checks as the softmax kernels: shapes, label range (a negative label
    # must not silently index from the end), no empty batch
    y, labels, onehot = softmax_inputs(y, t, "y")
    if onehot is not None:  # one-hot targets: take the labels, as the book does
        labels = onehot.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), labels] + eps)) / batch_size


def softmax_loss(X, t):
    """``cross_entropy_error(softmax(X), t)``: the book's loss from scores, with its
    ``1e-7`` (``SoftmaxWithLoss`` computes the exact loss instead)."""
    return cross_entropy_error(softmax(X), t)
