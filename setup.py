"""Build the compiled kernels.

Everything about the extension lives here: the module list, the Cython compiler
directives and the C flags. Set FASTBP_DEBUG=1 at build time to turn Cython's bounds
and wraparound checks back on (the test suite must pass in that build too).
"""
import os
import tempfile

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
# (the optimizers) since no code here reads errno. -ffp-contract=off: a * b + c is never
# fused into an FMA, so the AVX-512, AVX2 and baseline builds of a loop round alike.
# No -ffast-math: it would drop the NaN propagation that the kernel contract promises.
extra_compile_args = (["-O0", "-g"] if DEBUG else ["-O3", "-fno-math-errno"]) + ["-ffp-contract=off"]


def openmp_flags():
    """``-fopenmp`` when the C compiler builds and links an OpenMP program (gcc does),
    else nothing: the kernels then run on one thread. FASTBP_OPENMP=0 turns it off."""
    if os.environ.get("FASTBP_OPENMP", "") == "0":
        return []
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objects, os.path.join(tmp, "probe"),
                                     extra_postargs=["-fopenmp"])
        except Exception:  # CompileError, LinkError: no OpenMP here
            return []
    return ["-fopenmp"]


openmp = openmp_flags()

extensions = [
    Extension(
        "fastbp.kernels._cython",
        ["src/fastbp/kernels/_cython.pyx"],
        depends=["src/fastbp/kernels/_loops.h"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=extra_compile_args + openmp,
        extra_link_args=openmp,
    ),
    Extension(
        "fastbp.kernels._gemm",
        ["src/fastbp/kernels/_gemm.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=extra_compile_args + openmp,
        extra_link_args=openmp,
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
