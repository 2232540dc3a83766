"""The compiled loops are built for AVX-512, AVX2 and baseline x86-64, and the CPU picks
one at load time (``fastbp.kernels._cython.SIMD`` says which). The suite runs the build
this machine picks; valgrind hides AVX-512 from the program it runs, so under valgrind
the AVX2 build runs, and the kernel tests must pass there too, bit for bit against the
NumPy twin as everywhere."""
import os
import shutil
import subprocess
import sys

import pytest

from fastbp import kernels

pytestmark = [
    pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built"),
    pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed"),
]

HERE = os.path.dirname(os.path.abspath(__file__))


def _under_valgrind(code):
    return subprocess.run(
        ["valgrind", "--tool=none", "-q", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=900, cwd=os.path.dirname(HERE))


def test_kernel_tests_pass_on_the_avx2_build():
    if kernels._cython.SIMD == "baseline":
        pytest.skip("this CPU runs the baseline build: no AVX2 to test")
    code = (
        "import sys, pytest\n"
        "import fastbp.kernels._cython as K\n"
        "print('SIMD', K.SIMD)\n"
        f"sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', {HERE + '/test_kernels.py'!r},"
        f" {HERE + '/test_optimizers.py'!r}]))\n"
    )
    r = _under_valgrind(code)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SIMD avx2" in r.stdout, r.stdout[:500]
