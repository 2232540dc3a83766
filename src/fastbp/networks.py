"""The book's networks: ``TwoLayerNet`` (chapter 5), ``MultiLayerNet`` and
``MultiLayerNetExtend`` (chapter 6), ``SimpleConvNet`` (chapter 7), ``DeepConvNet``
(chapter 8), with the book's constructors, ``params``, ``layers`` and methods.

One protocol for all of them (``_Network``): a network is its ``params`` dict, its
``layers`` (an ``OrderedDict`` or, for ``DeepConvNet``, a list, as in the book) and its
output layer. The layers declare their parameters and gradients (``fastbp._protocol``),
and everything else derives from the layer list: ``predict``, ``loss`` (with the weight
decay of the declared weights), ``accuracy``, ``gradient`` (the key of each gradient is
the key under which ``params`` holds the layer's array: the layers hold them by
reference), ``numerical_gradient``, ``train_step``, ``state_arrays`` (what
``save_params`` saves besides ``params``). A layer with parameters plugs in by its
declaration alone.

Every network checks a batch before its first layer runs (the targets with the loss
layer's own check, ``kernels._checks.targets``; the batch itself where a later layer
would refuse it), so a ``loss``, ``accuracy``, ``gradient``, ``train_step``,
``numerical_gradient`` or ``predict`` that raises leaves the network, its layers and
their random generators as they were. The accuracy of an empty batch is undefined: a
``ValueError``, as for the loss. Labels as a column (N, 1), as the book's
``ch07/gradient_check.py`` passes them, are labels for every network and method (as
for ``SoftmaxWithLoss``), unless there is a single class.
"""
import math
import sys
from collections import OrderedDict
from collections.abc import Mapping
from operator import attrgetter

import numpy as np

from . import _protocol
from .gradient import numerical_gradient
from .kernels._checks import NATIVE, as_array, image_shape, targets, window_int
from .layers import (Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid,
                     SoftmaxWithLoss, _batch_of_one)
from .serialization import SaveParams

__all__ = ["TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet",
           "DeepConvNet", "output_layer"]


def _normal(rng):
    """The source of N(0, 1) draws: NumPy's global state (as the book) or a Generator."""
    if rng is None:
        return np.random.randn
    gen = np.random.default_rng(rng)
    return lambda *shape: gen.standard_normal(shape)


def _check_dtype(dtype):
    """A network's ``dtype``: float32 or float64."""
    dtype = np.dtype(dtype)
    if dtype not in NATIVE:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def output_layer(network):
    """The loss layer of ``network``, the one lookup: the attribute a fastbp network
    names in ``_output_name``; else ``last_layer`` (the book's chapter 6 to 8 networks)
    or ``lastLayer`` (the book's ``TwoLayerNet``); None if it has neither."""
    name = getattr(network, "_output_name", None)
    if name is not None:
        return getattr(network, name)
    last = getattr(network, "last_layer", None)
    return getattr(network, "lastLayer", None) if last is None else last


def _check_batch(x, t, classes, what="the mean loss"):
    """Check the targets ``t`` of the batch ``x`` (an array) against ``classes`` scores
    per sample (labels (N,), a column of them (N, 1), or one-hot (N, C); a label or a
    one-hot row for a single sample, 1-D ``x``), before any layer runs. Returns
    ``(labels, onehot)`` as ``targets`` does; an empty batch is refused (``what`` is
    undefined over it)."""
    t = as_array("t", t)
    if x.ndim <= 1:  # a single sample, as the layers take it (Affine refuses a 0-d x)
        t = _batch_of_one(t)
    n = 1 if x.ndim <= 1 else x.shape[0]
    if n == 0:
        raise ValueError(f"x: empty batch (shape {x.shape}): {what} is undefined")
    if t.ndim == 2 and t.shape == (n, 1) and classes != 1:
        t = t.reshape(n)  # labels as a column: SoftmaxWithLoss's rule
    return targets(t, n, classes)


# ---------------------------------------------------------------------- the layer walk

def _getter(names):
    """``layer -> tuple`` of the attributes ``names``, in one C call."""
    get = attrgetter(*names)
    return get if len(names) > 1 else lambda layer: (get(layer),)


class _Plan:
    """What a network reads from its layer list, derived when the list holds other layer
    objects: each layer's abilities (``fastbp._protocol``) and the network key of each
    declared parameter (found by identity in ``params``)."""

    def __init__(self, layers, params):
        self.layers = layers
        found = {id(a): k for k, a in params.items()}
        takes = _protocol.takes
        self.steps = tuple((layer, takes(layer, "forward", "train_flg")) for layer in layers)
        # every declared parameter, in layer order: its layer, name, gradient, key
        declared = [(layer, name, grad, found.get(id(getattr(layer, name))))
                    for layer in layers for name, grad in _protocol.trainable(layer)]
        self.owners = tuple(d[0] for d in declared)
        self.grad_names = tuple(d[2] for d in declared)
        self.keys = tuple(d[3] for d in declared)
        self.decayed = tuple((layer, name, key) for layer, name, _, key in declared
                             if name in _protocol.decayed(layer))
        self.unbound = [(layer, name) for layer, name, _, key in declared if key is None]
        # the last layer with parameters, and its first (the weights: their last axis
        # is the number of scores)
        last = declared[-1][0] if declared else None
        self.scores = (last, _protocol.trainable(last)[0][0]) if declared else None
        backward = []
        for i, layer in enumerate(layers):
            names = tuple(name for name, _ in _protocol.trainable(layer))
            grads = tuple(grad for _, grad in _protocol.trainable(layer))
            # gradients the layer can write into given arrays: (its parameters, its
            # gradients, the keyword arguments), if it can for every one
            outs = None
            if grads and all(takes(layer, "backward", grad + "_out") for grad in grads):
                outs = (_getter(names), _getter(grads),
                        tuple(sys.intern(grad + "_out") for grad in grads))
            # the first layer skips its input gradient when it can: nobody reads it
            skip = {"need_dx": False} if i == 0 and takes(layer, "backward", "need_dx") else {}
            backward.append((i, layer, bool(grads), i > 0, skip, outs))
        self.backward = tuple(reversed(backward))  # last layer first


def _backprop(plan, dout, buffers=None, step=None, weight_decay=0.0):
    """Run ``dout`` backward through the plan's layers, last to first.

    The first layer skips its input gradient when it can (for ``TwoLayerNet`` it is a
    third of a step's arithmetic). ``step`` (an optimizer's ``layer_step``): each layer
    with parameters runs its backward through it, which updates the parameters on the
    way (``weight_decay`` for the decayed ones). ``buffers`` (a dict the caller keeps,
    for ``train_step``): each layer that can write its gradients into given arrays
    reuses those of the previous call when nothing that decides their shape and dtype
    changed, so that a steady-state step allocates no parameter-sized array.
    """
    for i, layer, trains, need_dx, skip, outs in plan.backward:
        if step is not None and trains:
            dout = step(layer, dout, need_dx, weight_decay)
        elif outs is not None and buffers is not None:
            params_of, grads_of, out_names = outs
            # what decides the gradients' shapes and dtype: the parameters (the same
            # arrays), the dtypes of dout and of the saved input
            key = (params_of(layer), getattr(dout, "dtype", None),
                   getattr(getattr(layer, "x", None), "dtype", None))
            previous = buffers.get(i)
            if previous is not None and previous[0] == key:
                dout = layer.backward(dout, **skip, **previous[1])
            else:
                dout = layer.backward(dout, **skip)
                buffers[i] = (key, dict(zip(out_names, grads_of(layer))))
        else:
            dout = layer.backward(dout, **skip)


# ---------------------------------------------------------------------- the protocol

class _Network(SaveParams):
    """What every network shares: see the module docstring. A subclass builds
    ``params``, ``layers`` and its output layer, sets ``dtype``, and calls
    ``_layers_changed()``; it may refine ``_check_input``."""

    weight_decay_lambda = 0  # MultiLayerNet's L2 penalty; none elsewhere

    # -- the layer list
    _output_name = "last_layer"  # the output layer's attribute (see output_layer)
    _modal_loss = False  # whether ``loss`` takes ``train_flg``

    def _layers_changed(self):
        """Derive the plan from the layer list (the constructors' last step)."""
        self._plan_cache = None
        self._plan()
        self._grad_buffers = {}  # train_step's gradients, reused from step to step
        self._last = None  # the loss of the last forward pass

    def _plan(self):
        """The plan of the current layer list: derived again when the list holds other
        layer objects. The keys are found when it is derived (the layers hold the
        arrays of ``params``), so rebinding an entry of ``params`` alone reaches no
        layer, as in the book."""
        layers = self.layers
        layers = tuple(layers) if isinstance(layers, (list, tuple)) else tuple(layers.values())
        plan = self._plan_cache
        if plan is None or layers != plan.layers:  # other layer objects, or another order
            plan = self._plan_cache = _Plan(layers, self.params)
            self._grad_buffers = {}
        return plan

    def _bound_plan(self, plan=None):
        """The plan (``plan``: the one a forward pass just checked), refused when a
        declared parameter is not an array of ``params`` (no key for its gradient)."""
        plan = plan or self._plan()
        if plan.unbound:
            layer, name = plan.unbound[0]
            raise ValueError(
                f"params: {type(layer).__name__}.{name} is not one of the arrays of params "
                "(the layers hold the network's arrays by reference)")
        return plan

    def _classes(self, plan=None):
        """The number of scores per sample: the width of the last weights."""
        layer, name = (plan or self._plan()).scores
        return np.shape(getattr(layer, name))[-1]

    # -- input
    def _check_input(self, x, train_flg):
        """``x`` as an array, refused here if a layer after the first would refuse it."""
        return as_array("x", x)

    def _convert(self, x):
        """Images or features narrower than the parameters take their dtype once, here,
        rather than in each layer (the book feeds float32 images to float64 weights)."""
        if x.dtype != self.dtype and x.dtype in NATIVE and x.dtype.itemsize < self.dtype.itemsize:
            return x.astype(self.dtype)
        return x

    # -- forward
    def _forward(self, x, train_flg, plan=None):
        for layer, modal in (plan or self._plan()).steps:
            x = layer.forward(x, train_flg) if modal else layer.forward(x)
        return x

    def _predict(self, x, train_flg=False):
        return self._forward(self._convert(self._check_input(x, train_flg)), train_flg)

    def _weight_decay(self):
        """``0.5 * weight_decay_lambda * sum(W**2)`` over the declared weights."""
        lam = self.weight_decay_lambda
        total = 0.0
        for layer, name, _ in self._plan().decayed:
            total += 0.5 * lam * float(np.square(getattr(layer, name), dtype=np.float64).sum())
        return total

    def _loss(self, x, t, train_flg):
        x = self._check_input(x, train_flg)
        plan = self._plan()
        layer, name = plan.scores
        _check_batch(x, t, np.shape(getattr(layer, name))[-1])
        if x.dtype is not self.dtype:
            x = self._convert(x)
        loss = getattr(self, self._output_name).forward(self._forward(x, train_flg, plan), t)
        if self.weight_decay_lambda:
            loss = loss + self._weight_decay()
        self._last = loss
        return loss

    def _training_loss(self, x, t):
        """``loss`` in training mode, through the public method (as the book's
        ``gradient`` and ``numerical_gradient`` call it, so a wrapped ``loss`` is seen)."""
        return self.loss(x, t, train_flg=True) if self._modal_loss else self.loss(x, t)

    def _last_loss(self):
        """The loss of the last forward pass (``loss``'s value, weight decay included),
        at the weights it ran with."""
        return self._last

    # -- accuracy
    def _accuracy(self, x, t, batch_size=None):
        """Fraction of the samples of ``x`` whose highest score (test mode) is their
        label, ``batch_size`` samples at a time (all at once when None)."""
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
                batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        x = self._check_input(x, False)
        labels, onehot = _check_batch(x, t, self._classes(), "the accuracy")
        if onehot is not None:
            labels = np.argmax(onehot, axis=1)
        n = labels.shape[0]
        step = n if batch_size is None or x.ndim <= 1 else batch_size
        correct = 0
        for start in range(0, n, step):
            xb = x if step == n else x[start:start + step]
            y = self._forward(self._convert(xb), False).reshape(min(step, n - start), -1)
            correct += int(np.count_nonzero(np.argmax(y, axis=1) == labels[start:start + step]))
        return np.float64(correct / n)  # a NumPy float, as the book's

    # -- gradients
    def _gradient(self, x, t, buffers=None):
        """``(loss, grads)``: the training-mode loss and its gradients."""
        if self._plan_cache.unbound:
            self._bound_plan()  # refused before the forward pass
        loss = self._training_loss(x, t)
        plan = self._plan_cache  # the plan the forward pass checked
        if plan.unbound:
            self._bound_plan(plan)
        _backprop(plan, getattr(self, self._output_name).backward(1), buffers)
        grads = dict(zip(plan.keys, map(getattr, plan.owners, plan.grad_names)))
        lam = self.weight_decay_lambda
        if lam:
            for layer, name, key in plan.decayed:
                grads[key] = grads[key] + lam * getattr(layer, name)
        return loss, grads

    def gradient(self, x, t):
        """Gradients by backpropagation (training mode), by the keys of ``params``
        (``{"W1": dW1, "b1": db1, ...}``, in the order of the layers), new arrays at
        every call, as in the book; with weight decay, ``weight_decay_lambda * W`` is in
        every weight's gradient."""
        return self._gradient(x, t)[1]

    def numerical_gradient(self, x, t):
        """Gradients by central differences (training mode), each parameter perturbed in
        place as in the book: slow, for checking ``gradient``. With dropout, fix the
        masks (a ratio of 0, or a seed) for a meaningful check."""
        keys = self._bound_plan().keys
        loss_w = lambda w: self._training_loss(x, t)  # noqa: E731 (the book's idiom)
        return {key: numerical_gradient(loss_w, self.params[key]) for key in keys}

    def train_step(self, x, t, optimizer):
        """One training step (not in the book): ``gradient``, then
        ``optimizer.update(params, grads)``, in place. Returns the batch loss at the
        weights the gradient was taken at (what ``loss`` in training mode gives before
        the step, weight decay included).

        The optimizer owns the update. One with ``layer_step`` (plain
        ``fastbp.optimizers.SGD``) applies it layer by layer during the backward pass;
        a layer that can fold it into its gradient's matrix product (``Affine``:
        ``W = W - lr * x.T @ dout``, one GEMM) keeps no gradient array, so its ``dW``
        and ``db`` are None afterwards. Any other optimizer gets the gradients in
        buffers that the next ``train_step`` reuses (the layers' ``dW``/``db`` are
        those buffers), so a steady-state step allocates no parameter-sized array.
        Arrays returned by ``gradient`` are never reused.
        """
        step = getattr(optimizer, "layer_step", None)
        if step is None:
            loss, grads = self._gradient(x, t, self._grad_buffers)
            optimizer.update(self.params, grads)
            return loss
        loss = self._training_loss(x, t)
        _backprop(self._plan_cache, getattr(self, self._output_name).backward(1), step=step,
                  weight_decay=self.weight_decay_lambda)
        return loss

    # -- saving
    def state_arrays(self):
        """What ``save_params`` saves besides ``params``: each layer's
        ``state_arrays()`` (batch normalization's ``running_mean``/``running_var``), named
        with the number of the layer's parameters (``running_mean1`` beside ``gamma1``)."""
        state = {}
        plan = self._bound_plan()
        for layer in plan.layers:
            arrays = getattr(layer, "state_arrays", None)
            if arrays is None or layer not in plan.owners:
                continue
            name, key = _protocol.trainable(layer)[0][0], plan.keys[plan.owners.index(layer)]
            suffix = key[len(name):] if key.startswith(name) else key
            for array_name, a in arrays().items():
                state[array_name + suffix] = a
        return state


# =========================================================================== chapter 5

class TwoLayerNet(_Network):
    """Affine - ReLU - Affine - SoftmaxWithLoss, as in the book's chapter 5.

    ``params`` holds ``W1``, ``b1``, ``W2``, ``b2``; the layers hold the same arrays by
    reference, so in-place updates (``params[k] -= lr * grads[k]``) train the network.
    Keyword-only extras: ``dtype`` (float64 as in the book, or float32) and ``rng``
    (a seed or ``numpy.random.Generator``; by default NumPy's global state, so
    ``np.random.seed`` works as in the book). ``save_params(path)``/``load_params(path)``
    as the book's chapter 7 and 8 networks (``.npz``, see ``fastbp.serialization``).
    """

    _output_name = "lastLayer"  # the book's name

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 *, dtype=np.float64, rng=None):
        self.dtype = dtype = _check_dtype(dtype)
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
        self._layers_changed()

    def predict(self, x):
        return self._predict(x)

    def loss(self, x, t):
        """Mean cross-entropy loss of the batch ``x`` against labels or one-hot ``t``."""
        return self._loss(x, t, False)

    def accuracy(self, x, t):
        """Fraction of ``x`` classified as ``t`` (labels or one-hot)."""
        return self._accuracy(x, t)


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


class _MultiLayer(_Network):
    """Shared body of MultiLayerNet and MultiLayerNetExtend (see their docstrings)."""

    _modal_loss = True

    def __init__(self, input_size, hidden_size_list, output_size, activation,
                 weight_init_std, weight_decay_lambda, use_dropout, dropout_ration,
                 use_batchnorm, dtype, rng):
        dtype = _check_dtype(dtype)
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
        self._layers_changed()

    def _check_input(self, x, train_flg):
        x = as_array("x", x)
        if self.use_batchnorm:  # what BatchNormalization would refuse after Affine1 ran
            if x.ndim < 2:
                raise ValueError(f"x: expected a batch of shape (N, {self.input_size}) "
                                 f"(batch normalization needs one), got shape {x.shape}")
            if train_flg and x.shape[0] == 0:
                raise ValueError(f"x: empty batch (shape {x.shape}): the batch statistics "
                                 "are undefined")
        return x

    def predict(self, x, train_flg=False):
        """Scores (N, output_size) before the softmax; ``train_flg`` switches dropout and
        batch normalization to training mode."""
        return self._predict(x, train_flg)

    def loss(self, x, t, train_flg=False):
        """Mean cross-entropy of the batch plus the weight decay
        ``0.5 * weight_decay_lambda * sum(W**2)`` over every weight matrix."""
        return self._loss(x, t, train_flg)

    def accuracy(self, x, t):
        """Fraction of ``x`` classified as ``t`` (labels or one-hot), in test mode."""
        return self._accuracy(x, t)



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
# - images must have the shape ``input_dim`` the network was built for (the book's
#   accepts other sizes that happen to flatten to the same width);
# - the first convolution skips its input gradient in ``gradient`` (nobody reads it);
# - ``save_params``/``load_params`` are fastbp's (``fastbp.serialization``): a ``.npz``,
#   loaded in place; the book's pickled weights (``.pkl``) load without running code.

_CONV_KEYS = ("filter_num", "filter_size", "pad", "stride")


def _input_dim(input_dim):
    """``input_dim`` as a tuple of three positive ints (C, H, W)."""
    try:
        dims = tuple(input_dim)
        if len(dims) != 3:
            raise ValueError
        return tuple(window_int("input_dim", d, 1) for d in dims)
    except (TypeError, ValueError):
        raise ValueError(f"input_dim: expected (channels, height, width), three positive "
                         f"integers, got {input_dim!r}") from None


def _conv_param(name, cp):
    """``(filter_num, filter_size, stride, pad)`` of the book's ``conv_param`` dict."""
    if not isinstance(cp, Mapping):
        raise TypeError(f"{name}: expected a dict with keys {', '.join(_CONV_KEYS)}, got {cp!r}")
    missing = [k for k in _CONV_KEYS if k not in cp]
    if missing:
        raise ValueError(f"{name}: missing {', '.join(missing)} (got {dict(cp)!r})")
    try:
        return (window_int("filter_num", cp["filter_num"], 1),
                window_int("filter_size", cp["filter_size"], 1),
                window_int("stride", cp["stride"], 1), window_int("pad", cp["pad"], 0))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def _window_out(input_dim, what, hw, size, stride, pad):
    """The (height, width) after a ``size`` x ``size`` window on an ``hw`` image (the
    kernels' own rule, ``_checks.image_shape``); refused, naming ``input_dim`` and the
    window, when it does not fit."""
    try:
        return image_shape("x", (1, 1) + hw, size, size, stride, pad)[4:]
    except ValueError:
        raise ValueError(
            f"input_dim: {input_dim} is too small for this network: {what} (a {size}x{size} "
            f"window, stride {stride}, pad {pad}) has no room in the {hw[0]}x{hw[1]} image it gets"
        ) from None


class _ConvNet(_Network):
    """What the CNNs share: images of shape ``input_dim``, checked before any layer."""

    def _check_input(self, x, train_flg):
        x = as_array("x", x)
        if x.shape[1:] != self.input_dim or x.ndim != 4:
            expected = (("N",) + self.input_dim).__repr__().replace("'", "")
            hint = ""
            if x.ndim == 2 and x.shape[1] == math.prod(self.input_dim):
                hint = (": a flattened batch; load the images with load_mnist(flatten=False), "
                        f"or reshape them to (-1, {', '.join(map(str, self.input_dim))})")
            raise ValueError(f"x: expected images of shape {expected} (the network's input_dim "
                             f"{self.input_dim}), got shape {x.shape}{hint}")
        return x

    def _convert(self, x):
        if x.dtype == np.float16:  # the book's ch08/half_float_network.py: computed wider
            return x.astype(self.dtype)
        return super()._convert(x)


class SimpleConvNet(_ConvNet):
    """conv - relu - pool - affine - relu - affine - softmax, the book's chapter 7.

    ``params`` holds ``W1`` (filter_num, C, filter_size, filter_size), ``b1``, ``W2``,
    ``b2``, ``W3``, ``b3``, drawn in the book's order (so ``np.random.seed`` gives the
    book's weights); ``layers`` is an ``OrderedDict`` with the book's names (``Conv1``,
    ``Relu1``, ``Pool1``, ``Affine1``, ``Relu2``, ``Affine2``); the layers hold the
    parameter arrays by reference. Images are (N, C, H, W) of ``input_dim`` (C, H, W);
    float16 images are computed in the network's dtype. Keyword-only extras as
    ``TwoLayerNet``: ``dtype`` and ``rng``.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01,
                 *, dtype=np.float64, rng=None):
        self.dtype = dtype = _check_dtype(dtype)
        self.input_dim = input_dim = _input_dim(input_dim)
        filter_num, filter_size, stride, pad = _conv_param("conv_param", conv_param)
        channels, height, width = input_dim
        conv = _window_out(input_dim, "the filters of conv_param", (height, width),
                           filter_size, stride, pad)
        pool = _window_out(input_dim, "the 2x2 pooling", conv, 2, 2, 0)
        pool_output_size = filter_num * pool[0] * pool[1]

        randn = _normal(None if rng is None else np.random.default_rng(rng))
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
        self._layers_changed()

    def predict(self, x):
        return self._predict(x)

    def loss(self, x, t):
        """Mean cross-entropy of the batch ``x`` against labels or one-hot ``t``."""
        return self._loss(x, t, False)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` classified as ``t``, ``batch_size`` images at a time."""
        return self._accuracy(x, t, batch_size)


class DeepConvNet(_ConvNet):
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

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_2={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_3={"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_4={"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
                 conv_param_5={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
                 conv_param_6={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
                 hidden_size=50, output_size=10, *, dtype=np.float64, rng=None):
        self.dtype = dtype = _check_dtype(dtype)
        self.input_dim = input_dim = _input_dim(input_dim)
        conv_params = [_conv_param(f"conv_param_{idx}", cp) for idx, cp in enumerate(
            (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
             conv_param_6), 1)]
        channels, hw = input_dim[0], input_dim[1:]
        for idx, (filter_num, size, stride, pad) in enumerate(conv_params, 1):
            hw = _window_out(input_dim, f"the filters of conv_param_{idx}", hw, size, stride, pad)
            if idx % 2 == 0:  # a 2x2 pooling after every second convolution
                hw = _window_out(input_dim, f"the pooling after conv_param_{idx}", hw, 2, 2, 0)
            channels = filter_num
        flat = channels * hw[0] * hw[1]

        gen = None if rng is None else np.random.default_rng(rng)
        randn = _normal(gen)
        self.params = {}
        channels = input_dim[0]
        for idx, (filter_num, size, _, _) in enumerate(conv_params, 1):
            scale = np.sqrt(2.0 / (channels * size * size))  # He, for ReLU
            self.params[f"W{idx}"] = (scale * randn(filter_num, channels, size, size)).astype(dtype)
            self.params[f"b{idx}"] = np.zeros(filter_num, dtype=dtype)
            channels = filter_num
        self.params["W7"] = (np.sqrt(2.0 / flat) * randn(flat, hidden_size)).astype(dtype)
        self.params["b7"] = np.zeros(hidden_size, dtype=dtype)
        self.params["W8"] = (np.sqrt(2.0 / hidden_size) * randn(hidden_size, output_size)).astype(dtype)
        self.params["b8"] = np.zeros(output_size, dtype=dtype)

        def dropout():
            child = None if gen is None else np.random.default_rng(gen.integers(2**63))
            return Dropout(0.5, inverted=False, rng=child)

        self.layers = []
        for idx, (_, _, stride, pad) in enumerate(conv_params, 1):
            self.layers.append(Convolution(self.params[f"W{idx}"], self.params[f"b{idx}"],
                                           stride, pad))
            self.layers.append(Relu())
            if idx % 2 == 0:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers.append(Affine(self.params["W7"], self.params["b7"]))
        self.layers.append(Relu())
        self.layers.append(dropout())
        self.layers.append(Affine(self.params["W8"], self.params["b8"]))
        self.layers.append(dropout())
        self.last_layer = SoftmaxWithLoss()
        self._layers_changed()

    def predict(self, x, train_flg=False):
        return self._predict(x, train_flg)

    def loss(self, x, t):
        """Mean cross-entropy of the batch, in training mode (dropout on)."""
        return self._loss(x, t, True)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` classified as ``t`` (test mode), ``batch_size`` at a time."""
        return self._accuracy(x, t, batch_size)


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
