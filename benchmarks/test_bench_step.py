"""Whole training steps (forward, loss, backward, SGD update), side by side.

784-50-10 at batch 100 and 784-1000-1000-10 at batch 256, float64 and float32: the
book's idiom, fastbp on each backend (``net.gradient`` then ``params[k] -= lr * g``,
the book's API), the floor (the step's matrix products alone, into preallocated
buffers), the floor plus the in-place weight update, and PyTorch eager on the CPU when
it is installed. One group per step.
"""
import pytest

from conftest import get_case, run_contender
from fastbp.bench import cases

CONTENDERS = ("book", "numpy", "cython", "floor", "floor+sgd", "torch")


@pytest.mark.parametrize("arch,dtype,contender", [
    pytest.param(arch, dtype, name, id=f"{arch}-{dtype}-{name}")
    for arch, dtype in cases.step_case_ids() for name in CONTENDERS
])
def test_step(benchmark, request, pinned_threads, arch, dtype, contender):
    case = get_case(("step", arch, dtype),
                    lambda: cases.step_case(arch, dtype, contenders=CONTENDERS,
                                            torch_threads=pinned_threads))
    run_contender(benchmark, case, contender, request.config.getoption("--bench-budget"))
