"""What fastbp's benchmarks measure: the cases, their contenders and their checks.

One definition serves both ``benchmarks/`` (pytest-benchmark) and ``fastbp bench``.
The peers (PyTorch, JAX) and the release targets live in ``benchmarks/`` (``peers.py``,
``targets.py``): a step case takes peer contenders as plug-ins (``peers=``).

A *case* is one group of side-by-side measurements (a kernel at one shape and dtype, or
one training step). Its *contenders* compute the same thing different ways:

- ``book``: the book's plain-NumPy idiom (``fastbp.bench.book``);
- ``numpy``, ``cython``: fastbp's layers and networks under that kernel backend (a
  step through ``train_step``, fastbp's fast path);
- ``cython-api``: fastbp's compiled backend driven by the book's loop, ``gradient`` then
  ``params[k] -= lr * grads[k]`` (what code written for the book gets);
- ``floor``: the step's matrix products alone, into preallocated buffers;
- ``floor+sgd``: the same, plus the in-place SGD update of the weights (a reference
  for what the writes to the weights cost around two-threaded matrix products);
- peers, given by ``benchmarks/peers.py``: ``torch`` (PyTorch eager) and ``jax`` (JAX
  ``jit``), each where it is installed;
- ``cython-1t``, ``cython-2t``: the compiled backend with its OpenMP pool limited to one
  or two threads (``threadpoolctl``).

Fairness is built in: inputs are made when the case is built, outside the timed call;
``setup()`` hands out fresh copies of the inputs that the book's idiom overwrites
(``fresh`` cases); ``check()`` runs each contender once against the book's result and
raises ``AssertionError`` on a mismatch; ``context()`` selects the backend (or limits the
threads) around the timing, never inside it.
"""
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from .. import kernels as _kernels
from ..layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from ..networks import MultiLayerNet, TwoLayerNet
from . import book

__all__ = [
    "Contender", "Case", "Unavailable", "KERNELS", "STEP_ARCHS", "THREADS_CASES", "DTYPES",
    "STEP_CONTENDERS", "kernel_case", "step_case", "threads_case",
    "have_threadpoolctl", "set_omp_threads", "fastbp_threads",
    "ratio_pairs",
]

LR = 0.1            # the book's learning rate
SEED = 20240601

#: The kernels a kernel case can time (``fastbp bench`` picks its shapes; the
#: pytest-benchmark suite has its grid of shapes in benchmarks/test_bench_kernels.py).
KERNELS = ("relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
           "softmax_ce_labels", "softmax_ce_onehot", "affine_backward")
# Training steps: layer sizes and batch.
STEP_ARCHS = {
    "784-50-10": ((784, 50, 10), 100),
    "784-1000-1000-10": ((784, 1000, 1000, 10), 256),
}
# Thread scaling: (kernel, shape) run by the compiled backend at 1 and 2 OpenMP threads.
THREADS_CASES = [
    ("relu_forward", (4096, 4096)),
    ("relu_backward", (4096, 4096)),
    ("softmax_ce_labels", (4096, 1000)),
]
DTYPES = ("float64", "float32")
#: fastbp's own contenders of a training step (peers come on top, from ``peers=``).
STEP_CONTENDERS = ("book", "numpy", "cython", "cython-api", "floor", "floor+sgd")


class Unavailable(Exception):
    """A contender that cannot run here (a peer that is not installed); the message is
    the reason, reported as the contender's skip reason."""


@dataclass
class Contender:
    """One way of computing a case: ``fn(*setup())`` is the timed call."""
    name: str
    fn: Callable
    setup: Callable[[], tuple]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    result: Optional[Callable] = None   # fn's return value -> comparable arrays
    # Runs on a thread pool of its own (PyTorch's, XLA's, or fastbp's compiled backend,
    # whose matrix products run on its OpenMP threads), not on NumPy's OpenBLAS: after a
    # NumPy contender, OpenBLAS's idle threads spin for about 0.1 s on the other core and
    # halve such a contender's speed, and its own pool spins after it in turn.
    own_threads: bool = False


def _own_pool(name):
    """The compiled backend's contenders: their products run on fastbp's OpenMP threads."""
    return name.startswith("cython")


@dataclass
class Case:
    """A group of contenders computing the same thing; ``id`` names the group."""
    id: str
    kind: str                      # "kernel", "step" or "threads"
    fresh: bool                    # True: every call needs new inputs from setup()
    contenders: "OrderedDict[str, Contender]"
    check: Callable[[str], None]   # check(name): run contender once, assert vs the book
    info: Dict = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)  # contender -> reason
    # Step cases: build(name) -> (step, params_of(result)), a fresh network from the
    # same initial parameters (for checks, allocation and per-layer profiles).
    build: Optional[Callable] = None
    nets: Dict = field(default_factory=dict)   # step cases: name -> the timed network
    data: tuple = ()                           # step cases: the batch (x, t)


def _dt(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _tol(dtype):
    return dict(rtol=2e-4, atol=1e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-9, atol=1e-12)


def _assert_close(name, got, want, dtype, what, **tol):
    tol = tol or _tol(dtype)
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: {what} has shape {got.shape}, the book's {want.shape}")
    if not np.allclose(got, want, **tol):
        err = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))
        raise AssertionError(f"{name}: {what} differs from the book's (max abs error {err:.3g})")


def backend_context(name):
    return lambda: _kernels.use_backend(name)


def have_threadpoolctl():
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def fastbp_threads(n):
    """fastbp's own thread setting (``fastbp.set_num_threads``) at ``n``."""
    previous = _kernels.get_num_threads()
    _kernels.set_num_threads(n)
    try:
        yield
    finally:
        _kernels.set_num_threads(previous)


@contextlib.contextmanager
def set_omp_threads(n):
    """Limit the OpenMP pools (threadpoolctl) and fastbp's own thread setting to ``n``."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=n, user_api="openmp"), fastbp_threads(n):
        yield


def ratio_pairs(names):
    """The ratios reported between the contenders ``names`` of a case, as ``(a, b)``:
    "a/b" is the time of a over the time of b, how many times faster b is. Every
    contender against fastbp's compiled backend, the book against the NumPy backend
    too, and one thread against two."""
    pairs = [(a, "cython") for a in names if a not in ("cython", "cython-1t", "cython-2t")]
    pairs.append(("book", "numpy"))
    pairs.append(("cython-1t", "cython-2t"))
    return [(a, b) for a, b in pairs if a in names and b in names]


# =================================================================== kernels

def _book_layer(kernel):
    return {"relu": book.Relu, "sigmoid": book.Sigmoid, "softmax": book.SoftmaxWithLoss,
            "affine": book.Affine}[kernel.split("_")[0]]


def _fastbp_layer(kernel):
    return {"relu": Relu, "sigmoid": Sigmoid, "softmax": SoftmaxWithLoss,
            "affine": Affine}[kernel.split("_")[0]]


def _compare(name, kernel, got, want, dtype, exact_loss=None):
    """Compare a contender's results with the book's (the loss with the exact loss)."""
    for i, (g, w) in enumerate(zip(got, want)):
        if kernel.startswith("softmax_ce") and i == 0:
            # The book's loss adds 1e-7 inside the log; fastbp's is exact: compare
            # with the exact loss computed in float64 instead.
            if name != "book" and exact_loss is not None:
                rtol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
                _assert_close(name, g, exact_loss, dtype, "loss", rtol=rtol, atol=0)
            continue
        _assert_close(name, g, w, dtype, f"{kernel} result {i}")


def _kernel_fns(kernel, shape, dtype, rng, build_exact):
    """Inputs and, per layer class, (prepare(layer) -> timed fn, setup, result)."""
    if kernel in ("relu_forward", "sigmoid_forward"):
        x = rng.standard_normal(shape).astype(dtype)

        def build(layer):
            return layer.forward, (lambda: (x,)), (lambda out: [out])
        return build, False

    if kernel in ("relu_backward", "sigmoid_backward"):
        x = rng.standard_normal(shape).astype(dtype)
        dout = rng.standard_normal(shape).astype(dtype)

        def build(layer):
            layer.forward(x)      # the state backward needs (mask / out), untimed
            # The book's Relu.backward writes into dout: every call gets a fresh copy
            # (all contenders alike, so the caches see the same traffic).
            return layer.backward, (lambda: (dout.copy(),)), (lambda dx: [dx])
        return build, True

    if kernel.startswith("softmax_ce"):
        n, c = shape
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        labels = rng.integers(0, c, size=n)
        t = labels if kernel.endswith("labels") else np.eye(c, dtype=dtype)[labels]
        x64 = x.astype(np.float64)
        m = x64.max(axis=1)
        lse = m + np.log(np.exp(x64 - m[:, None]).sum(axis=1))
        build_exact[0] = float(np.mean(lse - x64[np.arange(n), labels]))

        def build(layer):
            def fwd_bwd(x, t):
                loss = layer.forward(x, t)
                return loss, layer.backward(1)
            return fwd_bwd, (lambda: (x, t)), (lambda r: [r[0], r[1]])
        return build, False

    if kernel == "affine_backward":
        n, d, m = shape
        x = rng.random((n, d)).astype(dtype)
        W = (0.01 * rng.standard_normal((d, m))).astype(dtype)
        b = np.zeros(m, dtype=dtype)
        dout = rng.standard_normal((n, m)).astype(dtype)

        def build(layer_cls):
            layer = layer_cls(W, b)
            layer.forward(x)
            return layer.backward, (lambda: (dout,)), (lambda dx: [dx, layer.dW, layer.db])
        return build, False
    raise ValueError(f"kernel: expected one of {sorted(KERNELS)}, got {kernel!r}")


def kernel_case(kernel, shape, dtype, contenders=("book", "numpy", "cython")):
    """The book's layer against fastbp's layer on each backend, for one kernel."""
    dtype = _dt(dtype)
    shape = tuple(shape)
    rng = np.random.default_rng(SEED)
    exact = [None]
    build, fresh = _kernel_fns(kernel, shape, dtype, rng, exact)
    case_id = f"{kernel} {'x'.join(map(str, shape))} {dtype.name}"
    out = OrderedDict()
    skipped = {}
    for name in contenders:
        if name == "cython" and not _kernels.HAVE_CYTHON:
            skipped[name] = "fastbp's compiled kernels are not built"
            continue
        if name == "book":
            cls = _book_layer(kernel)
            ctx = lambda: np.errstate(over="ignore")  # the book's sigmoid overflows # noqa: E731
        else:
            cls = _fastbp_layer(kernel)
            ctx = backend_context(name)
        with ctx():
            fn, setup, result = build(cls if kernel == "affine_backward" else cls())
        out[name] = Contender(name, fn, setup, ctx, result, own_threads=_own_pool(name))

    exact_loss = exact[0]

    def check(name):
        ref = out["book"]
        with ref.context():
            want = ref.result(ref.fn(*ref.setup()))
        c = out[name]
        with c.context():
            got = c.result(c.fn(*c.setup()))
        _compare(name, kernel, got, want, dtype, exact_loss)

    info = {"kernel": kernel, "shape": list(shape), "dtype": dtype.name}
    if exact[0] is not None:
        info["exact_loss"] = exact[0]
    return Case(case_id, "kernel", fresh, out, check, info=info, skipped=skipped)


# =================================================================== training steps

def _bind(net, params):
    """Give ``net`` (book or fastbp) the parameters ``params`` (copies), layers included."""
    n = len(params) // 2
    for i in range(1, n + 1):
        layer = net.layers[f"Affine{i}"]
        for p, attr in ((f"W{i}", "W"), (f"b{i}", "b")):
            net.params[p] = params[p].copy()
            setattr(layer, attr, net.params[p])
    return net


def _step_data(sizes, batch, dtype):
    rng = np.random.default_rng(SEED)
    init = {}
    for i in range(1, len(sizes)):
        init[f"W{i}"] = (0.01 * rng.standard_normal((sizes[i - 1], sizes[i]))).astype(dtype)
        # Small non-zero biases, so a bias that is not updated shows in the check.
        init[f"b{i}"] = (0.01 * rng.standard_normal(sizes[i])).astype(dtype)
    x = rng.random((batch, sizes[0])).astype(dtype)     # like normalised MNIST pixels
    t = rng.integers(0, sizes[-1], size=batch)          # labels
    return init, x, t


def _book_net(sizes):
    """The book's chapter-5 ``TwoLayerNet`` for one hidden layer, else its ``MultiLayerNet``."""
    if len(sizes) == 3:
        return book.TwoLayerNet(*sizes)
    return book.MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1])


def _fastbp_net(sizes, dtype):
    """fastbp's own network for these sizes: (net, description)."""
    if len(sizes) == 3:
        return TwoLayerNet(*sizes, dtype=dtype, rng=0), "TwoLayerNet"
    return MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], dtype=dtype, rng=0), "MultiLayerNet"


def _step_fn(net, x, t, lr=LR):
    """One training step through the book's public API: gradient, then SGD in place."""
    params = net.params

    def step():
        grads = net.gradient(x, t)
        for key in params:
            params[key] -= lr * grads[key]
        return params
    return step


def _fastbp_step_fn(net, x, t, lr=LR):
    """One training step the fastbp way: ``train_step`` with the fused in-place SGD
    (gradient buffers reused across steps), where the network has it."""
    if not hasattr(net, "train_step"):
        return _step_fn(net, x, t, lr)
    from ..optimizers import SGD
    opt, params = SGD(lr=lr), net.params

    def step():
        net.train_step(x, t, opt)
        return params
    return step


def _floor_fn(sizes, init, x, update=False):
    """The step's matrix products alone, into preallocated buffers.

    Forward ``h_i = h_{i-1} @ W_i``; backward ``dW_i = h_{i-1}.T @ d_i`` for every layer
    and ``d_{i-1} = d_i @ W_i.T`` for every layer but the first (its input gradient is
    never used). The gradients that feed the products are stand-ins of the right shapes.

    ``update``: then also ``W_i -= lr * dW_i`` in place with fastbp's fused SGD (on
    copies of the weights; a tiny lr keeps them stable), the writes every real step
    makes. With two BLAS threads those writes cost more than their arithmetic: the
    next products read weights that one core has just modified.
    """
    Ws = [init[f"W{i}"].copy() if update else init[f"W{i}"] for i in range(1, len(sizes))]
    sgd = _kernels.active().sgd_update
    batch = x.shape[0]
    hs = [x] + [np.empty((batch, s), dtype=x.dtype) for s in sizes[1:]]
    ds = [None] + [np.empty((batch, s), dtype=x.dtype) for s in sizes[1:]]
    dWs = [np.empty_like(W) for W in Ws]
    for d in ds[1:]:
        d[...] = 1e-3
    L = len(Ws)

    def floor():
        for i in range(L):
            np.matmul(hs[i], Ws[i], out=hs[i + 1])
        for i in range(L - 1, -1, -1):
            np.matmul(hs[i].T, ds[i + 1], out=dWs[i])
            if i > 0:
                np.matmul(ds[i + 1], Ws[i].T, out=ds[i])
        if update:
            for W, dW in zip(Ws, dWs):
                sgd(W, dW, 1e-12)
        return hs, dWs
    return floor


def step_case(arch, dtype, contenders=STEP_CONTENDERS, peers=None, threads=None):
    """One training step (forward, loss, backward, SGD update) for ``arch``.

    ``peers``: ``{name: make}`` of contenders from elsewhere (``benchmarks/peers.py``):
    ``make(sizes, init, x, t, threads=..., lr=...)`` returns ``(step, params_of)``, where
    ``params_of(step())`` gives the parameters as NumPy arrays named like the book's, or
    raises ``Unavailable(reason)``. Such a contender runs on a thread pool of its own.
    """
    dtype = _dt(dtype)
    sizes, batch = STEP_ARCHS[arch]
    init, x, t = _step_data(sizes, batch, dtype)
    case_id = f"step {arch} b{batch} {dtype.name}"
    out = OrderedDict()
    skipped = {}
    builders = {}
    info = {"arch": arch, "batch": batch, "dtype": dtype.name, "targets": "labels"}

    nets = {}

    def book_builder():
        net = _bind(_book_net(sizes), init)
        nets["book"] = net
        return _step_fn(net, x, t), (lambda params: params)

    def fastbp_builder(name, backend, book_api=False):
        def build():
            with _kernels.use_backend(backend):
                net, what = _fastbp_net(sizes, dtype)
            info["fastbp_net"] = what
            net = _bind(net, init)
            nets[name] = net
            step = _step_fn(net, x, t) if book_api else _fastbp_step_fn(net, x, t)
            return step, (lambda params: params)
        return build

    for name in contenders:
        if name == "book":
            builders[name] = (book_builder, lambda: np.errstate(over="ignore"))
        elif name in ("numpy", "cython", "cython-api"):
            backend = "numpy" if name == "numpy" else "cython"
            if backend == "cython" and not _kernels.HAVE_CYTHON:
                skipped[name] = "fastbp's compiled kernels are not built"
                continue
            builders[name] = (fastbp_builder(name, backend, book_api=name == "cython-api"),
                              backend_context(backend))
        elif name in ("floor", "floor+sgd"):
            if name == "floor+sgd" and not _kernels.HAVE_CYTHON:
                skipped[name] = "fastbp's compiled kernels are not built"
                continue
            builders[name] = ((lambda update=name == "floor+sgd":
                               (_floor_fn(sizes, init, x, update), None)),
                              backend_context("cython") if name == "floor+sgd"
                              else contextlib.nullcontext)
        else:
            raise ValueError(f"contender: unknown {name!r} (peers come through peers=)")
    for name, make in (peers or {}).items():
        builders[name] = ((lambda make=make: make(sizes, init, x, t, threads=threads, lr=LR)),
                          contextlib.nullcontext)

    timed_nets = {}
    for name, (build, ctx) in list(builders.items()):
        try:
            with ctx():
                fn, _ = build()
        except Unavailable as exc:
            skipped[name] = str(exc)
            del builders[name]
            continue
        out[name] = Contender(name, fn, (lambda: ()), ctx,
                              own_threads=name in (peers or {}) or _own_pool(name))
        if name in nets:
            timed_nets[name] = nets[name]

    def check(name):
        """One step from the same parameters: the updated parameters match the book's."""
        b_build, b_ctx = builders["book"]
        with b_ctx():
            b_step, b_params = b_build()
            want = {k: v.copy() for k, v in b_params(b_step()).items()}
        build, ctx = builders[name]
        with ctx():
            fn, params = build()
            res = fn()
        if name in ("floor", "floor+sgd"):
            hs, _ = res
            _assert_close(name, hs[1], x @ init["W1"], dtype, "x @ W1",
                          **(dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else {}))
            return
        got = params(res)
        for k in want:
            _assert_close(name, got[k], want[k], dtype, f"{k} after one step",
                          **(dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else {}))

    def build(name):
        b, ctx = builders[name]
        with ctx():
            return b()

    return Case(case_id, "step", False, out, check, info=info, skipped=skipped,
                build=build, nets=timed_nets, data=(x, t))


# =================================================================== threads

def threads_case(kernel, shape, dtype, threads=(1, 2)):
    """The compiled backend at 1 and 2 OpenMP threads (one group per kernel and shape)."""
    base = kernel_case(kernel, shape, dtype, contenders=("book", "cython"))
    case_id = f"threads {base.id}"
    out = OrderedDict()
    skipped = dict(base.skipped)
    if "cython" in base.contenders and have_threadpoolctl():
        c = base.contenders["cython"]
        for n in threads:
            def ctx(n=n, inner=c.context):
                stack = contextlib.ExitStack()
                stack.enter_context(inner())
                stack.enter_context(set_omp_threads(n))
                return stack
            out[f"cython-{n}t"] = Contender(f"cython-{n}t", c.fn, c.setup, ctx, c.result)
    elif "cython" in base.contenders:
        skipped["cython-threads"] = "threadpoolctl is not installed"
    book_c = base.contenders["book"]

    def check(name):
        c = out[name]
        with book_c.context():
            want = book_c.result(book_c.fn(*book_c.setup()))
        with c.context():
            got = c.result(c.fn(*c.setup()))
        _compare(name, kernel, got, want, dtype, base.info.get("exact_loss"))

    return Case(case_id, "threads", base.fresh, out, check,
                info=dict(base.info, threads=list(threads)), skipped=skipped)
