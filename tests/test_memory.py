"""Memory: repeated calls keep the process's resident memory flat (no leak per call).

Resident memory is read from ``/proc/self/statm`` (Linux). On the compiled backend every
layer runs 100,000 forward/backward pairs on small arrays after a warm-up (the place
where a missing decref or free would hide); on the NumPy backend, plain Python whose
objects are reference-counted, 20,000 pairs keep the test short. The error paths run
too, with larger arrays, so that a leaked array per failed call would show as tens of MB.
``FASTBP_MEMORY_CALLS`` overrides the compiled backend's count (the NumPy one is a fifth).
"""
import os
import warnings

import numpy as np
import pytest

from fastbp import kernels
from fastbp.layers import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss

STATM = "/proc/self/statm"
pytestmark = pytest.mark.skipif(not os.path.exists(STATM), reason="needs /proc/self/statm (Linux)")

CALLS = int(os.environ.get("FASTBP_MEMORY_CALLS", "100000"))


def calls_for(backend):
    return CALLS if backend == "cython" else CALLS // 5
SLACK_MB = 4.0


def rss_mb():
    with open(STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _growth(step, calls):
    for _ in range(2000):  # warm up: caches, free lists, lazily built objects
        step()
    before = rss_mb()
    for _ in range(calls):
        step()
    return rss_mb() - before


def _layer_steps():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    d = rng.standard_normal((4, 5))
    W, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    d3 = rng.standard_normal((4, 3))
    t = rng.integers(0, 5, 4)
    relu, sig, aff, loss, mul, add = Relu(), Sigmoid(), Affine(W, b), SoftmaxWithLoss(), MulLayer(), AddLayer()

    def relu_step():
        relu.forward(x)
        relu.backward(d)

    def sigmoid_step():
        sig.forward(x)
        sig.backward(d)

    def affine_step():
        aff.forward(x)
        aff.backward(d3)

    def softmax_step():
        loss.forward(x, t)
        loss.backward()

    def mul_add_step():
        mul.forward(x, d)
        mul.backward(d)
        add.forward(x, d)
        add.backward(d)

    return {"Relu": relu_step, "Sigmoid": sigmoid_step, "Affine": affine_step,
            "SoftmaxWithLoss": softmax_step, "MulLayer+AddLayer": mul_add_step}


@pytest.mark.parametrize("name", sorted(_layer_steps()))
def test_layers_do_not_leak(backend, name):
    step = _layer_steps()[name]
    calls = calls_for(kernels.get_backend())
    grown = _growth(step, calls)
    assert grown < SLACK_MB, f"{name}: resident memory grew by {grown:.1f} MB over {calls} calls"


def test_kernels_with_out_and_error_paths_do_not_leak(backend):
    k = kernels.active()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 40))   # 12.5 kB: a leaked array per call would be obvious
    xf = np.asfortranarray(x)
    out = np.empty_like(x)
    t = rng.integers(0, 40, 40)
    bad_t = t.copy()
    bad_t[3] = 40
    half = np.float16(x)

    def step():
        k.relu_forward(xf, out=out)
        k.sigmoid_forward(x, out=out)
        k.softmax_cross_entropy(x, t, out=out)
        k.softmax_cross_entropy_backward(out, t, out=out)
        for call in (lambda: k.softmax_cross_entropy(x, bad_t),      # label range
                     lambda: k.relu_backward(x, x[:3] <= 0),          # mask shape
                     lambda: k.sigmoid_forward(half),                 # dtype
                     lambda: k.bias_grad(x, out=out),                 # out shape
                     lambda: k.affine_backward(x, x, x[:5])):         # W shape
            try:
                call()
            except (ValueError, TypeError):
                pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grown = _growth(step, calls_for(kernels.get_backend()) // 20)
    assert grown < SLACK_MB, f"resident memory grew by {grown:.1f} MB over {calls_for(kernels.get_backend()) // 20} calls"
