"""The book's networks (``common/two_layer_net.py``).

Every network checks a batch before its first layer runs (the targets with the loss
layer's own check, ``kernels._checks.targets``; the batch itself where a later layer
would refuse it), so a ``loss``, ``accuracy``, ``gradient``, ``train_step`` or
``predict`` that raises leaves the network and its layers as they were. The accuracy
of an empty batch is undefined: a ``ValueError``, as for the loss.
"""
from collections import OrderedDict

import numpy as np

from . import kernels as _kernels
from .gradient import numerical_gradient
from .kernels._checks import as_array, targets
from .layers import (Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid,
                     SoftmaxWithLoss, _batch_of_one)
from .optimizers import SGD
from .serialization import SaveParams

__all__ = ["TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend"]


def _normal(rng):
    """The source of N(0, 1) draws: NumPy's global state (as the book) or a Generator."""
    if rng is None:
        return np.random.randn
    gen = np.random.default_rng(rng)
    return lambda *shape: gen.standard_normal(shape)


def _backprop(layers, dout, buffers=None, sgd=None):
    """Run ``dout`` backward through ``layers`` (given first to last).

    A first ``Affine`` or ``Convolution`` skips its input gradient (``dx = dout @ W.T``
    for the Affine): nobody reads it, and it is a third of the arithmetic of
    ``TwoLayerNet``'s training step.

    ``buffers`` (a dict the caller keeps, for ``train_step``): each ``Affine`` writes
    ``dW`` and ``db`` into the arrays it produced on the previous call instead of new
    ones, so that a steady-state step allocates no parameter-sized array.

    ``sgd``, ``(lr, weight_decay)``: plain SGD applied on the way instead. Each ``Affine``
    folds its step into its weight gradient's product (no gradient array, no separate
    update pass); batch normalization's ``gamma``/``beta`` take theirs once their
    gradients exist. Updating a layer's parameters as soon as its backward has run is
    the book's update after the whole backward pass: the layers below never read them.
    """
    layers = list(layers)
    for i in range(len(layers) - 1, -1, -1):
        layer, first = layers[i], i == 0
        if isinstance(layer, Affine) and sgd is not None:
            dout = layer.backward_sgd(dout, *sgd, need_dx=not first)
        elif isinstance(layer, Affine):
            dout = layer.backward(dout, need_dx=not first, **_reused(buffers, i, layer, dout))
            if buffers is not None:
                buffers[i] = (layer.dW, layer.db)
        elif first and isinstance(layer, Convolution):
            layer.backward(dout, need_dx=False)
        else:
            dout = layer.backward(dout)
            if sgd is not None and isinstance(layer, BatchNormalization):
                k = _kernels.active()
                k.sgd_update(layer.gamma, layer.dgamma, sgd[0])
                k.sgd_update(layer.beta, layer.dbeta, sgd[0])


def _reused(buffers, i, layer, dout):
    """The ``dW_out``/``db_out`` of Affine ``i`` from the previous step, when they fit."""
    if buffers is None or i not in buffers:
        return {}
    dW, db = buffers[i]
    dtype = dW.dtype  # reused when nothing changed; mixed dtypes get new arrays
    if (dW.shape == layer.W.shape and layer.W.dtype == dtype and layer.x.dtype == dtype
            and getattr(dout, "dtype", None) == dtype):
        return {"dW_out": dW, "db_out": db}
    return {}


def _check_batch(x, t, classes, what="the mean loss"):
    """Check the targets ``t`` of the batch ``x`` against ``classes`` scores per sample
    (labels (N,) or one-hot (N, C); a label or a one-hot row for a single sample, 1-D
    ``x``), before any layer runs. Returns ``(labels, onehot)`` as ``targets`` does; an
    empty batch is refused (``what`` is undefined over it)."""
    x = as_array("x", x)
    if x.ndim <= 1:  # a single sample, as the layers take it (Affine refuses a 0-d x)
        t = _batch_of_one(as_array("t", t))
    n = 1 if x.ndim <= 1 else x.shape[0]
    if n == 0:
        raise ValueError(f"x: empty batch (shape {x.shape}): {what} is undefined")
    return targets(t, n, classes)


def _accuracy(network, x, t, predict):
    """Fraction of the samples of ``x`` whose highest score is their label."""
    labels, onehot = _check_batch(x, t, network._classes(), "the accuracy")
    if onehot is not None:
        labels = np.argmax(onehot, axis=1)
    y = np.argmax(predict(x).reshape(labels.shape[0], -1), axis=1)
    return np.sum(y == labels) / float(labels.shape[0])


def _train_step(network, x, t, optimizer):
    """``network.train_step``. Plain SGD is fused into the backward pass; any other
    optimizer gets gradients written into buffers reused across steps."""
    if type(optimizer) is SGD:
        network._forward_loss(x, t)
        decay = getattr(network, "weight_decay_lambda", 0.0) or 0.0
        _backprop(network.layers.values(), network._last_layer().backward(1),
                  sgd=(optimizer.lr, decay))
        return network._last_loss()
    grads = network._gradient(x, t, network._grad_buffers)
    optimizer.update(network.params, grads)
    return network._last_loss()


class TwoLayerNet(SaveParams):
    """Affine - ReLU - Affine - SoftmaxWithLoss, as in the book's chapter 5.

    ``params`` holds ``W1``, ``b1``, ``W2``, ``b2``; the layers hold the same arrays by
    reference, so in-place updates (``params[k] -= lr * grads[k]``) train the network.
    Keyword-only extras: ``dtype`` (float64 as in the book, or float32) and ``rng``
    (a seed or ``numpy.random.Generator``; by default NumPy's global state, so
    ``np.random.seed`` works as in the book). ``save_params(path)``/``load_params(path)``
    as the book's chapter 7 and 8 networks (``.npz``, see ``fastbp.serialization``).
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
        self._grad_buffers = {}  # train_step's dW/db, reused from step to step

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy loss of the batch ``x`` against labels or one-hot ``t``."""
        _check_batch(x, t, self._classes())
        return self.lastLayer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        """Fraction of ``x`` classified as ``t`` (labels or one-hot)."""
        return _accuracy(self, x, t, self.predict)

    def _classes(self):
        return np.shape(self.layers["Affine2"].W)[-1]

    def numerical_gradient(self, x, t):
        """Gradients by central differences: slow, for checking ``gradient``."""
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 (the book's idiom)
        return {key: numerical_gradient(loss_W, self.params[key]) for key in ("W1", "b1", "W2", "b2")}

    def gradient(self, x, t):
        """Gradients by backpropagation: ``{"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}``,
        new arrays at every call (as in the book)."""
        return self._gradient(x, t)

    def train_step(self, x, t, optimizer):
        """One training step (not in the book): ``gradient``, then
        ``optimizer.update(params, grads)``, in place. Returns the batch loss.

        With plain ``fastbp.optimizers.SGD`` the update is folded into the backward pass:
        each weight step is part of its gradient's matrix product
        (``W = W - lr * x.T @ dout``, one GEMM), so there is no gradient array and no
        separate update pass, and the layers' ``dW``/``db`` are None afterwards. Other
        optimizers get the gradients in buffers that the next ``train_step`` reuses (the
        layers' ``dW``/``db`` are those buffers), so a steady-state step allocates no
        parameter-sized array. Arrays returned by ``gradient`` are never reused.
        """
        return _train_step(self, x, t, optimizer)

    def _forward_loss(self, x, t):
        return self.loss(x, t)

    def _last_layer(self):
        return self.lastLayer

    def _gradient(self, x, t, buffers=None):
        self.loss(x, t)
        _backprop(self.layers.values(), self.lastLayer.backward(1), buffers)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}

    def _last_loss(self):
        return self.lastLayer.loss


# =========================================================================== chapter 6
# The book's ``common/multi_layer_net.py`` and ``common/multi_layer_net_extend.py``.


def _init_scale(weight_init_std, fan_in):
    """The book's rule: 'relu'/'he' -> sqrt(2 / fan_in), 'sigmoid'/'xavier' ->
    sqrt(1 / fan_in), a number -> that standard deviation."""
    name = str(weight_init_std).lower()
    if name in ("relu", "he"):
        return np.sqrt(2.0 / fan_in)
    if name in ("sigmoid", "xavier"):
        return np.sqrt(1.0 / fan_in)
    if isinstance(weight_init_std, str):
        raise ValueError(
            "weight_init_std: expected 'relu', 'he', 'sigmoid', 'xavier' or a number, "
            f"got {weight_init_std!r}"
        )
    return float(weight_init_std)


class _MultiLayer(SaveParams):
    """Shared body of MultiLayerNet and MultiLayerNetExtend (see their docstrings)."""

    def __init__(self, input_size, hidden_size_list, output_size, activation,
                 weight_init_std, weight_decay_lambda, use_dropout, dropout_ration,
                 use_batchnorm, dtype, rng):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
        activation_layer = {"relu": Relu, "sigmoid": Sigmoid}
        if activation not in activation_layer:
            raise ValueError(f"activation: expected 'relu' or 'sigmoid', got {activation!r}")
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = list(hidden_size_list)
        self.hidden_layer_num = len(self.hidden_size_list)
        self.weight_decay_lambda = weight_decay_lambda
        self.use_dropout = use_dropout
        self.use_batchnorm = use_batchnorm
        self.dtype = dtype
        randn = _normal(rng)

        # Weights first, in the book's order, so a seeded global state gives its draws.
        self.params = {}
        sizes = [input_size] + self.hidden_size_list + [output_size]
        for idx in range(1, len(sizes)):
            scale = _init_scale(weight_init_std, sizes[idx - 1])
            self.params[f"W{idx}"] = (scale * randn(sizes[idx - 1], sizes[idx])).astype(dtype)
            self.params[f"b{idx}"] = np.zeros(sizes[idx], dtype=dtype)

        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
            if use_batchnorm:
                size = self.hidden_size_list[idx - 1]
                self.params[f"gamma{idx}"] = np.ones(size, dtype=dtype)
                self.params[f"beta{idx}"] = np.zeros(size, dtype=dtype)
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(
                    self.params[f"gamma{idx}"], self.params[f"beta{idx}"])
            self.layers[f"Activation_function{idx}"] = activation_layer[activation]()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(
                    dropout_ration, rng=None if rng is None else _child_rng(rng))
        idx = self.hidden_layer_num + 1
        self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
        self.last_layer = SoftmaxWithLoss()
        self._grad_buffers = {}  # train_step's dW/db, reused from step to step

    def predict(self, x, train_flg=False):
        """Scores (N, output_size) before the softmax; ``train_flg`` switches dropout and
        batch normalization to training mode."""
        if self.use_batchnorm:  # what BatchNormalization would refuse after Affine1 ran
            x = as_array("x", x)
            if x.ndim < 2:
                raise ValueError(f"x: expected a batch of shape (N, {self.input_size}) "
                                 f"(batch normalization needs one), got shape {x.shape}")
            if train_flg and x.shape[0] == 0:
                raise ValueError(f"x: empty batch (shape {x.shape}): the batch statistics "
                                 "are undefined")
        for layer in self.layers.values():
            if isinstance(layer, (Dropout, BatchNormalization)):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def state_arrays(self):
        """What ``save_params`` saves besides ``params``: each batch normalization's
        ``running_mean{i}``/``running_var{i}`` (test-mode predictions use them). They
        are created here (zeros, the network's dtype) if no forward pass has yet."""
        state = {}
        for idx in range(1, self.hidden_layer_num + 1):
            bn = self.layers.get(f"BatchNorm{idx}")
            if bn is not None:
                # the layer keeps these arrays from now on (its forward updates them in place)
                bn.running_mean, bn.running_var = bn._stats(self.hidden_size_list[idx - 1], self.dtype)
                state[f"running_mean{idx}"] = bn.running_mean
                state[f"running_var{idx}"] = bn.running_var
        return state

    def _weight_decay(self):
        lam = self.weight_decay_lambda
        if not lam:
            return 0.0
        total = 0.0
        for idx in range(1, self.hidden_layer_num + 2):
            W = self.params[f"W{idx}"]
            total += 0.5 * lam * float(np.square(W, dtype=np.float64).sum())
        return total

    def loss(self, x, t, train_flg=False):
        """Mean cross-entropy of the batch plus the weight decay
        ``0.5 * weight_decay_lambda * sum(W**2)`` over every weight matrix."""
        _check_batch(x, t, self._classes())
        y = self.predict(x, train_flg)
        loss = self.last_layer.forward(y, t)
        return loss + self._weight_decay() if self.weight_decay_lambda else loss

    def accuracy(self, x, t):
        """Fraction of ``x`` classified as ``t`` (labels or one-hot), in test mode."""
        return _accuracy(self, x, t, self.predict)

    def _classes(self):
        return np.shape(self.layers[f"Affine{self.hidden_layer_num + 1}"].W)[-1]

    def _grad_keys(self):
        keys = []
        for idx in range(1, self.hidden_layer_num + 2):
            keys += [f"W{idx}", f"b{idx}"]
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                keys += [f"gamma{idx}", f"beta{idx}"]
        return keys

    def numerical_gradient(self, x, t):
        """Gradients by central differences (training mode, as the book): slow, for
        checking ``gradient``. With dropout, fix the masks (seed) for a meaningful check."""
        loss_W = lambda W: self.loss(x, t, train_flg=True)  # noqa: E731 (the book's idiom)
        return {key: numerical_gradient(loss_W, self.params[key]) for key in self._grad_keys()}

    def gradient(self, x, t):
        """Gradients by backpropagation (training mode): ``{"W1": ..., "b1": ..., ...}``,
        with ``gamma``/``beta`` for batch normalization and the weight decay term
        ``weight_decay_lambda * W`` in every ``W`` gradient."""
        return self._gradient(x, t)

    def train_step(self, x, t, optimizer):
        """One training step (not in the book): ``gradient`` then
        ``optimizer.update(params, grads)``; returns the batch loss (with the weight
        decay term). Plain SGD is folded into the backward pass (the weight decay into
        the product's ``beta = 1 - lr * weight_decay_lambda``); see
        ``TwoLayerNet.train_step``."""
        return _train_step(self, x, t, optimizer)

    def _last_loss(self):
        loss = self.last_layer.loss
        return loss + self._weight_decay() if self.weight_decay_lambda else loss

    def _forward_loss(self, x, t):
        return self.loss(x, t, train_flg=True)

    def _last_layer(self):
        return self.last_layer

    def _gradient(self, x, t, buffers=None):
        self.loss(x, t, train_flg=True)
        _backprop(self.layers.values(), self.last_layer.backward(1), buffers)

        lam = self.weight_decay_lambda
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            grads[f"W{idx}"] = affine.dW + lam * self.params[f"W{idx}"] if lam else affine.dW
            grads[f"b{idx}"] = affine.db
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                bn = self.layers[f"BatchNorm{idx}"]
                grads[f"gamma{idx}"] = bn.dgamma
                grads[f"beta{idx}"] = bn.dbeta
        return grads


def _child_rng(rng):
    """A generator for a dropout layer, drawn from the network's ``rng``."""
    return np.random.default_rng(rng.integers(2**63))


class MultiLayerNet(_MultiLayer):
    """Fully connected network: (Affine - activation) x len(hidden_size_list) - Affine -
    SoftmaxWithLoss, as the book's ``MultiLayerNet``.

    ``params`` holds ``W1``, ``b1``, ..., ``W{L}``, ``b{L}`` (L = hidden layers + 1);
    ``layers`` is an ``OrderedDict`` with the book's names ``Affine1``,
    ``Activation_function1``, ...; the layers hold the parameter arrays by reference.
    ``activation``: ``'relu'`` or ``'sigmoid'``. ``weight_init_std``: ``'relu'``/``'he'``
    (He: std ``sqrt(2 / fan_in)``), ``'sigmoid'``/``'xavier'`` (Xavier:
    ``sqrt(1 / fan_in)``) or a number. ``weight_decay_lambda``: L2 penalty
    ``0.5 * lambda * sum(W**2)`` in the loss, ``lambda * W`` in the gradient.
    Keyword-only extras as ``TwoLayerNet``: ``dtype`` (float64 or float32) and ``rng``.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, *, dtype=np.float64, rng=None):
        super().__init__(input_size, hidden_size_list, output_size, activation,
                         weight_init_std, weight_decay_lambda, False, 0.5, False,
                         dtype, _as_generator(rng))


class MultiLayerNetExtend(_MultiLayer):
    """``MultiLayerNet`` with optional batch normalization and dropout, as the book's
    ``MultiLayerNetExtend``: per hidden layer, Affine - [BatchNorm] - activation -
    [Dropout], with the book's names (``BatchNorm1``, ``Dropout1``, ...) and parameters
    ``gamma1``, ``beta1``, ... (ones and zeros). ``predict``/``loss`` take
    ``train_flg`` (default False); ``gradient`` runs in training mode.
    ``dropout_ration`` keeps the book's spelling. Dropout is the book's (not inverted;
    see ``Dropout``).
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, *, dtype=np.float64, rng=None):
        super().__init__(input_size, hidden_size_list, output_size, activation,
                         weight_init_std, weight_decay_lambda, use_dropout, dropout_ration,
                         use_batchnorm, dtype, _as_generator(rng))


def _as_generator(rng):
    """None (NumPy's global state, as the book) or a ``numpy.random.Generator``."""
    return None if rng is None else np.random.default_rng(rng)


# =========================================================================== chapters 7, 8
# The book's ``ch07/simple_convnet.py`` and ``ch08/deep_convnet.py``. Where they differ
# from the book, on purpose (docs/chapter7.md):
# - ``accuracy(x, t, batch_size)`` counts every sample (the book's drops the last,
#   partial batch, yet divides by all of them);
# - the first convolution skips its input gradient in ``gradient`` (nobody reads it);
# - ``save_params``/``load_params`` are fastbp's (``fastbp.serialization``): a ``.npz``,
#   loaded in place; the book's pickled weights (``.pkl``) load without running code.


def _conv_out(size, filter_size, stride, pad):
    return (size + 2 * pad - filter_size) // stride + 1


def _batched_accuracy(predict, x, t, batch_size):
    """Fraction of ``x`` whose highest score is ``t`` (labels, or one-hot), computed
    ``batch_size`` samples at a time."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    t = np.asarray(t)
    if t.ndim != 1:
        t = np.argmax(t, axis=1)
    n = np.shape(x)[0]
    if t.shape != (n,):
        raise ValueError(f"t: expected {n} labels (one per sample of x), got shape {t.shape}")
    if n == 0:
        raise ValueError("x: empty batch: the accuracy is undefined")
    correct = 0
    for start in range(0, n, batch_size):
        y = np.argmax(predict(x[start:start + batch_size]), axis=1)
        correct += int(np.sum(y == t[start:start + batch_size]))
    return correct / n


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


class SimpleConvNet(SaveParams):
    """conv - relu - pool - affine - relu - affine - softmax, the book's chapter 7.

    ``params`` holds ``W1`` (filter_num, C, filter_size, filter_size), ``b1``, ``W2``,
    ``b2``, ``W3``, ``b3``, drawn in the book's order (so ``np.random.seed`` gives the
    book's weights); ``layers`` is an ``OrderedDict`` with the book's names (``Conv1``,
    ``Relu1``, ``Pool1``, ``Affine1``, ``Relu2``, ``Affine2``); the layers hold the
    parameter arrays by reference. Images are (N, C, H, W); float16 images are
    computed in float32. Keyword-only extras as ``TwoLayerNet``: ``dtype`` and ``rng``.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01,
                 *, dtype=np.float64, rng=None):
        dtype = _check_dtype(dtype)
        randn = _normal(None if rng is None else np.random.default_rng(rng))
        filter_num, filter_size = conv_param["filter_num"], conv_param["filter_size"]
        pad, stride = conv_param["pad"], conv_param["stride"]
        channels, height, width = input_dim
        conv_h = _conv_out(height, filter_size, stride, pad)
        conv_w = _conv_out(width, filter_size, stride, pad)
        pool_output_size = filter_num * (conv_h // 2) * (conv_w // 2)

        std = weight_init_std
        self.params = {
            "W1": (std * randn(filter_num, channels, filter_size, filter_size)).astype(dtype),
            "b1": np.zeros(filter_num, dtype=dtype),
            "W2": (std * randn(pool_output_size, hidden_size)).astype(dtype),
            "b2": np.zeros(hidden_size, dtype=dtype),
            "W3": (std * randn(hidden_size, output_size)).astype(dtype),
            "b3": np.zeros(output_size, dtype=dtype),
        }
        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"], stride, pad)
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy of the batch ``x`` against labels or one-hot ``t``."""
        y = self.predict(x)
        return self.last_layer.forward(y, t)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` classified as ``t``, ``batch_size`` images at a time."""
        return _batched_accuracy(self.predict, x, t, batch_size)

    def numerical_gradient(self, x, t):
        """Gradients by central differences: slow, for checking ``gradient``."""
        loss_w = lambda w: self.loss(x, t)  # noqa: E731 (the book's idiom)
        return {key: numerical_gradient(loss_w, self.params[key]) for key in self.params}

    def gradient(self, x, t):
        """Gradients by backpropagation: ``{"W1": ..., "b1": ..., "W3": ..., "b3": ...}``."""
        self.loss(x, t)
        _backprop(self.layers.values(), self.last_layer.backward(1))
        grads = {}
        for idx, name in enumerate(("Conv1", "Affine1", "Affine2"), 1):
            grads[f"W{idx}"], grads[f"b{idx}"] = self.layers[name].dW, self.layers[name].db
        return grads



class DeepConvNet(SaveParams):
    """The book's chapter 8 network (about 99.4% on MNIST)::

        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        conv - relu - conv - relu - pool -
        affine - relu - dropout - affine - dropout - softmax

    The book's constructor (``conv_param_1`` ... ``conv_param_6``, ``hidden_size``,
    ``output_size``), He initialisation drawn in its order, and ``layers`` as its list
    (the weighted layers at indices 0, 2, 5, 7, 10, 12, 15, 18). Dropout scales as the
    book's does (``inverted=False``), so the book's trained weights give its accuracy.
    ``predict(x, train_flg=False)``; ``loss`` runs in training mode, as the book's.
    Keyword-only extras: ``dtype`` and ``rng`` (also seeds the dropout masks).
    """

    _WEIGHTED = (0, 2, 5, 7, 10, 12, 15, 18)

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_2={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_3={"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_4={"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
                 conv_param_5={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_6={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
                 hidden_size=50, output_size=10, *, dtype=np.float64, rng=None):
        dtype = _check_dtype(dtype)
        gen = None if rng is None else np.random.default_rng(rng)
        randn = _normal(gen)
        conv_params = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                       conv_param_6]
        self.params = {}
        channels, h, w = input_dim
        for idx, cp in enumerate(conv_params, 1):
            fs = cp["filter_size"]
            scale = np.sqrt(2.0 / (channels * fs * fs))  # He, for ReLU
            self.params[f"W{idx}"] = (scale * randn(cp["filter_num"], channels, fs, fs)).astype(dtype)
            self.params[f"b{idx}"] = np.zeros(cp["filter_num"], dtype=dtype)
            channels = cp["filter_num"]
            h = _conv_out(h, fs, cp["stride"], cp["pad"])
            w = _conv_out(w, fs, cp["stride"], cp["pad"])
            if idx % 2 == 0:  # a 2x2 pooling after every second convolution
                h, w = _conv_out(h, 2, 2, 0), _conv_out(w, 2, 2, 0)
        flat = channels * h * w
        self.params["W7"] = (np.sqrt(2.0 / flat) * randn(flat, hidden_size)).astype(dtype)
        self.params["b7"] = np.zeros(hidden_size, dtype=dtype)
        self.params["W8"] = (np.sqrt(2.0 / hidden_size) * randn(hidden_size, output_size)).astype(dtype)
        self.params["b8"] = np.zeros(output_size, dtype=dtype)

        def dropout():
            child = None if gen is None else np.random.default_rng(gen.integers(2**63))
            return Dropout(0.5, inverted=False, rng=child)

        self.layers = []
        for idx, cp in enumerate(conv_params, 1):
            self.layers.append(Convolution(self.params[f"W{idx}"], self.params[f"b{idx}"],
                                           cp["stride"], cp["pad"]))
            self.layers.append(Relu())
            if idx % 2 == 0:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers.append(Affine(self.params["W7"], self.params["b7"]))
        self.layers.append(Relu())
        self.layers.append(dropout())
        self.layers.append(Affine(self.params["W8"], self.params["b8"]))
        self.layers.append(dropout())
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for layer in self.layers:
            if isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy of the batch, in training mode (dropout on)."""
        y = self.predict(x, train_flg=True)
        return self.last_layer.forward(y, t)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` classified as ``t`` (test mode), ``batch_size`` at a time."""
        return _batched_accuracy(lambda xb: self.predict(xb, train_flg=False), x, t, batch_size)

    def gradient(self, x, t):
        """Gradients by backpropagation (training mode): ``{"W1": ..., ..., "b8": ...}``."""
        self.loss(x, t)
        _backprop(self.layers, self.last_layer.backward(1))
        grads = {}
        for idx, i in enumerate(self._WEIGHTED, 1):
            grads[f"W{idx}"], grads[f"b{idx}"] = self.layers[i].dW, self.layers[i].db
        return grads



__all__ += ["SimpleConvNet", "DeepConvNet"]


#: The book's training recipe for its CNNs (ch07/train_convnet.py, ch08/train_deepnet.py):
#: Adam at 0.001, batch 100, 20 epochs. ``fastbp train --net conv|deep`` uses it.
CONV_RECIPE = {"optimizer": "adam", "lr": 0.001, "batch_size": 100, "epochs": 20}
CONV_NETS = {"conv": SimpleConvNet, "deep": DeepConvNet}


def build_conv_network(name, hidden_size=None, *, dtype=np.float64, rng=None):
    """The CLI's ``--net conv`` (``SimpleConvNet``) or ``--net deep`` (``DeepConvNet``)
    for 28x28 one-channel images, with the book's defaults (hidden_size 100 and 50)."""
    if name not in CONV_NETS:
        raise ValueError(f"name: expected one of {sorted(CONV_NETS)}, got {name!r}")
    extra = {} if hidden_size is None else {"hidden_size": hidden_size}
    return CONV_NETS[name](input_dim=(1, 28, 28), **extra, dtype=dtype, rng=rng)
