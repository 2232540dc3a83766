"""The book's networks (``common/two_layer_net.py``)."""
from collections import OrderedDict

import numpy as np

from .gradient import numerical_gradient
from .layers import Affine, Relu, SoftmaxWithLoss

__all__ = ["TwoLayerNet"]


def _normal(rng):
    """The source of N(0, 1) draws: NumPy's global state (as the book) or a Generator."""
    if rng is None:
        return np.random.randn
    gen = np.random.default_rng(rng)
    return lambda *shape: gen.standard_normal(shape)


class TwoLayerNet:
    """Affine - ReLU - Affine - SoftmaxWithLoss, as in the book's chapter 5.

    ``params`` holds ``W1``, ``b1``, ``W2``, ``b2``; the layers hold the same arrays by
    reference, so in-place updates (``params[k] -= lr * grads[k]``) train the network.
    Keyword-only extras: ``dtype`` (float64 as in the book, or float32) and ``rng``
    (a seed or ``numpy.random.Generator``; by default NumPy's global state, so
    ``np.random.seed`` works as in the book).
    """

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 *, dtype=np.float64, rng=None):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
        randn = _normal(rng)
        self.params = {
            "W1": (weight_init_std * randn(input_size, hidden_size)).astype(dtype),
            "b1": np.zeros(hidden_size, dtype=dtype),
            "W2": (weight_init_std * randn(hidden_size, output_size)).astype(dtype),
            "b2": np.zeros(output_size, dtype=dtype),
        }
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy loss of the batch ``x`` against labels or one-hot ``t``."""
        return self.lastLayer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        t = np.asarray(t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        """Gradients by central differences: slow, for checking ``gradient``."""
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 (the book's idiom)
        return {key: numerical_gradient(loss_W, self.params[key]) for key in ("W1", "b1", "W2", "b2")}

    def gradient(self, x, t):
        """Gradients by backpropagation: ``{"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}``."""
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        layers = list(self.layers.values())
        for layer in reversed(layers[1:]):
            dout = layer.backward(dout)
        first = layers[0]
        if isinstance(first, Affine):  # nobody reads the input's gradient: skip it
            first.backward(dout, need_dx=False)
        else:
            first.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}
