"""The layers of "Deep Learning from Scratch", chapter 5, with the book's API.

Same constructors, ``forward``/``backward`` methods and attributes as the book's
``common/layers.py``, so ``from fastbp.layers import *`` can replace
``from common.layers import *``. The layers are thin: they keep the book's state and
call the active kernel backend (see ``fastbp.kernels``).

Where fastbp differs from the book, on purpose:
- ``Relu.backward`` does not write into the caller's ``dout``.
- ``SoftmaxWithLoss`` computes the exact loss from log-softmax (no ``1e-7`` inside the
  log), so loss and gradient agree; it takes a single sample (1-D ``x``) too, and its
  ``backward`` multiplies by ``dout``.
- ``Affine`` takes a single sample (1-D ``x``) too; ``dx`` has the input's shape.
"""
import numpy as np

from . import kernels as _kernels
from .kernels._checks import as_array, common_dtype, float_array

__all__ = ["MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss"]


def _forward_first(layer):
    return RuntimeError(f"{type(layer).__name__}.backward called before forward")


class MulLayer:
    """``out = x * y``; ``backward`` gives ``(dout * y, dout * x)``."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        if self.x is None:
            raise _forward_first(self)
        return dout * self.y, dout * self.x


class AddLayer:
    """``out = x + y``; ``backward`` passes ``dout`` to both inputs."""

    def __init__(self):
        pass

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout * 1, dout * 1


class Relu:
    """ReLU. ``mask`` is ``x <= 0`` from the last forward; the gradient at 0 is 0."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        out, self.mask = _kernels.active().relu_forward(x)
        return out

    def backward(self, dout):
        if self.mask is None:
            raise _forward_first(self)
        return _kernels.active().relu_backward(dout, self.mask)


class Sigmoid:
    """Logistic sigmoid, numerically stable for every input. ``out`` is kept for backward."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = _kernels.active().sigmoid_forward(x)
        return self.out

    def backward(self, dout):
        if self.out is None:
            raise _forward_first(self)
        return _kernels.active().sigmoid_backward(dout, self.out)


class Affine:
    """Fully connected layer ``out = x @ W + b``.

    ``W`` (D, M) and ``b`` (M,) are held by reference, never copied: updating
    ``W`` or ``b`` in place (``params[k] -= lr * grad``, ``numerical_gradient``'s
    perturbation) reaches the layer. ``x`` of any shape (N, ...) is flattened to
    (N, D) per sample; ``backward`` returns ``dx`` in the input's shape and sets
    ``dW`` and ``db``.
    """

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def _check_params(self):
        W, b = self.W, self.b
        if not isinstance(W, np.ndarray) or W.ndim != 2:
            raise ValueError(f"W: expected a 2-D array (in, out), got {np.shape(W)}")
        if np.shape(b) != (W.shape[1],):
            raise ValueError(f"b: expected shape ({W.shape[1]},), got {np.shape(b)}")
        return W, b

    def forward(self, x):
        W, b = self._check_params()
        x = as_array("x", x)
        self.original_x_shape = x.shape
        if x.ndim == 0:
            raise ValueError(f"x: expected shape (N, {W.shape[0]}) or ({W.shape[0]},), got ()")
        x2 = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
        if x2.shape[1] != W.shape[0]:
            raise ValueError(
                f"x: expected {W.shape[0]} features per sample (W has shape {W.shape}), "
                f"got input of shape {x.shape}"
            )
        # x takes the parameters' precision here, once, rather than in every backward
        # (the book feeds float32 images to float64 weights)
        x2 = float_array("x", x2, common_dtype(("x", x2), ("W", W)))
        self.x = x2
        out = np.matmul(x2, W)
        out += b
        return out[0] if x.ndim == 1 else out

    def backward(self, dout, need_dx=True):
        """Set ``dW`` and ``db``; return ``dx`` in the input's shape.

        ``need_dx=False`` (not in the book) skips ``dx = dout @ W.T`` and returns None:
        a network's first layer never uses it, and it is a third of the arithmetic
        of ``TwoLayerNet``'s training step.
        """
        if self.x is None:
            raise _forward_first(self)
        dout = as_array("dout", dout)
        if len(self.original_x_shape) == 1 and dout.ndim == 1:
            dout = dout.reshape(1, -1)
        dx, self.dW, self.db = _kernels.active().affine_backward(dout, self.x, self.W, need_dx)
        return None if dx is None else dx.reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss, fused.

    ``t`` holds integer labels (N,) or one-hot targets (N, C). ``forward`` returns the
    loss (a scalar of ``x``'s dtype) and keeps ``loss``, ``y`` (the probabilities) and
    ``t``; ``backward(dout=1)`` returns ``(y - onehot(t)) * dout / N``.
    """

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None
        self._single = False

    def forward(self, x, t):
        x = as_array("x", x)
        t = as_array("t", t)
        self._single = x.ndim == 1
        if self._single:  # one sample: a batch of one
            x = x.reshape(1, -1)
            t = t.reshape(1, -1) if t.ndim == 1 else t.reshape(1)
        self.loss, y = _kernels.active().softmax_cross_entropy(x, t)
        self.y, self.t = (y[0], t[0]) if self._single else (y, t)
        return self.loss

    def backward(self, dout=1):
        if self.y is None:
            raise _forward_first(self)
        y, t = self.y, self.t
        if self._single:
            y, t = y.reshape(1, -1), t.reshape(1, -1) if t.ndim == 1 else t.reshape(1)
        dx = _kernels.active().softmax_cross_entropy_backward(y, t, dout)
        return dx[0] if self._single else dx
