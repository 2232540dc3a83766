"""The book's plain-NumPy idiom: what fastbp is timed against, and the tests' reference.

What a reader of "Deep Learning from Scratch" runs in chapters 5 to 8, written out in the
book's style (plain NumPy, nothing tuned): its functions, layers (convolution and pooling
through ``im2col``/``col2im`` included) and networks. ``fastbp bench`` and
``benchmarks/`` time it as the baseline; ``tests/book_reference/common`` takes its layers
from this file, so the idiom is written once (docs/architecture.md says why).

This file imports NumPy and the standard library only, never fastbp: the tests load it
by its path as the reference fastbp is judged against (``tests/test_bench_smoke.py``
checks the imports), so no fastbp code can reach it.

One change from the book, in its favour: the arrays that ``im2col``, ``col2im`` and the
pooling backward allocate take the input's dtype (the book's ``np.zeros`` would turn a
float32 network's activations and gradients into float64), so that with float32
parameters every line stays in float32. And one in form: the book's networks, which
differ only in their layers, share one class (``Net``) with the book's ``predict``,
``loss`` and ``gradient``.
"""
from collections import OrderedDict

import numpy as np

__all__ = [
    "sigmoid", "softmax", "cross_entropy_error", "im2col", "col2im",
    "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout", "Convolution", "Pooling",
    "Net", "multi_layer_net", "simple_conv_net", "deep_conv_net",
]


# --------------------------------------------------------------- common/functions.py

def sigmoid(x):
    # Overflows (with a RuntimeWarning) for large negative x: the benchmarks run it
    # under np.errstate(over="ignore"), outside the timed call.
    return 1 / (1 + np.exp(-x))


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)   # guard against overflow
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:   # one-hot targets: the index of the right label
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


# -------------------------------------------------------------------- common/util.py

def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """(N, C, H, W) -> (N * out_h * out_w, C * filter_h * filter_w), one slice per
    filter position."""
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w), dtype=input_data.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The way back: every element of ``col`` added where ``im2col`` took it from."""
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


# ------------------------------------------------------------------ common/layers.py

class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = (x <= 0)
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        # Writes into the caller's dout: the benchmarks hand it a fresh copy each call.
        dout[self.mask] = 0
        dx = dout
        return dx


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        out = sigmoid(x)
        self.out = out
        return out

    def backward(self, dout):
        dx = dout * (1.0 - self.out) * self.out
        return dx


class Affine:
    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        out = np.dot(self.x, self.W) + self.b
        return out

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        dx = dx.reshape(*self.original_x_shape)
        return dx


class SoftmaxWithLoss:
    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:   # one-hot targets
            dx = (self.y - self.t) / batch_size
        else:
            dx = self.y.copy()
            dx[np.arange(batch_size), self.t] -= 1
            dx = dx / batch_size
        return dx


class Dropout:
    """The book's dropout (not inverted): training keeps the units whose draw exceeds
    the ratio, unscaled; prediction multiplies by ``1 - ratio``."""

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask


class Convolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col = None
        self.col_W = None
        self.dW = None
        self.db = None

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, C, H, W = x.shape
        out_h = 1 + int((H + 2 * self.pad - FH) / self.stride)
        out_w = 1 + int((W + 2 * self.pad - FW) / self.stride)
        col = im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        out = out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
        self.x = x
        self.col = col
        self.col_W = col_W
        return out

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout)
        self.dW = self.dW.transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        dx = col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)
        return dx


class Pooling:
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self.arg_max = None

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = int(1 + (H - self.pool_h) / self.stride)
        out_w = int(1 + (W - self.pool_w) / self.stride)
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)
        arg_max = np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        out = out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
        self.x = x
        self.arg_max = arg_max
        return out

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        dx = col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)
        return dx


# ----------------------------------------------------------------------- the networks
# The book's networks (ch05/two_layer_net.py, common/multi_layer_net.py,
# ch07/simple_convnet.py, ch08/deep_convnet.py) differ only in their layers and initial
# weights: their predict, loss and gradient are one class here, Net.

class Net:
    """``params`` (W1, b1, W2, ...), ``layers`` (an OrderedDict with the book's names;
    the weighted layers hold the arrays of ``params``) and ``last_layer``."""

    def __init__(self, params, layers):
        self.params = params
        self.layers = layers
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for layer in self.layers.values():
            if isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x, train_flg=True)
        return self.last_layer.forward(y, t)

    def gradient(self, x, t):
        # forward
        self.loss(x, t)

        # backward
        dout = 1
        dout = self.last_layer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)

        grads = {}
        weighted = [layer for layer in self.layers.values() if hasattr(layer, 'W')]
        for idx, layer in enumerate(weighted, 1):
            grads['W' + str(idx)], grads['b' + str(idx)] = layer.dW, layer.db
        return grads


def multi_layer_net(sizes, weight_init_std=0.01):
    """Affine - Relu per hidden layer, then Affine: at one hidden layer, chapter 5's
    TwoLayerNet; deeper, chapter 6's MultiLayerNet (ReLU, no weight decay)."""
    params, layers = {}, OrderedDict()
    for idx in range(1, len(sizes)):
        params['W' + str(idx)] = weight_init_std * np.random.randn(sizes[idx - 1], sizes[idx])
        params['b' + str(idx)] = np.zeros(sizes[idx])
        layers['Affine' + str(idx)] = Affine(params['W' + str(idx)], params['b' + str(idx)])
        if idx < len(sizes) - 1:
            layers['Relu' + str(idx)] = Relu()
    return Net(params, layers)


def simple_conv_net(weight_init_std=0.01):
    """Chapter 7, for 1x28x28 images: conv (30 5x5 filters) - relu - pool 2x2 -
    affine (100) - relu - affine (10)."""
    params = {'W1': weight_init_std * np.random.randn(30, 1, 5, 5), 'b1': np.zeros(30),
              'W2': weight_init_std * np.random.randn(30 * 12 * 12, 100), 'b2': np.zeros(100),
              'W3': weight_init_std * np.random.randn(100, 10), 'b3': np.zeros(10)}
    layers = OrderedDict()
    layers['Conv1'] = Convolution(params['W1'], params['b1'], stride=1, pad=0)
    layers['Relu1'] = Relu()
    layers['Pool1'] = Pooling(pool_h=2, pool_w=2, stride=2)
    layers['Affine1'] = Affine(params['W2'], params['b2'])
    layers['Relu2'] = Relu()
    layers['Affine2'] = Affine(params['W3'], params['b3'])
    return Net(params, layers)


def deep_conv_net():
    """Chapter 8, for 1x28x28 images: six 3x3 convolutions (16, 16, 32, 32, 64, 64
    filters, pad 1 except 2 for the fourth) with ReLU, a 2x2 pooling after every second,
    then affine (50) - relu - dropout - affine (10) - dropout; He initialisation."""
    params, layers, channels = {}, OrderedDict(), 1
    for idx, (filters, pad) in enumerate([(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)], 1):
        scale = np.sqrt(2.0 / (channels * 3 * 3))
        params['W' + str(idx)] = scale * np.random.randn(filters, channels, 3, 3)
        params['b' + str(idx)] = np.zeros(filters)
        layers['Conv' + str(idx)] = Convolution(params['W' + str(idx)], params['b' + str(idx)], 1, pad)
        layers['Relu' + str(idx)] = Relu()
        if idx % 2 == 0:
            layers['Pool' + str(idx // 2)] = Pooling(pool_h=2, pool_w=2, stride=2)
        channels = filters
    params['W7'] = np.sqrt(2.0 / (64 * 4 * 4)) * np.random.randn(64 * 4 * 4, 50)
    params['b7'] = np.zeros(50)
    params['W8'] = np.sqrt(2.0 / 50) * np.random.randn(50, 10)
    params['b8'] = np.zeros(10)
    layers['Affine1'] = Affine(params['W7'], params['b7'])
    layers['Relu7'] = Relu()
    layers['Dropout1'] = Dropout(0.5)
    layers['Affine2'] = Affine(params['W8'], params['b8'])
    layers['Dropout2'] = Dropout(0.5)
    return Net(params, layers)
