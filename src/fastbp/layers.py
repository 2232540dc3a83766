"""The layers of "Deep Learning from Scratch", chapter 5, with the book's API.

Same constructors, ``forward``/``backward`` methods and attributes as the book's
``common/layers.py``, so ``from fastbp.layers import *`` can replace
``from common.layers import *``. The layers are thin: they keep the book's state and
call the active kernel backend (see ``fastbp.kernels``).

State on error: a ``forward`` or ``backward`` that raises leaves the layer exactly as it
was (every layer checks and computes into locals, and sets its attributes only once
nothing can fail), and an inference pass (``train_flg=False``) leaves the state of the
last training pass alone, so ``backward`` always pairs with the last successful
training-mode ``forward``.

Where fastbp differs from the book, on purpose:
- ``Relu.backward`` does not write into the caller's ``dout``.
- ``SoftmaxWithLoss`` computes the exact loss from log-softmax (no ``1e-7`` inside the
  log), so loss and gradient agree; it takes a single sample (1-D ``x``) too, and its
  ``backward`` multiplies by ``dout``.
- ``Affine`` takes a single sample (1-D ``x``) too; ``dx`` has the input's shape.
"""
import math

import numpy as np

from . import kernels as _kernels
from .kernels._checks import NATIVE, as_array, common_dtype, float_array, float_dtype

__all__ = ["MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss"]


def _forward_first(layer):
    return RuntimeError(f"{type(layer).__name__}.backward called before forward")


def _check_dout(dout, shape):
    """``dout`` must have the shape of the last forward's output (cheap when it has)."""
    if getattr(dout, "shape", None) != shape:
        got = as_array("dout", dout).shape
        if got != shape:
            raise ValueError(
                f"dout: expected shape {shape} (the output of the last forward), got {got}"
            )


def _batch_of_one(t):
    """The target of a single sample as a batch of one: a label () -> (1,), a one-hot
    row (C,) -> (1, C)."""
    return t.reshape(1, -1) if t.ndim == 1 else t.reshape(1) if t.ndim == 0 else t


class MulLayer:
    """``out = x * y``; ``backward`` gives ``(dout * y, dout * x)``."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        out = x * y  # may raise (shapes that do not broadcast): before any state is set
        self.x, self.y = x, y
        return out

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
        _check_dout(dout, self.mask.shape)
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
        _check_dout(dout, self.out.shape)
        return _kernels.active().sigmoid_backward(dout, self.out)


class Affine:
    """Fully connected layer ``out = x @ W + b``.

    ``W`` (D, M) and ``b`` (M,) are held by reference, never copied: updating
    ``W`` or ``b`` in place (``params[k] -= lr * grad``, ``numerical_gradient``'s
    perturbation) reaches the layer. ``x`` of any shape (N, ...) is flattened to
    (N, D) per sample; ``backward`` returns ``dx`` in the input's shape and sets
    ``dW`` and ``db``.
    """

    #: what a network trains (parameter, its gradient) and decays: see fastbp._protocol
    trainable = (("W", "dW"), ("b", "db"))
    decayed = ("W",)

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
        # refuse float16, complex, object... here rather than deep in backward
        if W.dtype not in NATIVE:
            float_dtype("W", W)
        if getattr(b, "dtype", None) not in NATIVE:
            float_dtype("b", as_array("b", b))
        return W, b

    def forward(self, x):
        W, b = self.W, self.b
        if (type(x) is np.ndarray and type(W) is np.ndarray and type(b) is np.ndarray
                and x.ndim == 2 and W.ndim == 2 and b.ndim == 1 and W.dtype in NATIVE
                and x.dtype == W.dtype and b.dtype == W.dtype and x.shape[1] == W.shape[0]
                and b.shape[0] == W.shape[1] and x.flags.c_contiguous):
            # the common case, checked cheaply: at the book's batch of 100 the general
            # path below costs as much as the small layer's matrix product
            out = _kernels.active().affine_forward(x, W, b)
            self.x, self.original_x_shape = x, x.shape
            return out
        return self._forward_checked(x)

    def _forward_checked(self, x):
        W, b = self._check_params()
        x = as_array("x", x)
        if x.ndim == 0:
            raise ValueError(f"x: expected shape (N, {W.shape[0]}) or ({W.shape[0]},), got ()")
        # explicit sizes, not -1: an empty batch (0, ...) must reshape too
        x2 = x.reshape(1, x.size) if x.ndim == 1 else x.reshape(x.shape[0], math.prod(x.shape[1:]))
        if x2.shape[1] != W.shape[0]:
            raise ValueError(
                f"x: expected {W.shape[0]} features per sample (W has shape {W.shape}), "
                f"got input of shape {x.shape}"
            )
        # x takes the parameters' precision here, once, rather than in every backward
        # (the book feeds float32 images to float64 weights)
        x2 = float_array("x", x2, common_dtype(("x", x2), ("W", W)))
        if getattr(b, "dtype", None) == x2.dtype:
            out = _kernels.active().affine_forward(x2, W, b)
        else:  # float32 out with a float64 b (or a list): NumPy's promotion, as ``x @ W + b``
            out = np.matmul(x2, W) + b
        # state is set only once the forward has succeeded: a failed forward must not
        # leave a backward working on a mix of the old and the new input
        self.x, self.original_x_shape = x2, x.shape
        return out[0] if x.ndim == 1 else out

    def backward(self, dout, need_dx=True, dW_out=None, db_out=None):
        """Set ``dW`` and ``db``; return ``dx`` in the input's shape.

        Not in the book: ``need_dx=False`` skips ``dx = dout @ W.T`` and returns None
        (a network's first layer never uses it, and it is a third of the arithmetic
        of ``TwoLayerNet``'s training step); ``dW_out``/``db_out`` are arrays to write
        the gradients into instead of new ones (``train_step`` reuses its buffers).
        """
        if self.x is None:
            raise _forward_first(self)
        dout = as_array("dout", dout)
        if len(self.original_x_shape) == 1 and dout.ndim == 1:
            dout = dout.reshape(1, -1)
        dx, self.dW, self.db = _kernels.active().affine_backward(dout, self.x, self.W, need_dx,
                                                                 dW_out, db_out)
        return None if dx is None else dx.reshape(self.original_x_shape)

    def backward_sgd(self, dout, lr, weight_decay=0.0, need_dx=True):
        """``backward`` and an SGD step in one (not in the book): returns ``dx`` (computed
        with the old ``W``; None without ``need_dx``) and updates ``W`` and ``b`` in
        place, ``W -= lr * (dW + weight_decay * W)``, ``b -= lr * db``, with the weight
        step folded into the gradient's matrix product. ``dW`` and ``db`` are not kept
        (they are set to None): this is what ``train_step`` runs for plain SGD.
        """
        if self.x is None:
            raise _forward_first(self)
        dout = as_array("dout", dout)
        if len(self.original_x_shape) == 1 and dout.ndim == 1:
            dout = dout.reshape(1, -1)
        dx = _kernels.active().affine_backward_sgd(dout, self.x, self.W, self.b, lr,
                                                   weight_decay, need_dx)
        self.dW = self.db = None
        return None if dx is None else dx.reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss, fused.

    ``t`` holds integer labels (N,) (or a column (N, 1) of them) or one-hot targets
    (N, C). ``forward`` returns the loss (a scalar of ``x``'s dtype) and keeps ``loss``,
    ``y`` (the probabilities) and ``t``; ``backward(dout=1)`` returns
    ``(y - onehot(t)) * dout / N``.
    """

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None
        self._single = False

    def forward(self, x, t):
        x = as_array("x", x)
        t = as_array("t", t)
        single = x.ndim == 1
        if single:  # one sample: a batch of one
            x, t = x.reshape(1, -1), _batch_of_one(t)
        if t.ndim == 2 and t.shape == (x.shape[0], 1) and x.shape[1] != 1:
            t = t.reshape(-1)  # labels as a column, as the book's ch07/gradient_check.py passes them
        loss, y = _kernels.active().softmax_cross_entropy(x, t)
        if single:
            y, t = y[0], t[0]
        self.loss, self.y, self.t, self._single = loss, y, t, single  # only after success
        return loss

    def backward(self, dout=1):
        if self.y is None:
            raise _forward_first(self)
        y, t = self.y, self.t
        if self._single:
            y, t = y.reshape(1, -1), _batch_of_one(t)
        dx = _kernels.active().softmax_cross_entropy_backward(y, t, dout)
        return dx[0] if self._single else dx


# =========================================================================== chapter 6
# Dropout and BatchNormalization (the book's chapter 6). Where they differ from the
# book, on purpose (docs/chapter6.md says more):
# - Dropout follows the book by default: kept units pass unscaled at training time and
#   the test-time forward scales by (1 - dropout_ratio). ``inverted=True`` gives
#   inverted dropout instead (kept units scaled by 1 / (1 - dropout_ratio) at training
#   time, the identity at test time, as PyTorch and Keras do): the same expected
#   activation, so a network trained from scratch learns the same function, but the
#   numbers printed along the way differ.
# - BatchNormalization keeps the book's epsilon (1e-6, written ``10e-7`` there), so
#   ported code gets the book's numbers; ``eps=`` changes it. Its running statistics
#   are updated in place, in the input's dtype, and arrays passed to the constructor
#   are copied first, so the caller's arrays are never written to.

def _uniform(rng, shape, dtype):
    """Uniform draws in [0, 1): NumPy's global state (the book's ``np.random.rand``,
    so ``np.random.seed`` gives the book's masks) or a ``numpy.random.Generator``."""
    if rng is None:
        return np.random.rand(*shape)
    return rng.random(shape, dtype=dtype)


class Dropout:
    """Dropout (arXiv:1207.0580): ``forward(x, train_flg=True)``, ``backward(dout)``.

    At training time each unit is kept where a uniform draw exceeds ``dropout_ratio``
    (``mask``, a bool array of ``x``'s shape), and passed unscaled (the book's dropout,
    the default) or scaled by ``1 / (1 - dropout_ratio)`` (``inverted=True``). At test
    time the forward returns ``x * (1 - dropout_ratio)`` (book) or ``x`` itself
    (inverted).
    ``rng``: a seed or ``numpy.random.Generator`` for the masks; by default NumPy's
    global state, drawn exactly as the book does.
    """

    def __init__(self, dropout_ratio=0.5, *, inverted=False, rng=None):
        self.dropout_ratio = dropout_ratio
        self.inverted = bool(inverted)
        self.rng = None if rng is None else np.random.default_rng(rng)
        self._check_ratio()
        self.mask = None
        self._scale = 1.0

    def _check_ratio(self):
        r = self.dropout_ratio
        ok = isinstance(r, (int, float, np.floating, np.integer)) and not isinstance(r, bool)
        # inverted dropout divides by the kept fraction 1 - r, which must not be 0
        if not (ok and (0 <= r < 1 if self.inverted else 0 <= r <= 1)):
            interval = "[0, 1)" if self.inverted else "[0, 1]"
            raise ValueError(f"dropout_ratio: expected a number in {interval}, got {r!r}")
        return float(r)

    def forward(self, x, train_flg=True):
        ratio = self._check_ratio()
        x = as_array("x", x)
        if train_flg:
            x = float_array("x", x)
            scale = 1.0 / (1.0 - ratio) if self.inverted else 1.0
            u = _uniform(self.rng, x.shape, x.dtype)
            out, mask = _kernels.active().dropout_forward(x, u, ratio, scale)
            self.mask, self._scale = mask, scale  # only after success
            return out
        if self.inverted:
            return x
        x = float_array("x", x)
        return x * x.dtype.type(1.0 - ratio)

    def backward(self, dout):
        if self.mask is None:
            raise _forward_first(self)
        _check_dout(dout, self.mask.shape)
        return _kernels.active().dropout_backward(dout, self.mask, self._scale)


class BatchNormalization:
    """Batch normalization (arXiv:1502.03167) over the features of ``x`` (N, ...).

    ``gamma`` and ``beta`` (D,) are held by reference (in-place updates reach the
    layer); D is the number of features per sample (an (N, C, H, W) input is
    flattened to (N, C*H*W), as in the book). ``forward(x, train_flg=True)``
    normalizes with the batch statistics and updates ``running_mean``/``running_var``
    (``r = momentum * r + (1 - momentum) * stat``, biased variance, starting from zeros
    as in the book) in place; with ``train_flg=False`` it uses the running statistics.
    ``backward(dout)`` returns ``dx`` in the input's shape and sets ``dgamma``,
    ``dbeta``; it uses the last training-mode forward. ``eps`` is the book's 1e-6.

    ``input_shape``, ``batch_size``, ``xn`` and ``std`` are the last training-mode
    forward's: a test-mode forward changes nothing in the layer (the book's sets
    ``input_shape`` and creates the running statistics there too); before any
    training-mode forward it uses zeros for both statistics, as the book's.
    """

    #: what a network trains (parameter, its gradient): see fastbp._protocol
    trainable = (("gamma", "dgamma"), ("beta", "dbeta"))
    decayed = ()

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None,
                 *, eps=1e-6):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.eps = eps
        self.input_shape = None
        # copies: the running statistics are updated in place, never the caller's arrays
        self.running_mean = None if running_mean is None else np.array(running_mean, dtype=float)
        self.running_var = None if running_var is None else np.array(running_var, dtype=float)
        self.batch_size = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def _stats(self, d, dtype):
        """The running statistics as writable C-ordered (d,) arrays of ``dtype``: the
        layer's own when they are already that, else new ones (zeros at first) that
        ``forward`` keeps once it has succeeded."""
        stats = []
        for name in ("running_mean", "running_var"):
            r = getattr(self, name)
            if r is None:
                r = np.zeros(d, dtype=dtype)
            elif not (isinstance(r, np.ndarray) and r.dtype == dtype and r.flags.c_contiguous
                      and r.flags.writeable):
                r = np.array(r, dtype=dtype)
            if r.shape != (d,):
                raise ValueError(f"{name}: expected shape ({d},), got {r.shape}")
            stats.append(r)
        return stats

    def state_arrays(self):
        """The running statistics by name, as a network saves them (not trained, but
        test-mode predictions use them). Created here (zeros, ``gamma``'s dtype) if no
        training-mode forward has run; the layer keeps and updates these arrays."""
        gamma = np.asarray(self.gamma)
        self.running_mean, self.running_var = self._stats(gamma.shape[0], gamma.dtype)
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def forward(self, x, train_flg=True):
        x = float_array("x", x)
        if x.ndim < 2:
            raise ValueError(f"x: expected a batch of shape (N, D) or (N, ...), got shape {x.shape}")
        x2 = x.reshape(x.shape[0], math.prod(x.shape[1:]))
        d = np.shape(self.gamma)
        if d != x2.shape[1:]:  # said in terms of x, before the statistics are looked at
            raise ValueError(f"x: expected {d[0] if len(d) == 1 else d} features per sample "
                             f"(gamma has shape {d}), got input of shape {x.shape}")
        k = _kernels.active()
        if not train_flg:
            zeros = np.zeros(x2.shape[1], x2.dtype)  # nothing learnt yet: the book's zeros
            rm = zeros if self.running_mean is None else self.running_mean
            rv = zeros if self.running_var is None else self.running_var
            out = k.batchnorm_inference(x2, self.gamma, self.beta, rm, rv, self.eps)
            return out.reshape(x.shape)
        rm, rv = self._stats(x2.shape[1], x2.dtype)
        # the kernel checks everything before it updates rm and rv in place
        out, xn, std = k.batchnorm_forward(x2, self.gamma, self.beta, rm, rv,
                                           self.momentum, self.eps)
        # this pass's state, for backward, only now that nothing can fail
        self.running_mean, self.running_var = rm, rv
        self.input_shape, self.batch_size, self.xn, self.std = x.shape, x2.shape[0], xn, std
        return out.reshape(x.shape)

    def backward(self, dout):
        if self.xn is None:
            raise _forward_first(self)
        _check_dout(dout, self.input_shape)
        dout = as_array("dout", dout)
        d2 = dout.reshape(self.xn.shape)
        dx, dgamma, dbeta = _kernels.active().batchnorm_backward(d2, self.xn, self.std, self.gamma)
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx.reshape(self.input_shape)


__all__ += ["Dropout", "BatchNormalization"]


# =========================================================================== chapter 7
# Convolution and Pooling (the book's chapter 7), NCHW. Where they differ from the book,
# on purpose (docs/chapter7.md says more):
# - float16 input is accepted by ``forward`` and computed in float32 (the book's
#   ch08/half_float_network.py feeds float16 images); the kernels themselves refuse it.
# - ``Convolution.forward`` returns a C-contiguous (N, FN, out_h, out_w) array (the
#   book's is a transposed view); ``backward(dout, need_dx=False)`` skips dx, which a
#   network's first layer never uses (most of a SimpleConvNet backward pass).
# - ``Pooling`` pads with -inf (padding never wins the max; the book's pads with zeros
#   and then fails on the output shape), and ``pad`` must be smaller than the window.
# - A forward or backward that raises leaves the layer's state as it was.


def _image_input(x, name="x"):
    """``x`` as an array; float16 becomes float32 (inference on half-precision data)."""
    x = as_array(name, x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


class Convolution:
    """Convolution with filters ``W`` (FN, C, FH, FW) and bias ``b`` (FN,) (or a scalar).

    ``W`` and ``b`` are held by reference, never copied. ``forward`` keeps ``x`` (in the
    computation's dtype) for ``backward``, which sets ``dW`` (W's shape) and ``db``
    (FN,) and returns ``dx``. The kernels (``conv_forward``, ``conv_backward``) lower
    the images a block at a time instead of keeping the book's batch-sized ``col``:
    ``col`` (the book's ``im2col`` of ``x``) and ``col_W`` (``W.reshape(FN, -1).T``, a
    view of ``W``) are still there for code that reads them, ``col`` computed when it
    is first read.
    """

    #: what a network trains (parameter, its gradient) and decays: see fastbp._protocol
    trainable = (("W", "dW"), ("b", "db"))
    decayed = ("W",)

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col_W = None
        self.dW = None
        self.db = None
        self._col = None
        self._out_shape = None
        self._geometry = None
        self._W_shape = None

    @property
    def col(self):
        """The book's ``im2col(x)`` of the last forward's input (computed on first read)."""
        if self._col is None and self.x is not None:
            fh, fw, stride, pad = self._geometry
            self._col = _kernels.active().im2col(self.x, fh, fw, stride, pad)
        return self._col

    @col.setter
    def col(self, value):
        self._col = value

    def _check_params(self):
        W, b = self.W, self.b
        if not isinstance(W, np.ndarray) or W.ndim != 4:
            raise ValueError(f"W: expected a 4-D array (FN, C, FH, FW), got shape {np.shape(W)}")
        float_dtype("W", W)
        if np.shape(b) not in ((W.shape[0],), ()):
            raise ValueError(f"b: expected shape ({W.shape[0]},) or a scalar, got {np.shape(b)}")
        if getattr(b, "dtype", None) not in NATIVE:
            float_dtype("b", as_array("b", b))
        return W, b

    def forward(self, x):
        W, b = self._check_params()
        x = _image_input(x)
        if x.ndim != 4 or x.shape[1] != W.shape[1]:
            raise ValueError(
                f"x: expected shape (N, {W.shape[1]}, H, W) (W has shape {W.shape}), got {x.shape}"
            )
        fn, _, fh, fw = W.shape
        dtype = common_dtype(("x", x), ("W", W))
        if np.ndim(b) == 0:  # a scalar bias (the book's ch07/apply_filter.py passes 0)
            b = np.full(fn, b, np.result_type(dtype, getattr(b, "dtype", dtype)))
        # converted once here (float32 images, float64 weights) and kept for backward
        x = float_array("x", x, np.result_type(dtype, b.dtype))
        out = _kernels.active().conv_forward(x, W, b, self.stride, self.pad)
        self.x, self._col, self.col_W = x, None, W.reshape(fn, -1).T
        self._out_shape, self._geometry = out.shape, (fh, fw, self.stride, self.pad)
        self._W_shape = W.shape
        return out

    def backward(self, dout, need_dx=True):
        """Set ``dW`` and ``db``; return ``dx`` (the input's shape), or None when
        ``need_dx`` is false (not in the book)."""
        if self.x is None:
            raise _forward_first(self)
        _check_dout(dout, self._out_shape)
        _, _, stride, pad = self._geometry
        # the filters of the forward pass (as the book's col_W, a view of them)
        W = self.col_W.T.reshape(self._W_shape)
        dx, dW, db = _kernels.active().conv_backward(dout, self.x, W, stride, pad, need_dx)
        self.dW, self.db = dW, db
        return dx


def _is_2x2(layer):
    """The book's pooling (2x2 windows, stride 2, no padding): its own kernels."""
    g = (layer.pool_h, layer.pool_w, layer.stride, layer.pad)
    return all(type(v) is int for v in g) and g == (2, 2, 2, 0)


class Pooling:
    """Max pooling over ``pool_h`` x ``pool_w`` windows, the book's constructor.

    ``forward`` keeps ``x`` and the index of each window's maximum; ``backward`` sends
    each ``dout`` element to the input element that was the maximum of its window.
    ``arg_max`` is the book's form of that index (flat, in the order (n, i, j, c), the
    window index ``ky * pool_w + kx``); the 2x2, stride-2 pooling of the book's networks
    keeps a compact one (a byte per window, NCHW) and builds ``arg_max`` when it is read.
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self._arg_max = None
        self._index = None
        self._out_shape = None

    @property
    def arg_max(self):
        """The book's argmax: flat intp window indices in the order (n, i, j, c)."""
        if self._arg_max is None and self._index is not None:
            self._arg_max = np.ascontiguousarray(self._index.transpose(0, 2, 3, 1),
                                                 dtype=np.intp).reshape(-1)
        return self._arg_max

    @arg_max.setter
    def arg_max(self, value):  # the book's form from now on
        self._arg_max, self._index = value, None

    def forward(self, x):
        x = _image_input(x)
        k = _kernels.active()
        index = arg_max = None
        if _is_2x2(self):
            out, index = k.maxpool2_forward(x)
        else:
            out, arg_max = k.maxpool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self.x, self._index, self._arg_max, self._out_shape = x, index, arg_max, out.shape
        return out

    def backward(self, dout):
        if self._index is None and self._arg_max is None:
            raise _forward_first(self)
        _check_dout(dout, self._out_shape)
        k = _kernels.active()
        if self._index is not None:
            return k.maxpool2_backward(dout, self._index, self.x.shape)
        return k.maxpool_backward(dout, self._arg_max, self.x.shape, self.pool_h,
                                  self.pool_w, self.stride, self.pad)


__all__ += ["Convolution", "Pooling"]
