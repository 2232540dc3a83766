"""Build the compiled kernels.

Everything about the extension lives here: the module list, the Cython compiler
directives and the C flags. Set FASTBP_DEBUG=1 at build time to turn Cython's bounds
and wraparound checks back on (the test suite must pass in that build too).
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTBP_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# -O3 lets gcc vectorise the elementwise loops; -fno-math-errno lets it vectorise sqrt
# (the optimizers) since no code here reads errno. No -ffast-math: it would drop the NaN
# propagation that the kernel contract promises.
extra_compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]

extensions = [
    Extension(
        "fastbp.kernels._cython",
        ["src/fastbp/kernels/_cython.pyx"],
        depends=["src/fastbp/kernels/_loops.h"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=extra_compile_args,
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
