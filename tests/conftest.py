import os

import numpy as np
import pytest

import fastbp
from fastbp import kernels
from _mnist import FULL_DIR

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; its tests skip without it
    pass
else:
    # "dev": quick local runs. "ci": more examples, chosen when CI=true.
    # "thorough": a long bug hunt, by hand (HYPOTHESIS_PROFILE=thorough).
    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                   print_blob=True)
    settings.register_profile("dev", max_examples=100, **_common)
    settings.register_profile("ci", max_examples=400, **_common)
    settings.register_profile("thorough", max_examples=3000, **_common)
    settings.load_profile(os.environ.get(
        "HYPOTHESIS_PROFILE",
        "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev",
    ))

AVAILABLE = [b for b in kernels.BACKENDS if b == "numpy" or kernels.HAVE_CYTHON]


@pytest.fixture(params=kernels.BACKENDS)
def backend(request):
    """Run the test once per backend, with the layers switched to it."""
    if request.param == "cython" and not kernels.HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    with fastbp.use_backend(request.param) as module:
        yield module


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    """fastbp reads FASTBP_DATA by default: no test gets the full set without asking."""
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.delenv("FASTBP_MNIST_DIR", raising=False)


@pytest.fixture
def mnist_dir():
    """The full MNIST folder (IDX, gzip), from FASTBP_DATA (see _mnist.FULL_DIR)."""
    if not FULL_DIR or not os.path.isdir(FULL_DIR):
        pytest.skip("the full MNIST set is not available (set FASTBP_DATA)")
    return FULL_DIR


@pytest.fixture
def rng():
    return np.random.default_rng(20261129)
