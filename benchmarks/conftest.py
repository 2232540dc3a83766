"""pytest-benchmark set-up for fastbp: pinned threads, machine info, fair timing, ratios.

Run with ``pytest benchmarks/ --benchmark-only`` (the default ``pytest`` collects
``tests/`` only). Options:

  --bench-threads N     BLAS/OpenMP/PyTorch threads (default 2, or FASTBP_BENCH_THREADS)
  --bench-skip-large    leave out 784-1000-1000-10 and DeepConvNet (or FASTBP_BENCH_SKIP_LARGE=1)
  --bench-budget S      seconds of timing per contender (default 0.2)

Every contender of a case lands in one pytest-benchmark group (the case id), so the
book's idiom, the two backends, the floor and the peers (PyTorch, JAX: ``peers.py``)
print side by side; the busy runs of the steps (one CPU-bound process spinning on one
core, ``busy.py``) form groups of their own (the case id plus ", busy"). At the end the
times and the release targets (``targets.py``) are printed and stored in the JSON
(``fastbp``). ``compare.py`` runs the same cases interleaved, for ratios.
"""
import contextlib
import os
import time
import warnings

import numpy as np
import pytest

import machine as _machine
import targets as _targets
from busy import busy
from compare import report
from fastbp.bench import cases as _cases

BUSY = _targets.BUSY

# case id (", busy" added for busy runs) -> {"kind", "load", "info", "times": {contender: s}}
RESULTS = {}
_STATE = {"threads": None, "pools": None}


def _env_int(name, default):
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default


def pytest_addoption(parser):
    group = parser.getgroup("fastbp benchmarks")
    group.addoption("--bench-threads", type=int,
                    default=_env_int("FASTBP_BENCH_THREADS", min(2, os.cpu_count() or 1)),
                    help="BLAS/OpenMP/PyTorch threads for the fastbp benchmarks (default 2)")
    group.addoption("--bench-skip-large", action="store_true",
                    default=os.environ.get("FASTBP_BENCH_SKIP_LARGE", "") not in ("", "0"),
                    help="leave out 784-1000-1000-10 and DeepConvNet")
    group.addoption("--bench-budget", type=float, default=0.2,
                    help="seconds of timing per contender (default 0.2)")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a large network (skipped by --bench-skip-large)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--bench-skip-large"):
        return
    skip = pytest.mark.skip(reason="--bench-skip-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def pinned_threads(request):
    """Pin BLAS, OpenMP, fastbp's own threads and PyTorch to --bench-threads."""
    n = request.config.getoption("--bench-threads")
    _STATE["threads"] = n
    try:
        import torch   # loaded first, so that its OpenMP pool is pinned too
    except Exception:   # not installed (its benchmarks skip), or a broken install
        pass
    else:
        torch.set_num_threads(n)
    try:
        import jax  # noqa: F401  (loaded before the pools are pinned)
    except Exception:
        pass
    with _cases.fastbp_threads(n):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            warnings.warn("threadpoolctl is not installed: BLAS/OpenMP threads are not pinned "
                          "(pip install 'fastbp[bench]')")
            _STATE["pools"] = None
            yield n
            return
        with threadpool_limits(limits=n):
            _STATE["pools"] = _machine.threadpools()
            yield n


def pytest_benchmark_update_machine_info(config, machine_info):
    info = _machine.machine_info(_STATE["threads"])
    info["threadpools"] = _STATE["pools"]   # as they were inside the pinned session
    machine_info["fastbp"] = info


# ---------------------------------------------------------------------------- running

_CASE_CACHE = {}


def get_case(key, build):
    """The case for ``key``, built once; only the latest case is kept (large arrays)."""
    if key not in _CASE_CACHE:
        _CASE_CACHE.clear()
        _CASE_CACHE[key] = build()
    return _CASE_CACHE[key]


def _probe(c, fresh):
    """The fastest of a few untimed-by-pytest calls: how long one call takes."""
    best = float("inf")
    for _ in range(3):
        args = c.setup()
        t0 = time.perf_counter()
        c.fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def run_contender(benchmark, case, name, budget, load="idle"):
    """Check ``name`` against the book, then time it with pytest-benchmark's pedantic mode.

    Cases whose inputs get overwritten (``case.fresh``) take a fresh copy per round from
    ``setup`` (one call per round); the others reuse their inputs and loop ``iterations``
    calls per round so that a round lasts at least about 20 us. ``load="busy"``: timed
    with one CPU-bound process spinning on one core, started here and stopped after.
    """
    if name in case.skipped:
        pytest.skip(case.skipped[name])
    if name not in case.contenders:
        pytest.skip(f"{name} does not apply to {case.id}")
    c = case.contenders[name]
    case.check(name)   # correctness first, outside the timed region
    case_id = case.id + (BUSY if load == "busy" else "")
    benchmark.group = case_id
    benchmark.extra_info.update(contender=name, case=case_id, kind=case.kind, load=load,
                                **{k: v for k, v in case.info.items() if not isinstance(v, np.ndarray)})
    with c.context(), (busy() if load == "busy" else contextlib.nullcontext()):
        est = max(_probe(c, case.fresh), 1e-7)
        if case.fresh:
            rounds = int(min(2000, max(5, budget / est)))
            benchmark.pedantic(c.fn, setup=lambda: (c.setup(), {}), rounds=rounds,
                               warmup_rounds=1)
        else:
            iterations = max(1, int(20e-6 / est))
            rounds = int(min(2000, max(5, budget / (est * iterations))))
            benchmark.pedantic(c.fn, args=c.setup(), rounds=rounds, iterations=iterations,
                               warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:   # --benchmark-disable: ran once, nothing to record
        return
    median = stats.stats.median
    entry = RESULTS.setdefault(case_id, {"kind": case.kind, "load": load, "info": case.info,
                                         "times": {}})
    entry["times"][name] = median
    book = entry["times"].get("book")
    if book and name != "book":
        benchmark.extra_info["book/this"] = book / median
    if case.kind == "step" and name != "cython" and "cython" in entry["times"]:
        benchmark.extra_info[f"{name}/cython"] = median / entry["times"]["cython"]
    if load == "busy" and name in RESULTS.get(case.id, {}).get("times", {}):
        benchmark.extra_info["busy/idle"] = median / RESULTS[case.id]["times"][name]


def _ratios(times):
    """Ratios of medians: every contender against fastbp's compiled step."""
    return {f"{a}/cython": times[a] / times["cython"] for a in times
            if a != "cython" and times.get("cython")}


def _results():
    return [{"id": k, "kind": v["kind"], "load": v["load"],
             "info": {i: j for i, j in v["info"].items() if not isinstance(j, np.ndarray)},
             "times": v["times"], "ratios": _ratios(v["times"])} for k, v in RESULTS.items()]


def pytest_benchmark_update_json(config, benchmarks, output_json):
    results = _results()
    output_json["fastbp"] = {"results": results, "targets": _targets.evaluate(results)}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    results = _results()
    terminalreporter.section("fastbp: ratios of medians (how many times faster)")
    lines = report(results) + [""] + _targets.table(_targets.evaluate(results))
    terminalreporter.write("\n".join(lines) + "\n")
