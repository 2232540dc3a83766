"""Whole training steps (forward, loss, backward, SGD update), side by side, idle and busy.

Every step of ``fastbp.bench.cases.STEPS``: 784-50-10 (batch 100), 784-1000-1000-10
(batch 256), and the book's SimpleConvNet and DeepConvNet (batch 100 of MNIST-shaped
images), float64 and float32. One pytest-benchmark group per step holds the book's
idiom (``gradient``, then ``params[k] -= lr * g``), fastbp on each backend (its
``train_step``), fastbp through the book's API, fastbp on one thread, the floor and
floor+sgd (fully connected steps: ``limits.py``) and the peers of ``peers.py`` (PyTorch
eager, JAX ``jit``, each skipped with the reason when it is not installed). Every
contender is checked against the book's step before it is timed. The busy variant runs
the same contenders with one CPU-bound process spinning on one core (group
"..., busy").

    pytest benchmarks/test_bench_step.py --benchmark-only -k "SimpleConvNet and idle"
"""
import pytest

import limits
from conftest import get_case, run_contender
from fastbp.bench import cases
from peers import PEERS

OWN = ("book", "numpy", "cython", "cython-api", "cython-1t")
CONTENDERS = OWN + tuple(limits.FLOORS) + tuple(PEERS)


def _case(step, dtype, threads):
    extra = dict(PEERS, **(limits.FLOORS if cases.STEPS[step].kind == "mlp" else {}))
    return cases.step_case(step, dtype, contenders=OWN, extra=extra, threads=threads)


@pytest.mark.parametrize("load", ["idle", "busy"])
@pytest.mark.parametrize("step,dtype,contender", [
    pytest.param(step, dtype, name, id=f"{step}-{dtype}-{name}",
                 marks=[pytest.mark.large] if not cases.STEPS[step].quick else [])
    for step in cases.STEPS for dtype in cases.DTYPES for name in CONTENDERS
])
def test_step(benchmark, request, pinned_threads, step, dtype, contender, load):
    case = get_case(("step", step, dtype), lambda: _case(step, dtype, pinned_threads))
    run_contender(benchmark, case, contender, request.config.getoption("--bench-budget"), load)
