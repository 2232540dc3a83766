"""The optimizers of "Deep Learning from Scratch", chapter 6 (the book's ``common/optimizer.py``).

``SGD``, ``Momentum``, ``Nesterov``, ``AdaGrad``, ``RMSprop`` and ``Adam`` with the
book's constructors and ``update(params, grads)``: every array in ``params`` is updated
**in place** (the layers hold the same arrays by reference), with the book's formulas
in the book's order of operations. Each parameter is updated by one kernel call of the
active backend (``fastbp.kernels``): the compiled kernel is a single fused pass over the
parameter, its gradient and its state, and allocates nothing. The state buffers (``v``,
``h``, ``m``) are created on the first update, one per parameter, and are updated in
place after that (the book rebinds new arrays at every step).

A parameter that is not an array (a Python or NumPy number, as in the book's
``optimizer_compare_naive.py``, where ``params = {'x': -7.0, 'y': 2.0}``) cannot be
updated in place: as in the book, ``params[key]`` is rebound to the new value (a NumPy
float64), computed with the same formulas; its state is kept by the optimizer.

Precision: a float64 parameter follows the book's formulas to the last bit. A float32
parameter is updated in float32 arithmetic, with the hyperparameters (and Adam's
``lr_t``) rounded to float32 once; the book on NumPy 2 computes Adam's float32 step in
float64 (its ``lr_t`` is a NumPy float64), so the two can differ in the last bit.
"""
import math
import numbers

import numpy as np

from . import _protocol
from . import kernels as _kernels

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "OPTIMIZERS", "get_optimizer"]

EPS = 1e-7  # the book's constant in the AdaGrad, RMSprop and Adam denominators


def _real(name, value):
    """A hyperparameter: a real number (not a string, not None), returned as given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    return value


def _state(store, key, p):
    """The state buffer of parameter ``p`` (``params[key]``), created (zeros, C-ordered)
    on first use."""
    buf = store.get(key)
    if buf is None:
        buf = store[key] = np.zeros(np.shape(p), dtype=p.dtype)
    return buf


def _each(params, update):
    """Call ``update(key, param)`` for every parameter, in the dict's order.

    An array is updated in place by ``update`` (the layers see it). A number (the book
    optimizes plain floats too) is immutable: it is updated as a 0-d float64 array and
    ``params[key]`` is rebound to the result, which is what the book's
    ``params[key] -= ...`` does for a number.
    """
    for key in params.keys():
        p = params[key]
        if isinstance(p, np.ndarray):
            update(key, p)
        elif isinstance(p, numbers.Real) and not isinstance(p, bool):  # np.bool_ is not Real
            p = np.array(p, dtype=np.float64)
            update(key, p)
            params[key] = p[()]
        else:
            raise TypeError(f"params[{key!r}]: expected an ndarray or a real number, "
                            f"got {type(p).__name__}")


class SGD:
    """Stochastic gradient descent: ``W -= lr * dW``.

    Not in the book: ``layer_step``, the same update applied layer by layer during the
    backward pass, which a network's ``train_step`` uses (see its docstring). A
    subclass that overrides ``update`` has no ``layer_step`` unless it defines one, so
    that its own rule is the one that runs.
    """

    state_names = ()  # what a checkpoint saves (fastbp.distributed.checkpoints)

    def __init__(self, lr=0.01):
        self.lr = _real("lr", lr)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "update" in vars(cls) and "layer_step" not in vars(cls):
            cls.layer_step = None

    def update(self, params, grads):
        k = _kernels.active()
        _each(params, lambda key, p: k.sgd_update(p, grads[key], self.lr))

    def layer_step(self, layer, dout, need_dx=True, weight_decay=0.0):
        """Backward through ``layer`` and this update of its parameters in one:
        ``p -= lr * (dp + weight_decay * p)`` for the parameters it declares decayed,
        ``p -= lr * dp`` for the others (see ``fastbp._protocol``). Returns ``dx``
        (None when ``need_dx`` is false and the layer can skip it).

        A layer with ``backward_sgd`` (``Affine``) folds the weight step into its
        gradient's matrix product, ``W = (1 - lr * weight_decay) * W - lr * x.T @ dout``:
        no gradient array, no separate pass. Any other layer runs its ``backward`` and
        its parameters are updated right after; the layers below never read them, so
        this is the book's update after the whole backward pass.
        """
        fused = getattr(layer, "backward_sgd", None)
        if fused is not None:
            return fused(dout, self.lr, weight_decay, need_dx=need_dx)
        dx = _protocol.backward(layer, dout, need_dx)
        k = _kernels.active()
        for name, grad_name in _protocol.trainable(layer):
            p, grad = getattr(layer, name), getattr(layer, grad_name)
            if weight_decay and name in _protocol.decayed(layer):
                grad = grad + weight_decay * p
            k.sgd_update(p, grad, self.lr)
        return dx


class Momentum:
    """Momentum SGD: ``v = momentum * v - lr * dW; W += v``. ``v`` is a dict of arrays."""

    state_names = ("v",)  # what a checkpoint saves (fastbp.distributed.checkpoints)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = _real("lr", lr)
        self.momentum = _real("momentum", momentum)
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = {}
        k = _kernels.active()
        _each(params, lambda key, p: k.momentum_update(
            p, grads[key], _state(self.v, key, p), self.lr, self.momentum))


class Nesterov:
    """Nesterov's accelerated gradient as Bengio, Boulanger-Lewandowski and Pascanu give
    it ("Advances in optimizing recurrent networks", arXiv:1212.0901, eq. 7), which is
    the book's ``common/optimizer.py`` since its "Fix Nesterov update function": the
    parameter moves with the velocity of the step before,
    ``W += momentum**2 * v; W -= (1 + momentum) * lr * dW; v = momentum * v - lr * dW``."""

    state_names = ("v",)  # what a checkpoint saves (fastbp.distributed.checkpoints)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = _real("lr", lr)
        self.momentum = _real("momentum", momentum)
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = {}
        k = _kernels.active()
        _each(params, lambda key, p: k.nesterov_update(
            p, grads[key], _state(self.v, key, p), self.lr, self.momentum))


class AdaGrad:
    """AdaGrad: ``h += dW * dW; W -= lr * dW / (sqrt(h) + 1e-7)``."""

    state_names = ("h",)  # what a checkpoint saves (fastbp.distributed.checkpoints)

    def __init__(self, lr=0.01):
        self.lr = _real("lr", lr)
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = {}
        k = _kernels.active()
        _each(params, lambda key, p: k.adagrad_update(
            p, grads[key], _state(self.h, key, p), self.lr, EPS))


class RMSprop:
    """RMSprop: ``h = decay_rate * h + (1 - decay_rate) * dW * dW;
    W -= lr * dW / (sqrt(h) + 1e-7)``."""

    state_names = ("h",)  # what a checkpoint saves (fastbp.distributed.checkpoints)

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = _real("lr", lr)
        self.decay_rate = _real("decay_rate", decay_rate)
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = {}
        k = _kernels.active()
        _each(params, lambda key, p: k.rmsprop_update(
            p, grads[key], _state(self.h, key, p), self.lr, self.decay_rate, EPS))


class Adam:
    """Adam (arXiv:1412.6980) in the book's form.

    ``iter`` counts the updates; each step uses
    ``lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter)`` and, per parameter,
    ``m += (1 - beta1) * (dW - m); v += (1 - beta2) * (dW**2 - v);
    W -= lr_t * m / (sqrt(v) + 1e-7)``.
    """

    state_names = ("iter", "m", "v")  # what a checkpoint saves (fastbp.distributed.checkpoints)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = _real("lr", lr)
        self.beta1 = _real("beta1", beta1)
        self.beta2 = _real("beta2", beta2)
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m, self.v = {}, {}
        self.iter += 1
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        k = _kernels.active()
        _each(params, lambda key, p: k.adam_update(
            p, grads[key], _state(self.m, key, p), _state(self.v, key, p),
            lr_t, self.beta1, self.beta2, EPS))


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def get_optimizer(name, **params):
    """An optimizer by its case-insensitive name (``"SGD"``, ``"Adam"``, ...)."""
    try:
        cls = OPTIMIZERS[str(name).lower()]
    except KeyError:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {name!r}") from None
    return cls(**params)
