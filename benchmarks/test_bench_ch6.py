"""Chapter 6 benchmarks: a training step of MultiLayerNet 784-100-100-100-10 with Adam.

Run:  python -m pytest benchmarks/test_bench_ch6.py --benchmark-only
(``testpaths`` keeps this folder out of the default test run.)

Three contenders per group, side by side (the steps also with batch normalization,
MultiLayerNetExtend, and Dropout alone):
- ``book``: the book's idiom (``tests/book_reference/common``: its ``MultiLayerNetExtend``
  with Affine through ``np.dot``, Relu with a boolean mask, softmax + cross-entropy with
  ``1e-7`` in the log, its ``Adam`` allocating temporaries), float64 as in the book;
- ``fastbp-numpy`` and ``fastbp-cython``: ``fastbp.MultiLayerNet`` and
  ``fastbp.optimizers.Adam`` on each backend.

One round is one step (gradient + Adam update) on a batch of 100; ``extra_info``
gives the time of an epoch of the full MNIST (600 steps). Data (real MNIST when
FASTBP_DATA is set, else random MNIST-shaped data) is built outside the timed
region; every benchmark checks its network against the book idiom before timing.
BLAS runs on one thread (threadpoolctl, from the ``bench`` extra) so that the figures
measure the code, not thread scheduling on a shared machine.
"""
import contextlib
import os
import sys

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark", reason="the bench extra (pytest-benchmark) is not installed")

import fastbp  # noqa: E402
from fastbp import Dropout, MultiLayerNet, MultiLayerNetExtend, load_mnist  # noqa: E402

# The book's chapter-6 network and optimizers: the tests' reference, laid out as the
# book's common/ package (its layers are fastbp.bench.book's: one copy of the idiom).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                "tests", "book_reference"))
from common.layers import Dropout as BookDropout  # noqa: E402
from common.multi_layer_net_extend import MultiLayerNetExtend as BookNet  # noqa: E402
from common.optimizer import Adam as BookAdam  # noqa: E402
from fastbp.optimizers import Adam  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # the figures are then at the mercy of BLAS threading
    threadpool_limits = None

SIZES = [784, 100, 100, 100, 10]
BATCH = 100
STEPS_PER_EPOCH = 600
N_BATCHES = 50


@pytest.fixture(autouse=True)
def one_blas_thread():
    ctx = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else contextlib.nullcontext()
    with ctx:
        yield


# --------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def batches():
    """``N_BATCHES`` (x, t) batches of 100: the first real MNIST images, or random."""
    n = N_BATCHES * BATCH
    root = os.environ.get("FASTBP_DATA") or os.environ.get("FASTBP_MNIST_DIR")
    if root:
        (x, t), _ = load_mnist(normalize=False, data_dir=root)
        x, t = x[:n] / 255.0, t[:n].astype(np.intp)
    else:
        rng = np.random.default_rng(0)
        x, t = rng.random((n, 784)), rng.integers(0, 10, n)
    return [(x[i:i + BATCH].copy(), t[i:i + BATCH].copy()) for i in range(0, n, BATCH)]


def _fastbp_net(dtype, batchnorm):
    if batchnorm:
        return MultiLayerNetExtend(784, SIZES[1:-1], 10, use_batchnorm=True, dtype=dtype, rng=0)
    return MultiLayerNet(784, SIZES[1:-1], 10, dtype=dtype, rng=0)


def _init_params(dtype=np.float64, batchnorm=False):
    return {k: v.copy() for k, v in _fastbp_net(dtype, batchnorm).params.items()}


def _trainer(kind, dtype, batchnorm=False):
    """A step function ``step(x, t)`` and the network it trains."""
    params = _init_params(dtype, batchnorm)
    if kind == "book":
        net = BookNet(SIZES[0], SIZES[1:-1], SIZES[-1], use_batchnorm=batchnorm)
        for k in net.params:   # in place: the book's layers hold these arrays
            net.params[k][...] = params[k]
        opt = BookAdam()
    else:
        net = _fastbp_net(dtype, batchnorm)
        for k in net.params:
            net.params[k][...] = params[k]
        opt = Adam()

    def step(x, t):
        opt.update(net.params, net.gradient(x, t))

    return step, net


def _check_against_book(kind, dtype, batches, batchnorm=False):
    """A few steps of this contender agree with the book idiom (float64)."""
    step_b, net_b = _trainer("book", np.float64, batchnorm)
    with fastbp.use_backend("numpy" if kind == "book" else kind.split("-")[1]):
        step_f, net_f = _trainer(kind, dtype, batchnorm)
        for x, t in batches[:3]:
            step_b(x, t)
            step_f(x.astype(dtype), t)
    tol = 1e-9 if dtype == np.float64 else 2e-3
    for k in net_b.params:
        np.testing.assert_allclose(net_f.params[k], net_b.params[k], rtol=0, atol=tol)


def _run(benchmark, kind, dtype, batches, batchnorm=False):
    _check_against_book(kind, dtype, batches, batchnorm)
    data = [(x.astype(dtype), t) for x, t in batches]
    backend = "numpy" if kind in ("book", "fastbp-numpy") else "cython"
    if backend == "cython" and not fastbp.HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    with fastbp.use_backend(backend):
        step, net = _trainer(kind, dtype, batchnorm)
        it = iter(range(10**9))

        def one_step():
            x, t = data[next(it) % len(data)]
            step(x, t)

        benchmark.pedantic(one_step, rounds=300, iterations=1, warmup_rounds=20)
    for p in net.params.values():
        assert np.isfinite(p).all()
    if benchmark.stats is not None:  # None under --benchmark-disable
        # an epoch of the full MNIST is 600 such steps (min: the least disturbed figure)
        stats = benchmark.stats.stats
        benchmark.extra_info["epoch_seconds_min"] = stats.min * STEPS_PER_EPOCH
        benchmark.extra_info["epoch_seconds_median"] = stats.median * STEPS_PER_EPOCH


@pytest.mark.benchmark(group="ch6-step-float64")
@pytest.mark.parametrize("kind", ["book", "fastbp-numpy", "fastbp-cython"])
def test_step_float64(benchmark, kind, batches):
    _run(benchmark, kind, np.float64, batches)


@pytest.mark.benchmark(group="ch6-step-float32")
@pytest.mark.parametrize("kind", ["fastbp-numpy", "fastbp-cython"])
def test_step_float32(benchmark, kind, batches):
    _run(benchmark, kind, np.float32, batches)


@pytest.mark.benchmark(group="ch6-step-batchnorm-float64")
@pytest.mark.parametrize("kind", ["book", "fastbp-numpy", "fastbp-cython"])
def test_step_batchnorm_float64(benchmark, kind, batches):
    """MultiLayerNetExtend with batch normalization after every hidden Affine."""
    _run(benchmark, kind, np.float64, batches, batchnorm=True)


@pytest.mark.benchmark(group="ch6-dropout-float64")
@pytest.mark.parametrize("kind", ["book", "fastbp-numpy", "fastbp-cython", "fastbp-cython-generator"])
def test_dropout_forward_backward(benchmark, kind):
    """Dropout (ratio 0.5) forward and backward on a (100, 100) hidden activation.

    ``np.random.rand`` (the book's draws, fastbp's default) costs most of the time;
    ``fastbp-cython-generator`` draws from a ``numpy.random.Generator`` (``rng=``).
    """
    if kind.startswith("fastbp-cython") and not fastbp.HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((100, 100)), rng.standard_normal((100, 100))
    if kind == "book":
        layer = BookDropout(0.5)
    elif kind == "fastbp-cython-generator":
        layer = Dropout(0.5, inverted=False, rng=0)
    else:
        layer = Dropout(0.5, inverted=False)
    with fastbp.use_backend("numpy" if kind in ("book", "fastbp-numpy") else "cython"):
        def run():
            return layer.forward(x), layer.backward(dout)

        out, dx = benchmark.pedantic(run, rounds=300, iterations=5, warmup_rounds=10)
        if kind == "fastbp-cython-generator":
            mask = layer.mask
            assert 0.4 < mask.mean() < 0.6
            np.testing.assert_array_equal(out, x * mask)
            np.testing.assert_array_equal(dx, dout * mask)
            return
        np.random.seed(0)
        out, dx = run()
        np.random.seed(0)
        mask = np.random.rand(100, 100) > 0.5  # the book's draws: the same result
        np.testing.assert_array_equal(out, x * mask)
        np.testing.assert_array_equal(dx, dout * mask)


@pytest.mark.benchmark(group="ch6-adam-update-float64")
@pytest.mark.parametrize("kind", ["book", "fastbp-numpy", "fastbp-cython"])
def test_adam_update(benchmark, kind):
    """The optimizer alone: one Adam update of the network's 8 parameters."""
    if kind == "fastbp-cython" and not fastbp.HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    rng = np.random.default_rng(1)
    params = _init_params()
    grads = {k: rng.standard_normal(p.shape) * 0.01 for k, p in params.items()}
    ref = {k: p.copy() for k, p in params.items()}
    BookAdam().update(ref, grads)
    opt = BookAdam() if kind == "book" else Adam()
    with fastbp.use_backend("cython" if kind == "fastbp-cython" else "numpy"):
        opt.update(params, grads)
        for k in params:  # the first step agrees with the book's formulas
            np.testing.assert_allclose(params[k], ref[k], rtol=0, atol=1e-15)
        benchmark.pedantic(opt.update, args=(params, grads), rounds=300, iterations=1,
                           warmup_rounds=10)
