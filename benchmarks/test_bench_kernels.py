"""Kernels, side by side: the book's layer, fastbp's layer on the NumPy backend and on
the compiled backend; one pytest-benchmark group per (kernel, shape, dtype).

Also the compiled kernels at 1 and 2 OpenMP threads on the large shapes (groups
``threads ...``). The cases themselves (inputs, contenders, checks) are defined in
``fastbp.bench.cases``; the grid of shapes is this file's.
"""
import numpy as np
import pytest

from conftest import get_case, run_contender
from fastbp.bench import cases

LARGE = 4096 * 1000

# The book's shapes and larger ones. Affine backward runs at the TwoLayerNet layers: (x, W) shapes.
KERNEL_SHAPES = {  # kernel -> shapes
    "relu_forward": [(100, 50), (100, 784), (256, 1024), (4096, 4096)],
    "relu_backward": [(100, 50), (100, 784), (256, 1024), (4096, 4096)],
    "sigmoid_forward": [(100, 50), (100, 784), (256, 1024), (4096, 4096)],
    "sigmoid_backward": [(100, 50), (100, 784), (256, 1024), (4096, 4096)],
    "softmax_ce_labels": [(100, 10), (256, 1000), (4096, 1000)],
    "softmax_ce_onehot": [(100, 10), (256, 1000), (4096, 1000)],
    "affine_backward": [(100, 784, 50), (100, 50, 10)],
}


def kernel_case_ids():
    """``(kernel, shape, dtype)`` for every kernel case, in a stable order."""
    return [(kernel, shape, dtype) for kernel, shapes in KERNEL_SHAPES.items()
            for shape in shapes for dtype in cases.DTYPES]


def threads_case_ids():
    return [(k, s, d) for k, s in cases.THREADS_CASES for d in cases.DTYPES]


def _id(kernel, shape, dtype):
    return f"{kernel}-{'x'.join(map(str, shape))}-{dtype}"


def _params(ids, contenders):
    out = []
    for kernel, shape, dtype in ids:
        marks = [pytest.mark.large] if np.prod(shape) >= LARGE else []
        for name in contenders:
            out.append(pytest.param(kernel, shape, dtype, name, marks=marks,
                                    id=f"{_id(kernel, shape, dtype)}-{name}"))
    return out


@pytest.mark.parametrize("kernel,shape,dtype,contender",
                         _params(kernel_case_ids(), ("book", "numpy", "cython")))
def test_kernel(benchmark, request, kernel, shape, dtype, contender):
    case = get_case(("kernel", kernel, shape, dtype),
                    lambda: cases.kernel_case(kernel, shape, dtype))
    run_contender(benchmark, case, contender, request.config.getoption("--bench-budget"))


@pytest.mark.parametrize("kernel,shape,dtype,contender",
                         _params(threads_case_ids(), ("cython-1t", "cython-2t")))
def test_threads(benchmark, request, kernel, shape, dtype, contender):
    if not cases.have_threadpoolctl():
        pytest.skip("threadpoolctl is not installed (pip install 'fastbp[bench]')")
    case = get_case(("threads", kernel, shape, dtype),
                    lambda: cases.threads_case(kernel, shape, dtype))
    run_contender(benchmark, case, contender, request.config.getoption("--bench-budget"))
