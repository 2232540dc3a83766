"""What a training step cannot beat: its matrix products (the floor) and the GEMM limit.

- ``floor`` (fully connected steps): the step's matrix products alone, ``np.matmul``
  into preallocated buffers: forward ``h @ W`` per layer, backward ``h.T @ d`` per layer
  and ``d @ W.T`` for every layer but the first (its input gradient is never used).
- ``floor+sgd``: the same, then the in-place SGD update of the weights (fastbp's fused
  update, on copies). It does all the floor's work and more, so it can never be faster;
  ``compare.py`` times the two next to each other and says when a run contradicts it.
- the GEMM limit (every step): the step's multiply-adds at the rate NumPy's own BLAS
  reaches on a 2048^3 product, measured in the same run, with the same threads. It is
  a bound no implementation of the step reaches (the convolutions' lowering, pooling,
  ReLU and the loss cost time on top), computed, not timed.
"""
import time

import numpy as np

from fastbp import kernels
from fastbp.bench import cases

__all__ = ["FLOORS", "floor_step", "gemm_rate", "multiply_adds", "limit_seconds"]


def floor_step(step, init, x, t, threads=None, lr=0.1, masks=None, update=False):
    """The floor of a fully connected step as a contender (``cases.step_case(extra=)``):
    ``run()`` does its products; nothing to check against the book (``params_of`` None)."""
    if step.kind != "mlp":
        raise cases.Unavailable("the floor is defined for the fully connected steps")
    n = len(step.sizes) - 1
    Ws = [init[f"W{i}"].copy() if update else init[f"W{i}"] for i in range(1, n + 1)]
    hs = [x] + [np.empty((x.shape[0], s), dtype=x.dtype) for s in step.sizes[1:]]
    ds = [None] + [np.full((x.shape[0], s), 1e-3, dtype=x.dtype) for s in step.sizes[1:]]
    dWs = [np.empty_like(W) for W in Ws]
    sgd = kernels.active().sgd_update

    def run():
        for i in range(n):
            np.matmul(hs[i], Ws[i], out=hs[i + 1])
        for i in range(n - 1, -1, -1):
            np.matmul(hs[i].T, ds[i + 1], out=dWs[i])
            if i > 0:
                np.matmul(ds[i + 1], Ws[i].T, out=ds[i])
        if update:
            for W, dW in zip(Ws, dWs):
                sgd(W, dW, 1e-12)   # a tiny rate keeps the copies steady
        return hs
    return run, None


def _floor_sgd(*args, **kwargs):
    return floor_step(*args, update=True, **kwargs)


# Both run NumPy's OpenBLAS products (the update: fastbp's compiled kernel).
floor_step.own_threads = _floor_sgd.own_threads = False
_floor_sgd.context = lambda: kernels.use_backend("cython" if kernels.HAVE_CYTHON else "numpy")
FLOORS = {"floor": floor_step, "floor+sgd": _floor_sgd}


def gemm_rate(dtype, n=2048, repeats=3):
    """FLOP/s of NumPy's ``a @ b`` on two n x n matrices (the best of ``repeats``)."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype=dtype)
    np.matmul(a, b, out=out)   # warm up the pool
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def multiply_adds(step, dtype="float64"):
    """The multiply-adds of one training step of ``step``: forward, weight gradient and
    input gradient of every Affine and Convolution (the first layer's input gradient
    left out: nobody uses it). Read from the book's network after one ``gradient``."""
    init, x, t, _ = cases.step_data(step, dtype)
    net = cases._bind_book(step.book_net(), init)
    with np.errstate(over="ignore"):
        net.gradient(x, t)
    layers = net.layers.values() if isinstance(net.layers, dict) else net.layers
    total, first = 0, True
    for layer in layers:
        if hasattr(layer, "col"):          # Convolution: col (rows, C*FH*FW) @ (C*FH*FW, FN)
            macs = layer.col.shape[0] * layer.col.shape[1] * layer.W.shape[0]
        elif hasattr(layer, "W"):          # Affine: x (N, in) @ W (in, out)
            macs = layer.x.shape[0] * layer.W.shape[0] * layer.W.shape[1]
        else:
            continue
        total += macs * (2 if first else 3)
        first = False
    return total


def limit_seconds(step, dtype, rate):
    """The GEMM limit of one step at ``rate`` FLOP/s."""
    return 2.0 * multiply_adds(step, dtype) / rate
