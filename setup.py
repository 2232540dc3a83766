"""Build the compiled kernels.

Everything about the extension lives here: the module list, the Cython compiler
directives, the C flags of each compiler and the OpenMP probe. Build-time switches:

- ``FASTBP_DEBUG=1``: Cython's bounds and wraparound checks back on, no optimisation,
  debug symbols kept (the test suite must pass in that build too). Release builds are
  optimised and stripped.
- ``FASTBP_OPENMP=0``: build without OpenMP (the kernels then run on one thread), quietly.
  ``FASTBP_OPENMP=1``: OpenMP is required, the build fails without it. Unset: OpenMP
  when the compiler can build and link an OpenMP program, else a loud warning and a
  single-threaded build (scikit-learn's ``openmp_helpers`` does the same).
"""
import os
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTBP_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# Flags per compiler family, release and debug. The results of the kernels must not
# depend on the compiler, the SIMD level or the thread count, hence:
# - no -ffast-math (or /fp:fast): it would drop the NaN propagation that the kernel
#   contract promises;
# - -ffp-contract=off: a * b + c is never fused into an FMA, so the AVX-512, AVX2 and
#   baseline builds of a loop round alike (clang fuses within a statement by default;
#   MSVC does not fuse under /fp:precise unless /fp:contract is given);
# - -fno-math-errno: lets gcc and clang vectorise sqrt (the optimizers): no code here
#   reads errno. MSVC's /O2 vectorises it without being told.
# -O3 lets gcc vectorise the elementwise loops (clang does at -O2 already, -O3 is harmless).
# -g0 overrides the -g that CPython's own CFLAGS add on Unix: debug info triples the .so
# and makes the compile slower, and -s strips what is left at link time (FASTBP_DEBUG=1
# keeps both).
COMPILE_ARGS = {
    "gcc": {"release": ["-O3", "-g0", "-fno-math-errno", "-ffp-contract=off"],
            "debug": ["-O0", "-g", "-ffp-contract=off"]},
    "clang": {"release": ["-O3", "-g0", "-fno-math-errno", "-ffp-contract=off"],
              "debug": ["-O0", "-g", "-ffp-contract=off"]},
    "msvc": {"release": ["/O2", "/fp:precise"],
             "debug": ["/Od", "/Zi", "/fp:precise"]},
}
LINK_ARGS = {
    # Apple's linker has no -s: -S drops debug info, -x the local symbols.
    "gcc": {"release": ["-s"], "debug": []},
    "clang": {"release": ["-Wl,-S,-x"] if sys.platform == "darwin" else ["-s"], "debug": []},
    "msvc": {"release": [], "debug": ["/DEBUG"]},
}
# (compile flags, link flags) that turn OpenMP on, per family. Apple's clang has no
# -fopenmp driver flag: the preprocessor flag plus Homebrew's libomp
# (CPPFLAGS/LDFLAGS point at it, as for scikit-learn).
OPENMP_ARGS = {
    "gcc": (["-fopenmp"], ["-fopenmp"]),
    "clang": ((["-Xpreprocessor", "-fopenmp"], ["-lomp"]) if sys.platform == "darwin"
              else (["-fopenmp"], ["-fopenmp"])),
    "msvc": (["/openmp"], []),
}

OPENMP_PROBE = textwrap.dedent("""\
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return !(n >= 1 && omp_get_max_threads() >= 1);
    }
""")


def compiler_family(compiler):
    """"gcc", "clang" or "msvc" for a distutils compiler object."""
    if compiler.compiler_type == "msvc":
        return "msvc"
    if compiler.compiler_type == "mingw32":
        return "gcc"
    cc = " ".join(getattr(compiler, "compiler_so", None) or getattr(compiler, "compiler", ["cc"]))
    if "clang" in cc or (sys.platform == "darwin" and os.path.basename(cc.split()[0]) in ("cc", "c++")):
        return "clang"   # macOS's cc is Apple's clang
    return "gcc"


def openmp_flags(compiler, family):
    """``(compile_args, link_args)`` that build the kernels with OpenMP, or ``([], [])``.

    Probes by compiling and linking a small OpenMP program with the compiler that
    builds the extension. A failed probe is loud (a warning naming the flag and the
    error) unless FASTBP_OPENMP=0 asked for no OpenMP; FASTBP_OPENMP=1 makes it fatal.
    """
    setting = os.environ.get("FASTBP_OPENMP", "")
    if setting == "0":
        return [], []
    cflags, ldflags = OPENMP_ARGS[family]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        step = "compile"
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
            step = "link"
            compiler.link_executable(objects, "omp_probe", output_dir=tmp,
                                     extra_postargs=ldflags)
        except Exception as exc:  # CompileError, LinkError; the compiler's output is above
            error = f"{type(exc).__name__} at the {step} step: {str(exc)[:300]}"
        else:
            return cflags, ldflags
    flags = " ".join(dict.fromkeys(cflags + ldflags))
    message = (
        f"fastbp: building WITHOUT OpenMP: {family} could not build an OpenMP program "
        f"with {flags} ({error}). The compiled kernels will run on one thread. Install "
        "the compiler's OpenMP runtime (libgomp for gcc, libomp for clang) and rebuild, "
        "or set FASTBP_OPENMP=0 to build without OpenMP on purpose."
    )
    if setting == "1":
        raise RuntimeError(message + " (FASTBP_OPENMP=1 requires OpenMP)")
    banner = "*" * 78
    print(f"\n{banner}\n{message}\n{banner}\n", file=sys.stderr)
    warnings.warn(message, stacklevel=2)
    return [], []


class BuildExt(build_ext):
    """Flags chosen for the compiler that actually builds (thinc's setup.py does it
    this way): ``compiler_type`` is only known once the command runs."""

    def build_extensions(self):
        family = compiler_family(self.compiler)
        mode = "debug" if DEBUG else "release"
        omp_c, omp_l = openmp_flags(self.compiler, family)
        for ext in self.extensions:
            ext.extra_compile_args = COMPILE_ARGS[family][mode] + omp_c + ext.extra_compile_args
            ext.extra_link_args = LINK_ARGS[family][mode] + omp_l + ext.extra_link_args
        super().build_extensions()


def extensions():
    # Imported here, not at the top: ``setup.py --help`` and a test that imports this
    # file for its helpers need neither.
    import numpy as np
    from Cython.Build import cythonize

    ext = Extension(
        "fastbp.kernels._cython",
        ["src/fastbp/kernels/_cython.pyx"],
        depends=["src/fastbp/kernels/_loops.h"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    # the compiled backend's matrix products (BLAS calls on fastbp's threads)
    gemm = Extension(
        "fastbp.kernels._gemm",
        ["src/fastbp/kernels/_gemm.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    # the convolution and 2x2 pooling kernels (re-exported by _cython)
    conv = Extension(
        "fastbp.kernels._conv",
        ["src/fastbp/kernels/_conv.pyx"],
        depends=["src/fastbp/kernels/_conv.h", "src/fastbp/kernels/_loops.h"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    # the thread pool every compiled module runs its blocks on (one copy: _pool.pxd)
    pool = Extension(
        "fastbp.kernels._pool",
        ["src/fastbp/kernels/_pool.pyx"],
        depends=["src/fastbp/kernels/_pool.h"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    return cythonize([ext, gemm, conv, pool], compiler_directives=directives)


if __name__ == "__main__":   # also how setuptools' build backend runs this file
    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
