"""The machine a benchmark ran on: CPU, NumPy and its BLAS, thread pools, environment.

Used by ``benchmarks/compare.py`` and ``benchmarks/conftest.py`` (pytest-benchmark's
machine info), so every set of figures carries the configuration it came from.
"""
import os
import platform
import sys
import textwrap

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


def peers_info():
    """The peer libraries the benchmark loaded (PyTorch, JAX), with their versions."""
    out = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = {"version": torch.__version__, "num_threads": torch.get_num_threads()}
    jax = sys.modules.get("jax")
    if jax is not None:
        out["jax"] = {"version": getattr(jax, "__version__", "?"),
                      "XLA_FLAGS": os.environ.get("XLA_FLAGS")}
    return out


def _fastbp_threads():
    from fastbp import kernels
    return kernels.get_num_threads()


def machine_info(threads=None):
    from fastbp import __version__
    from fastbp import kernels
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
        "peers": peers_info(),
        "env": {k: os.environ.get(k) for k in ENV_VARS},
    }


def describe(info, width=100):
    """A few lines of text for the top of a report, none wider than ``width``."""
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items() if v is not None) or "none set"
    blas = info["blas"]
    pools = info.get("threadpools")
    n = info["threads_pinned"]
    if pools is None:
        threads = (f"threads: fastbp's at {n}; the BLAS and OpenMP pools run at their defaults "
                   "(install threadpoolctl to set them: pip install 'fastbp[bench]')")
    else:
        threads = f"threads: {n} for fastbp, BLAS and OpenMP; pools: " + "; ".join(
            " ".join(str(p.get(k)) for k in ("internal_api", "version", "architecture")
                     if p.get(k)) + f" x{p.get('num_threads')}" for p in pools)
    peers = info.get("peers") or {}
    peer_txt = ", ".join(f"{name} {p['version']}" for name, p in peers.items()) or "none"
    compiled = "not built (NumPy backend only)"
    if info["fastbp_cython"]:
        openmp = "with OpenMP" if info.get("fastbp_openmp") else "without OpenMP"
        compiled = f"{info.get('fastbp_simd')} loops, {openmp}"
    lines = [
        f"machine: {info['cpu']} ({info['cpu_count']} CPUs), Python {info['python']}, "
        f"NumPy {info['numpy']} ({blas.get('name', '?')} {blas.get('version', '')})".rstrip(),
        threads,
        f"fastbp {info['fastbp']}, compiled kernels: {compiled}; peers: {peer_txt}",
        f"environment: {env}",
    ]
    return "\n".join(w for line in lines
                     for w in textwrap.wrap(line, width, subsequent_indent="  "))
