"""``fastbp bench``: how fast fastbp is on this machine, against the book's NumPy idiom.

Times whole training steps (784-50-10 and SimpleConvNet at batch 100; without
``quick`` also 784-1000-1000-10 at batch 256 and DeepConvNet, and the layers of the
first two networks, each called alone) for fastbp's two backends and the book's
idiom (``fastbp.bench.book``), and prints how many times faster or slower fastbp is.
Options are parsed by ``fastbp.cli`` (``fastbp bench --help``); ``run`` does the work.

PyTorch and JAX, the matrix-product floor and the GEMM limit, a busy machine, fastbp
on one thread against its default, per-layer profiles and plots are not part of the
installed package: they live in ``benchmarks/`` and ``tools/`` of the source tree
(``benchmarks/README.md``), on top of the same cases and timing.
"""
import contextlib
import json
import os
import platform
import sys
import textwrap
import time

import numpy as np

from . import cases as _cases
from .timing import machine_load, measure

__all__ = ["run", "select", "report", "warnings_for", "fmt_time", "vs", "table",
           "machine_header"]

WIDTH = 100   # every line of the report fits in this many columns
# A contender whose rounds differ by more than this factor was disturbed.
NOISY = 2.0
# fastbp's contenders of a step or layer, in the order shown, and their names.
NAMES = {"book": "the book", "numpy": "fastbp numpy", "cython": "fastbp",
         "cython-api": "fastbp, book API"}


def select(quick=False, dtypes=_cases.DTYPES, only=None):
    """The cases to run, as ``[(case id, build)]``, steps first; ``build()`` makes the
    case (one at a time, so the arrays of one are freed before the next is made)."""
    picks = []
    for step in _cases.STEPS.values():
        if quick and not step.quick:
            continue
        for dt in dtypes:
            picks.append((f"step {step.name} b{step.batch} {dt}",
                          lambda s=step, d=dt: _cases.step_case(s, d)))
    for step in _cases.STEPS.values():
        if step.quick and not quick:   # the layers of the two batch-100 networks
            for dt in dtypes:
                picks += _cases.layer_cases(step, dt)
    if only:
        picks = [p for p in picks if any(o in p[0] for o in only)]
    return picks


def _pairs(names):
    """The ratios reported: the book against each of fastbp's contenders."""
    return [("book", n) for n in ("numpy", "cython", "cython-api") if n in names]


def run(quick=False, dtypes=_cases.DTYPES, only=None, threads=None, budget=None,
        repeats=None, out=None, json_path=None):
    """Measure, print the progress and the report, return everything as a JSON-able dict
    (also written to ``json_path``, when given).

    ``threads``: fastbp's threads and the BLAS and OpenMP pools (threadpoolctl, where
    installed) at that count; None leaves them as they are.
    """
    out = sys.stdout if out is None else out
    budget = budget if budget is not None else (0.2 if quick else 0.4)
    repeats = repeats if repeats is not None else (5 if quick else 7)
    picks = select(quick, dtypes, only)
    if not picks:
        raise ValueError(f"only: no case matches {only}")
    load, cpus = machine_load()
    t_start = time.perf_counter()
    results = []
    with pinned(threads):
        print(machine_header(threads), file=out)
        print(f"{len(picks)} cases, each timed in {repeats} interleaved rounds "
              f"(about {budget:g} s of timing per case)\n", file=out, flush=True)
        for i, (case_id, build) in enumerate(picks, 1):
            print(f"[{i:>{len(str(len(picks)))}}/{len(picks)}] {case_id} ...", end="",
                  file=out, flush=True)
            t0 = time.perf_counter()
            case = build()
            for name in case.contenders:
                case.check(name)
            scale = 2 if case.kind == "step" else 1
            m = measure(case, budget=budget * scale, repeats=repeats,
                        pairs=_pairs(case.contenders))
            results.append(record(case, m))
            r = m["ratios"].get("book/cython", m["ratios"].get("book/numpy"))
            verdict = f"fastbp {vs(r)} the book" if r else "timed"
            print(f" {verdict} ({time.perf_counter() - t0:.1f} s)", file=out, flush=True)
            del case
        _cases.forget()
    report_ = {"machine": machine_info(threads), "load_before": load, "cpus": cpus,
               "options": {"quick": quick, "dtypes": list(dtypes), "threads": threads,
                           "budget": budget, "repeats": repeats},
               "seconds": time.perf_counter() - t_start, "results": results}
    report_["warnings"] = warnings_for(results, load, cpus)
    print("", file=out)
    print("\n".join(report(results) + [""] + _closing(report_)), file=out)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report_, f, indent=1)
        print(f"wrote {json_path}", file=out)
    return report_


def record(case, m):
    """A case's measurement as a JSON-able dict."""
    return {"id": case.id, "kind": case.kind, "info": case.info, "times": m["times"],
            "ratios": m["ratios"], "spread": m["spread"], "skipped": case.skipped,
            "bounds": [list(b) for b in case.bounds]}


@contextlib.contextmanager
def pinned(threads):
    """fastbp's threads, and the BLAS and OpenMP pools (threadpoolctl), at ``threads``."""
    if threads is None:
        yield
        return
    with _cases.fastbp_threads(threads):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
            return
        with threadpool_limits(limits=threads):
            yield


# ----------------------------------------------------------------------------- machine

ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "FASTBP_BACKEND", "FASTBP_NUM_THREADS")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info(threads=None):
    from .. import __version__, kernels
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:   # NumPy < 1.25 has no mode="dicts"
        blas = {}
    return {"cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            "fastbp": __version__, "compiled": kernels.HAVE_CYTHON,
            "fastbp_threads": kernels.get_num_threads(), "threads_option": threads,
            "env": {k: os.environ.get(k) for k in ENV_VARS}}


def machine_header(threads=None):
    """A few lines for the top of a report: the machine, NumPy, fastbp and its threads."""
    i = machine_info(threads)
    env = ", ".join(f"{k}={v}" for k, v in i["env"].items() if v is not None)
    text = (f"machine: {i['cpu_count']} CPUs ({i['cpu']}), Python {i['python']}, NumPy "
            f"{i['numpy']} ({i['blas']}); fastbp {i['fastbp']}, "
            f"{'compiled kernels' if i['compiled'] else 'NumPy backend only (not built)'}, "
            f"{i['fastbp_threads']} threads" + (f"; environment: {env}" if env else ""))
    return "\n".join(textwrap.wrap(text, WIDTH, subsequent_indent="  "))


# ----------------------------------------------------------------------------- report

def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def vs(ratio):
    """A ratio of times (other / fastbp) for a reader: "2.10x faster" or "1.50x slower"."""
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"


def _vs_short(ratio):
    return vs(ratio).replace(" than", "")


def table(headers, rows):
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _para(text):
    return textwrap.wrap(text, WIDTH)


def report(results):
    """The tables of a run as lines of text, none wider than ``WIDTH`` columns."""
    lines = []
    steps = [r for r in results if r["kind"] == "step"]
    layers = [r for r in results if r["kind"] == "layer"]
    if steps:
        lines += _para("Training steps (forward, loss, backward, SGD update), time per step. "
                       "fastbp: train_step with optimizers.SGD; fastbp, book API: gradient, "
                       "then params[k] -= lr * grads[k], as the book's code does.")
        names = [n for n in NAMES if any(n in r["times"] for r in steps)]
        rows = [[r["id"][len("step "):], *(fmt_time(r["times"].get(n)) for n in names),
                 _vs_short(r["ratios"].get("book/cython", r["ratios"].get("book/numpy")))]
                for r in steps]
        lines += table(["step", *(NAMES[n] for n in names), "fastbp vs the book"], rows)
        lines.append("")
    if layers:
        lines += _para("Layers, each called alone on the input it sees in its network: "
                       "time per call (SoftmaxWithLoss: forward and backward).")
        rows = [[r["id"], *(fmt_time(r["times"].get(n)) for n in ("book", "numpy", "cython")),
                 _vs_short(r["ratios"].get("book/cython", r["ratios"].get("book/numpy")))]
                for r in layers]
        lines += table(["layer", "the book", "fastbp numpy", "fastbp", "fastbp vs the book"], rows)
        lines.append("")
    skipped = sorted({f"{NAMES.get(n, n)} ({why})" for r in results
                      for n, why in r.get("skipped", {}).items()})
    if skipped:
        lines += _para("Not timed: " + "; ".join(skipped))
    return lines


def _span(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    lo, hi = min(values), max(values)
    return _vs_short(lo) if abs(hi - lo) < 0.005 else f"{_vs_short(lo)} to {_vs_short(hi)}"


def _closing(report_):
    results = report_["results"]
    out = []
    for kind, what in (("step", "training steps"), ("layer", "layer calls")):
        s = _span(r["ratios"].get("book/cython", r["ratios"].get("book/numpy"))
                  for r in results if r["kind"] == kind)
        if s:
            out.append(f"fastbp's {what}: {s} than the book's.")
    lines = _para(" ".join(out)) if out else []
    lines += _para(f"({report_['seconds']:.0f} s)")
    for w in report_["warnings"]:
        lines += textwrap.wrap("warning: " + w, WIDTH, subsequent_indent="  ")
    return lines


def warnings_for(results, load, cpus):
    """What makes the figures of a run doubtful, as sentences for the reader."""
    out = []
    if load is not None and load >= 0.5 * cpus:
        out.append(f"the machine was busy: a load average of {load:.2f} over the minute "
                   f"before the run, on {cpus} CPUs. Other programs take cores from fastbp's "
                   "threads and from NumPy's, so these figures are slower and noisier than "
                   "on a quiet machine; close them and run again for steadier figures.")
    noisy = [r["id"] for r in results if max(r.get("spread", {}).values(), default=1) > NOISY]
    if noisy:
        out.append(f"the rounds of {len(noisy)} of {len(results)} cases differed by more than "
                   f"{NOISY:g}x (for example {noisy[0]}): something else ran at times. "
                   "Their medians may still be fair; run again to be sure.")
    for r in results:
        for sub, sup in r.get("bounds", []):
            a, b = r["times"].get(sub), r["times"].get(sup)
            if a and b and b < 0.95 * a:
                out.append(f"contradictory figures in {r['id']}: {sup} ({fmt_time(b)}) does "
                           f"all the work of {sub} ({fmt_time(a)}) and more, yet measured "
                           "faster: the machine was disturbed during the run.")
    return out
