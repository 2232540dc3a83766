"""Layers, side by side: the book's layer, fastbp's layer on the NumPy backend and on
the compiled backend, each called alone on the input it sees in its network; one
pytest-benchmark group per (network, layer, direction, dtype).

The layers of the four networks of ``fastbp.bench.cases.STEPS``: Affine, Relu and the
loss of the fully connected ones, and Convolution, Pooling, Relu and Affine forward
and backward of SimpleConvNet and DeepConvNet.

    pytest benchmarks/test_bench_kernels.py --benchmark-only -k "SimpleConvNet and Convolution"
"""
import pytest

from conftest import get_case, run_contender
from fastbp.bench import cases

CASES = {case_id: build for step in cases.STEPS.values() for dtype in cases.DTYPES
         for case_id, build in cases.layer_cases(step, dtype)}


@pytest.mark.parametrize("case_id,contender", [
    pytest.param(case_id, name, id=f"{case_id}-{name}".replace(" ", "-"),
                 marks=[pytest.mark.large] if case_id.split()[0] in
                 ("784-1000-1000-10", "DeepConvNet") else [])
    for case_id in CASES for name in ("book", "numpy", "cython")
])
def test_layer(benchmark, request, case_id, contender):
    case = get_case(("layer", case_id), CASES[case_id])
    run_contender(benchmark, case, contender, request.config.getoption("--bench-budget"))
