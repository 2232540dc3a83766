"""What ``fastbp bench`` and ``benchmarks/`` time: training steps and layer calls.

A *case* is one group of side-by-side measurements; its *contenders* compute the same
thing different ways:

- ``book``: the book's plain-NumPy idiom (``fastbp.bench.book``);
- ``numpy``, ``cython``: fastbp on that kernel backend; a step is ``train_step`` with
  ``optimizers.SGD`` where the network has it, else ``gradient`` then fastbp's SGD;
- ``cython-api``: the compiled backend driven by the book's loop, ``gradient`` then
  ``params[k] -= lr * grads[k]`` (what code written for the book gets);
- ``cython-1t``: steps only, ``cython`` with ``fastbp.set_num_threads(1)``;
- more for the steps through ``extra=`` (``benchmarks/``: PyTorch, JAX, the floor,
  fastbp on one thread).

Steps: the fully connected 784-50-10 (batch 100) and 784-1000-1000-10 (batch 256), and
the book's SimpleConvNet and DeepConvNet (batch 100 of MNIST-shaped images). Every
network starts from the same parameters, every contender of a step is checked against
the book's before it is timed (the update of every parameter after one step), and
inputs are made outside the timed call. Layer cases are the layers of those networks,
each called alone on the input it sees in the network, fastbp's layer against the book's.
"""
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict

import numpy as np

from .. import kernels as _kernels
from .. import networks as _networks
from ..optimizers import SGD
from . import book

__all__ = ["Contender", "Case", "Unavailable", "Step", "STEPS", "DTYPES", "LR",
           "step_case", "step_data", "layer_cases", "forget", "fastbp_threads", "check_close"]

LR = 0.1            # the book's learning rate
SEED = 20240601
CHECK_SEED = 7      # NumPy's global state before a checked step: the same dropout masks
DTYPES = ("float64", "float32")


class Unavailable(Exception):
    """A contender that cannot run here (a peer that is not installed); the message is
    the reason it is skipped."""


@dataclass
class Contender:
    """One way of computing a case: ``fn(*setup())`` is the timed call."""
    name: str
    fn: Callable
    setup: Callable[[], tuple] = tuple
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # Runs on a thread pool other than NumPy's OpenBLAS (PyTorch's, XLA's, fastbp's
    # OpenMP threads): OpenBLAS's threads spin for a while after a NumPy call and slow
    # such a contender down, so it runs untimed for a moment first (timing.WARMUP_S).
    own_threads: bool = False


@dataclass
class Case:
    """A group of contenders computing the same thing; ``id`` names the group."""
    id: str
    kind: str                          # "step" or "layer"
    contenders: "OrderedDict[str, Contender]"
    check: Callable[[str], None]       # check(name): run it once, assert against the book
    fresh: bool = False                # every call needs new inputs from setup()
    info: Dict = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)   # contender -> reason
    # (subset, superset): the superset does all the work of the subset and more, so it
    # cannot be faster; a run where it is says the measurement was disturbed.
    bounds: list = field(default_factory=list)


@dataclass
class Step:
    """A training step: the network (its ``kind`` and constructor arguments) and batch."""
    name: str
    kind: str                # "mlp" or "cnn"
    batch: int
    sizes: tuple = ()        # mlp: the layer sizes
    quick: bool = True       # part of ``fastbp bench --quick``

    @property
    def input_shape(self):
        return (self.batch, self.sizes[0]) if self.kind == "mlp" else (self.batch, 1, 28, 28)

    def book_net(self):
        if self.kind == "mlp":
            return book.multi_layer_net(self.sizes)
        return {"SimpleConvNet": book.simple_conv_net, "DeepConvNet": book.deep_conv_net}[self.name]()

    def fastbp_net(self, dtype):
        if self.kind == "cnn":   # the CNN's own defaults are the book's
            return getattr(_networks, self.name)(dtype=dtype)
        if len(self.sizes) == 3:
            return _networks.TwoLayerNet(*self.sizes, dtype=dtype)
        return _networks.MultiLayerNet(self.sizes[0], list(self.sizes[1:-1]), self.sizes[-1],
                                       dtype=dtype)


STEPS = OrderedDict((s.name, s) for s in [
    Step("784-50-10", "mlp", 100, (784, 50, 10)),
    Step("SimpleConvNet", "cnn", 100),
    Step("784-1000-1000-10", "mlp", 256, (784, 1000, 1000, 10), quick=False),
    Step("DeepConvNet", "cnn", 100, quick=False),
])


@contextlib.contextmanager
def fastbp_threads(n):
    """fastbp's own thread setting (``fastbp.set_num_threads``) at ``n`` (None: as is)."""
    previous = _kernels.get_num_threads()
    if n is not None:
        _kernels.set_num_threads(n)
    try:
        yield
    finally:
        _kernels.set_num_threads(previous)


@contextlib.contextmanager
def _stacked(*contexts):
    with contextlib.ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        yield


def _dt(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def check_close(name, what, got, want, dtype, tol32=1e-3):
    """``got`` equals ``want`` to the dtype's rounding: the norm of the difference
    against the norm of ``want`` (a rare ReLU or max-pooling tie decided the other way
    moves single elements, not the norm). ``tol32``: the relative error allowed in
    float32 (float64: 1e-7)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: {what} has shape {got.shape}, the book's {want.shape}")
    tol = tol32 if np.dtype(dtype) == np.float32 else 1e-7
    err = np.linalg.norm(got - want)
    if not np.isfinite(err) or err > tol * np.linalg.norm(want) + 1e-30:
        raise AssertionError(f"{name}: {what} differs from the book's (relative error "
                             f"{err / max(np.linalg.norm(want), 1e-300):.3g}, allowed {tol:g})")


def _backend(name):
    return lambda: _kernels.use_backend(name)


def _fastbp_backends():
    return ["numpy", "cython"] if _kernels.HAVE_CYTHON else ["numpy"]


# ===================================================================== training steps

def _bind_book(net, init):
    """The book's network with copies of ``init``: its weighted layers, in order, get
    ``W1``, ``b1``, ``W2``, ... (the book's layers hold the arrays of ``params``)."""
    layers = net.layers.values() if isinstance(net.layers, dict) else net.layers
    for i, layer in enumerate((la for la in layers if hasattr(la, "W")), 1):
        net.params[f"W{i}"], net.params[f"b{i}"] = init[f"W{i}"].copy(), init[f"b{i}"].copy()
        layer.W, layer.b = net.params[f"W{i}"], net.params[f"b{i}"]
    return net


def _bind_fastbp(net, init):
    for k, p in net.params.items():   # in place: the layers hold these arrays
        p[...] = init[k]
    return net


def step_data(step, dtype):
    """``(init, x, t, masks)``: the initial parameters (the fastbp network's own He or
    0.01 draws, biases small and non-zero so that a bias left alone shows in the check),
    a batch of MNIST-like pixels in [0, 1) and labels, and the dropout masks the book's
    DeepConvNet draws after ``np.random.seed(CHECK_SEED)`` (for contenders that take
    them as inputs)."""
    dtype = _dt(dtype)
    state = np.random.get_state()
    try:
        np.random.seed(SEED)
        with _kernels.use_backend("numpy"):
            net = step.fastbp_net(dtype)
        np.random.seed(CHECK_SEED)
        masks = [np.random.rand(step.batch, 50) > 0.5, np.random.rand(step.batch, 10) > 0.5]
    finally:
        np.random.set_state(state)
    rng = np.random.default_rng(SEED)
    init = {}
    for k, p in net.params.items():
        init[k] = p.copy()
        if k.startswith("b"):
            init[k][...] = 0.01 * rng.standard_normal(p.shape)
    x = rng.random(step.input_shape).astype(dtype)
    t = rng.integers(0, 10, size=step.batch)
    return init, x, t, masks if step.name == "DeepConvNet" else None


def _book_step(net, x, t, lr=LR):
    params = net.params

    def run():
        grads = net.gradient(x, t)
        for key in params:
            params[key] -= lr * grads[key]
        return params
    return run


def _fastbp_step(net, x, t, lr=LR):
    opt, params = SGD(lr=lr), net.params
    train_step = getattr(net, "train_step", None)

    def run():
        if train_step is not None:
            train_step(x, t, opt)
        else:
            opt.update(params, net.gradient(x, t))
        return params
    return run


def step_case(step, dtype, contenders=("book", "numpy", "cython", "cython-api"), extra=None,
              threads=None):
    """One training step (forward, loss, backward, SGD update) of ``step`` (a name of
    ``STEPS`` or a ``Step``).

    ``extra``: ``{name: make}`` contenders from elsewhere (``benchmarks/``):
    ``make(step, init, x, t, threads=..., lr=..., masks=...)`` returns ``(run, params_of)``
    where ``params_of(run())`` gives the parameters after the step as NumPy arrays named
    like the book's (None: nothing to check, e.g. the matrix products alone), or raises
    ``Unavailable(reason)``. ``masks``: DeepConvNet's dropout masks, as inputs.
    """
    step = STEPS[step] if isinstance(step, str) else step
    dtype = _dt(dtype)
    init, x, t, masks = step_data(step, dtype)
    makers = OrderedDict()
    for name in contenders:
        if name == "book":
            makers[name] = (lambda: (_book_step(_bind_book(step.book_net(), init), x, t), dict),
                            lambda: np.errstate(over="ignore"), False)
        elif name in ("numpy", "cython", "cython-api", "cython-1t"):
            backend = "numpy" if name == "numpy" else "cython"
            wrap = _book_step if name == "cython-api" else _fastbp_step

            def make(backend=backend, wrap=wrap):
                with _kernels.use_backend(backend):
                    net = _bind_fastbp(step.fastbp_net(dtype), init)
                return wrap(net, x, t), dict
            ctx = _backend(backend)
            if name == "cython-1t":   # fastbp.set_num_threads(1) around each call
                ctx = lambda: _stacked(_kernels.use_backend("cython"), fastbp_threads(1))  # noqa: E731
            makers[name] = (make, ctx, backend == "cython")
        else:
            raise ValueError(f"contender: unknown {name!r} (others come through extra=)")
    for name, make in (extra or {}).items():
        makers[name] = (lambda make=make: make(step, init, x, t, threads=threads, lr=LR,
                                                masks=masks),
                        getattr(make, "context", contextlib.nullcontext),
                        getattr(make, "own_threads", True))
    out, skipped = OrderedDict(), {}
    if not _kernels.HAVE_CYTHON:
        skipped.update({n: "fastbp's compiled kernels are not built"
                        for n in makers if n.startswith("cython")})
    for name, (make, ctx, own) in makers.items():
        if name in skipped:
            continue
        try:
            with ctx():
                fn, params_of = make()
        except Unavailable as exc:
            skipped[name] = str(exc)
            continue
        out[name] = Contender(name, fn, context=ctx, own_threads=own)

    def one_step(name):
        make, ctx, _ = makers[name]
        state = np.random.get_state()
        try:
            with ctx():
                fn, params_of = make()
                np.random.seed(CHECK_SEED)   # after the network's own draws
                return params_of(fn()) if params_of else None
        finally:
            np.random.set_state(state)

    reference = {}

    def check(name):
        """One step from the same parameters: every parameter moved as the book's did."""
        got = one_step(name)
        if got is None:
            return
        if not reference:
            reference.update({k: v.copy() for k, v in one_step("book").items()})
        want = reference
        for k in want:
            # float32: rounding differences flip a few ReLUs of a deep network
            check_close(name, f"the update of {k} after one step", np.asarray(got[k]) - init[k],
                        want[k] - init[k], dtype, tol32=1e-2)

    case_id = f"step {step.name} b{step.batch} {dtype.name}"
    info = {"step": step.name, "batch": step.batch, "dtype": dtype.name}
    return Case(case_id, "step", out, check, info=info, skipped=skipped)


# ======================================================================== layer cases

def _layer_list(net):
    return list(net.layers.values() if isinstance(net.layers, dict) else net.layers)


def _last_layer(net):
    return getattr(net, "last_layer", None) or net.lastLayer   # chapter 5 names it lastLayer


def _layer_names(layers):
    count, names = {}, []
    for layer in layers:
        kind = type(layer).__name__
        count[kind] = count.get(kind, 0) + 1
        names.append(f"{kind}{count[kind]}")
    return names


def _same_layer(book_net, net, index):
    """The layer of ``net`` that is the book network's layer ``index``: by the book's
    name where ``layers`` is a dict that has it, else by position."""
    name = list(book_net.layers)[index]
    if isinstance(net.layers, dict) and name in net.layers:
        return net.layers[name]
    return _layer_list(net)[index]


def _run_layer(layer, x, train):
    return layer.forward(x, train) if type(layer).__name__ == "Dropout" else layer.forward(x)


def layer_cases(step, dtype, contenders=("book", "numpy", "cython"), only=None):
    """The layers of ``step``'s network, each forward and backward alone, as
    ``[(case id, build)]``: ``build()`` makes the case (so one case's arrays are freed
    before the next is made). Each layer gets the input it sees in the network (the
    book's forward pass); a backward gets a fresh copy of a random ``dout`` per call
    (the book's ``Relu.backward`` writes into it). The loss layer, ``SoftmaxWithLoss``,
    is one case: forward and backward. ``only``: keep the ids containing one of these strings."""
    step = STEPS[step] if isinstance(step, str) else step
    dtype = _dt(dtype)
    names = [n for n in contenders if n in ("book", "numpy") or n in _fastbp_backends()]
    kinds = _layer_names(_layer_list(step.book_net()))
    picks = [(k, d) for k in kinds if not k.startswith("Dropout")
             for d in ("forward", "backward")] + [("SoftmaxWithLoss", "")]
    out = []
    for kind, direction in picks:
        case_id = f"{step.name} {kind}{'.' if direction else ''}{direction} {dtype.name}"
        if only and not any(o in case_id for o in only):
            continue
        out.append((case_id, lambda k=kind, d=direction, i=case_id:
                    _layer_case(step, dtype, k, d, i, names)))
    return out


_NETS = {}


def _networks_of(step, dtype, names):
    """The book's and fastbp's networks of ``step`` from the same parameters, and the
    input of every layer (the book's forward pass): made once for all the layer cases
    of a network (only the latest network is kept)."""
    key = (step.name, dtype, tuple(names))
    if key not in _NETS:
        _NETS.clear()
        init, x, t, _ = step_data(step, dtype)
        nets = {"book": _bind_book(step.book_net(), init)}
        for name in names:
            if name != "book":
                with _kernels.use_backend(name):
                    nets[name] = _bind_fastbp(step.fastbp_net(dtype), init)
        inputs = [x]
        with np.errstate(over="ignore"):
            for layer in _layer_list(nets["book"]):
                inputs.append(_run_layer(layer, inputs[-1], True))
        _NETS[key] = (nets, inputs, t)
    return _NETS[key]


def forget():
    """Free the networks kept for the layer cases."""
    _NETS.clear()


def _layer_case(step, dtype, kind, direction, case_id, names):
    nets, inputs, t = _networks_of(step, dtype, names)
    book_layers = _layer_list(nets["book"])
    index = _layer_names(book_layers).index(kind) if kind != "SoftmaxWithLoss" else None
    h = inputs[-1 if index is None else index]
    dout = None
    if direction == "backward":
        shape = np.shape(inputs[index + 1])
        dout = np.random.default_rng(SEED + 1).standard_normal(shape).astype(dtype)

    contenders = OrderedDict()
    for name in names:
        net = nets[name]
        ctx = _backend(name) if name != "book" else (lambda: np.errstate(over="ignore"))
        layer = _last_layer(net) if index is None else _same_layer(nets["book"], net, index)
        if index is None:
            def fn(x, t, layer=layer):
                return layer.forward(x, t), layer.backward(1)
            setup, fresh = (lambda: (h, t)), False
        elif direction == "forward":
            fn, setup, fresh = layer.forward, (lambda: (h,)), False
        else:
            with ctx():
                layer.forward(h)   # the state its backward reads
            fn, setup, fresh = layer.backward, (lambda: (dout.copy(),)), True
        contenders[name] = Contender(name, fn, setup, ctx, own_threads=name == "cython")

    def results(name):
        c = contenders[name]
        with c.context():
            r = c.fn(*c.setup())
        layer = c.fn.__self__ if hasattr(c.fn, "__self__") else None
        r = list(r) if isinstance(r, tuple) else [r]
        if layer is not None and direction == "backward" and hasattr(layer, "dW"):
            r += [layer.dW, layer.db]
        return r

    def check(name):
        want = results("book")
        for i, (g, w) in enumerate(zip(results(name), want)):
            if index is None and i == 0:   # the book's loss has 1e-7 inside the log
                if abs(float(g) - float(w)) > 1e-4 * abs(float(w)) + 1e-5:
                    raise AssertionError(f"{name}: the loss {float(g)} is not the book's {float(w)}")
                continue
            check_close(name, f"{kind}.{direction} result {i}", g, w, dtype)

    info = {"step": step.name, "layer": kind, "direction": direction, "dtype": dtype.name,
            "input": list(np.shape(h))}
    W = getattr(book_layers[index], "W", None) if index is not None else None
    if W is not None:   # an Affine or a Convolution: one product forward, two backward
        macs = int(np.prod(np.shape(inputs[index + 1]))) * int(np.prod(W.shape[:-1] if W.ndim == 2
                                                                       else W.shape[1:]))
        info["multiply_adds"] = macs * (1 if direction == "forward" else 2)
    return Case(case_id, "layer", contenders, check, fresh=fresh, info=info)
