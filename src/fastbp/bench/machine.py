"""The machine a benchmark ran on: CPU, NumPy and its BLAS, thread pools, environment.

Used by ``fastbp bench --json`` and by ``benchmarks/conftest.py`` (pytest-benchmark's
machine info), so every set of figures carries the configuration it came from.
"""
import os
import platform

import numpy as np

# Variables that change which BLAS kernel runs or how many threads run it.
ENV_VARS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "OPENBLAS_VERBOSE", "FASTBP_BACKEND",
)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_config():
    """NumPy's build-time BLAS (name, version, configuration string)."""
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return {k: blas.get(k) for k in ("name", "version", "openblas configuration") if blas.get(k)}
    except Exception:   # NumPy < 1.25 has no mode="dicts"
        return {}


def threadpools():
    """The thread pools loaded now (threadpoolctl), or None when it is not installed.

    For OpenBLAS, ``architecture`` is the kernel that actually runs: the place to see
    the effect of ``OPENBLAS_CORETYPE``.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads",
            "architecture", "threading_layer")
    return [{k: p.get(k) for k in keys if p.get(k) is not None} for p in threadpool_info()]


def torch_info():
    import sys
    torch = sys.modules.get("torch")   # only report torch if the benchmark loaded it
    if torch is None:
        return None
    return {"version": torch.__version__, "num_threads": torch.get_num_threads()}


def _fastbp_threads():
    from .. import kernels
    return kernels.get_num_threads()


def machine_info(threads=None):
    from .. import __version__
    from .. import kernels
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "blas": blas_config(),
        "fastbp": __version__,
        "fastbp_cython": kernels.HAVE_CYTHON,
        "fastbp_simd": kernels._cython.SIMD if kernels.HAVE_CYTHON else None,
        "fastbp_openmp": kernels._cython.HAVE_OPENMP if kernels.HAVE_CYTHON else None,
        "fastbp_default_backend": kernels.get_backend(),
        "threads_pinned": threads,
        "fastbp_threads": _fastbp_threads(),
        "threadpools": threadpools(),
        "torch": torch_info(),
        "env": {k: os.environ.get(k) for k in ENV_VARS},
    }


def describe(info):
    """A few lines of text for the top of a report."""
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items() if v is not None) or "none set"
    blas = info["blas"]
    pools = info.get("threadpools")
    if pools is None:
        pools_txt = "threadpoolctl not installed: threads NOT pinned"
    else:
        pools_txt = "; ".join(
            f"{p.get('internal_api')} {p.get('version') or ''} {p.get('architecture') or ''}"
            f" x{p.get('num_threads')}".replace("  ", " ") for p in pools)
    torch = info.get("torch")
    lines = [
        f"machine: {info['cpu']} ({info['cpu_count']} CPUs), Python {info['python']}, "
        f"NumPy {info['numpy']} ({blas.get('name', '?')} {blas.get('version', '')})",
        f"threads: pinned to {info['threads_pinned']}; pools: {pools_txt}",
        f"fastbp {info['fastbp']}, compiled kernels: {info['fastbp_cython']}"
        + (f" ({info.get('fastbp_simd')} loops, OpenMP: {info.get('fastbp_openmp')})"
           if info['fastbp_cython'] else "") + "; "
        f"torch: {torch['version'] + ' x' + str(torch['num_threads']) if torch else 'not used'}",
        f"environment: {env}",
    ]
    return "\n".join(lines)
