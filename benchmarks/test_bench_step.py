"""Whole training steps (forward, loss, backward, SGD update), side by side, idle and busy.

784-50-10 at batch 100 and 784-1000-1000-10 at batch 256, float64 and float32: the
book's idiom (``gradient`` then ``params[k] -= lr * g``), fastbp on each backend (its
``train_step`` with the fused SGD), the floor (the step's matrix products alone, into
preallocated buffers), the floor plus the in-place weight update, and the peers of
``peers.py``: PyTorch eager and JAX ``jit``, each skipped with the reason when it is not
installed. One group per step; the busy variant runs the same contenders with one
CPU-bound process spinning on one core (group "... , busy"), and the summary at the end
gives each contender's busy/idle slowdown.
"""
import pytest

from conftest import get_case, run_contender
from fastbp.bench import cases
from peers import PEERS

CONTENDERS = cases.STEP_CONTENDERS + tuple(PEERS)


@pytest.mark.parametrize("load", ["idle", "busy"])
@pytest.mark.parametrize("arch,dtype,contender", [
    pytest.param(arch, dtype, name, id=f"{arch}-{dtype}-{name}")
    for arch in cases.STEP_ARCHS for dtype in cases.DTYPES for name in CONTENDERS
])
def test_step(benchmark, request, pinned_threads, arch, dtype, contender, load):
    case = get_case(("step", arch, dtype),
                    lambda: cases.step_case(arch, dtype, peers=PEERS, threads=pinned_threads))
    run_contender(benchmark, case, contender, request.config.getoption("--bench-budget"), load)
