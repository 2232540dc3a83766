"""fastbp against everything it is measured by: the book, PyTorch, JAX, the limits, a
busy machine and one thread. Runs from a source tree (``python benchmarks/compare.py``).

For every training step of ``fastbp.bench.cases.STEPS`` (784-50-10, SimpleConvNet,
784-1000-1000-10, DeepConvNet) and dtype, in one interleaved measurement:
the book's idiom, fastbp on both backends (``train_step``) and through the book's API,
PyTorch eager and JAX ``jit`` (``peers.py``, each where installed, each checked against
the book's step before it is timed), and for the fully connected steps the floor and
floor+sgd (``limits.py``); every step also gets its GEMM limit (its multiply-adds at
the rate of a 2048^3 NumPy product measured in the same run).

  --one-thread   fastbp's step once more with ``fastbp.set_num_threads(1)``, interleaved
                 with the default (the threads table, idle and with --busy)
  --busy         every step again with one CPU-bound process spinning on one core
                 (``busy.py``), started before and stopped after each measurement
  --layers       the layers of every network, each called alone, against the book's

Then the release targets (``targets.py``), met or not, and ``--json FILE``.

  python benchmarks/compare.py --one-thread --busy --json bench.json   # everything
  python benchmarks/compare.py --quick --only SimpleConvNet            # one network
"""
import argparse
import contextlib
import json
import os
import sys
import textwrap
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import busy as _busy  # noqa: E402
import limits  # noqa: E402
import machine  # noqa: E402
import peers as _peers  # noqa: E402
import targets as _targets  # noqa: E402
from fastbp import bench  # noqa: E402
from fastbp.bench import cases  # noqa: E402
from fastbp.bench.timing import machine_load, measure  # noqa: E402

BUSY = _targets.BUSY
NAMES = dict(bench.NAMES, **{"cython-1t": "fastbp, 1 thread", "torch": "PyTorch eager",
                             "jax": "JAX jit", "floor": "floor", "floor+sgd": "floor+sgd",
                             "limit": "GEMM limit"})
# (a, b) reported as the median of the per-round ratios a/b
PAIRS = [("book", "cython"), ("numpy", "cython"), ("cython-api", "cython"),
         ("cython-1t", "cython"), ("torch", "cython"), ("jax", "cython"),
         ("floor", "cython"), ("floor+sgd", "cython"), ("floor", "floor+sgd")]


def step_cases(steps, dtypes, one_thread, peers, threads):
    """``[(step, dtype, build)]``; ``build()`` makes the case."""
    names = ("book", "numpy", "cython", "cython-api") + (("cython-1t",) if one_thread else ())
    out = []
    for step in steps:
        for dt in dtypes:
            def build(step=step, dt=dt):
                extra = dict(peers)
                if step.kind == "mlp":
                    extra.update(limits.FLOORS)
                case = cases.step_case(step, dt, contenders=names, extra=extra, threads=threads)
                if "floor" in case.contenders and "floor+sgd" in case.contenders:
                    case.bounds.append(("floor", "floor+sgd"))
                return case
            out.append((step, dt, build))
    return out


def run(args, out=None):
    out = sys.stdout if out is None else out
    steps = [s for s in cases.STEPS.values() if s.quick or not args.quick]
    steps = [s for s in steps if not args.only or any(o in s.name for o in args.only)]
    dtypes = cases.DTYPES if args.dtype == "both" else (args.dtype,)
    peers = {} if args.no_peers else dict(_peers.PEERS)
    if peers:
        _peers.preload()
    load, cpus = machine_load()
    results, t_start = [], time.perf_counter()
    with bench.pinned(args.threads):
        print(bench.machine_header(args.threads), file=out)
        rates = {dt: limits.gemm_rate(dt) for dt in dtypes}
        print("GEMM rate (NumPy, 2048^3): " + ", ".join(
            f"{dt} {r / 1e9:.0f} GFLOP/s" for dt, r in rates.items()) + "\n", file=out, flush=True)
        todo = step_cases(steps, dtypes, args.one_thread, peers, args.threads)
        for i, (step, dt, build) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] step {step.name} {dt} ...", end="", file=out, flush=True)
            t0 = time.perf_counter()
            case = build()
            for name in case.contenders:
                case.check(name)
            limit = limits.limit_seconds(step, dt, rates[dt])
            loads = [("idle", contextlib.nullcontext)] + ([("busy", _busy.busy)] if args.busy else [])
            for load_name, ctx in loads:
                with ctx():
                    m = measured(case, args.budget, args.repeats)
                r = bench.record(case, m)
                r["id"] += BUSY if load_name == "busy" else ""
                r["load"] = load_name
                r["times"]["limit"] = limit
                if "cython" in r["times"]:
                    r["ratios"]["cython/limit"] = r["times"]["cython"] / limit
                results.append(r)
            print(f" {time.perf_counter() - t0:.0f} s", file=out, flush=True)
            del case
        if args.layers:
            todo = [p for s in steps for dt in dtypes for p in cases.layer_cases(s, dt)]
            for i, (case_id, build) in enumerate(todo, 1):
                print(f"[{i}/{len(todo)}] {case_id}", file=out, flush=True)
                case = build()
                for name in case.contenders:
                    case.check(name)
                r = bench.record(case, measure(case, budget=args.budget / 2,
                                               repeats=args.repeats, pairs=PAIRS))
                if "multiply_adds" in case.info:   # the layer's GEMM limit
                    r["times"]["limit"] = 2 * case.info["multiply_adds"] / rates[case.info["dtype"]]
                results.append(r)
            cases.forget()
        info = machine.machine_info(args.threads)
    rows = _targets.evaluate(results)
    report_ = {"machine": info, "load_before": load, "cpus": cpus, "gemm_rate": rates,
               "options": vars(args), "seconds": time.perf_counter() - t_start,
               "results": results, "targets": rows,
               "warnings": bench.warnings_for(results, load, cpus)}
    print("\n" + "\n".join(report(results) + [""] + _targets.table(rows)), file=out)
    for w in report_["warnings"]:
        print(textwrap.fill("warning: " + w, bench.WIDTH, subsequent_indent="  "), file=out)
    return report_


def _contradicted(case, m):
    return [(a, b) for a, b in case.bounds
            if a in m["times"] and b in m["times"] and m["times"][b] < 0.95 * m["times"][a]]


def measured(case, budget, repeats, retries=2):
    """``measure``, again with twice the rounds (at most ``retries`` times) while a
    superset contender measures faster than its subset (floor+sgd under the floor).
    That happens when two-thread BLAS products stall on a loaded machine: their rounds
    then vary by several times the update's cost. Still contradictory after the
    retries, the figures are kept and the report warns."""
    m = measure(case, budget=budget, repeats=repeats, pairs=PAIRS)
    for _ in range(retries):
        if not _contradicted(case, m):
            break
        repeats *= 2
        m = measure(case, budget=budget * 2, repeats=repeats, pairs=PAIRS)
    return m


def report(results):
    """Steps: one row per contender, idle and busy side by side; the threads table;
    the layers (``fastbp.bench.report``)."""
    lines = []
    steps = [r for r in results if r["kind"] == "step" and r.get("load") == "idle"]
    busy = {r["id"][:-len(BUSY)]: r for r in results if r.get("load") == "busy"}
    if steps:
        lines += bench._para("Training steps: time per step, and fastbp's (train_step, "
                             "default threads) against each: N x faster or slower. GEMM "
                             "limit: the step's multiply-adds at NumPy's 2048^3 rate."
                             + (" busy: one other process spinning on one core." if busy else ""))
        headers = ["step", "contender", "idle", "fastbp is"] + (
            ["busy", "fastbp is", "busy/idle"] if busy else [])
        rows = []
        for r in steps:
            b = busy.get(r["id"])
            names = [n for n in NAMES if n in r["times"]]
            for i, n in enumerate(names):
                row = [r["id"][len("step "):] if i == 0 else "", NAMES[n],
                       bench.fmt_time(r["times"][n]), _vs(r, n)]
                if busy:
                    bt = b["times"].get(n) if b else None
                    row += [bench.fmt_time(bt), _vs(b, n) if b else "-",
                            f"{bt / r['times'][n]:.2f}x" if bt else "-"]
                rows.append(row)
        lines += bench.table(headers, rows) + [""]
    threaded = [r for r in steps if "cython-1t" in r["times"]]
    if threaded:
        lines += bench._para("Threads: fastbp's step with its default threads and with "
                             "fastbp.set_num_threads(1), interleaved.")
        rows = []
        for r in threaded:
            b = busy.get(r["id"], {"times": {}, "ratios": {}})
            t, bt = r["times"], b["times"]
            rows.append([r["id"][len("step "):], bench.fmt_time(t["cython"]),
                         bench.fmt_time(t["cython-1t"]),
                         bench.fmt_time(bt.get("cython")), bench.fmt_time(bt.get("cython-1t")),
                         _ratio(1 / b["ratios"]["cython-1t/cython"]) if bt else "-",
                         _ratio(bt["cython"] / t["cython"]) if bt else "-"])
        lines += bench.table(["step", "idle", "idle, 1 thread", "busy", "busy, 1 thread",
                              "busy/1 thread", "busy/idle"], rows) + [""]
    layers = [r for r in results if r["kind"] == "layer"]
    if layers:
        lines += bench.report(layers)
        rows = [[r["id"], bench.fmt_time(r["times"]["cython"]), bench.fmt_time(r["times"]["limit"]),
                 _ratio(r["times"]["cython"] / r["times"]["limit"])]
                for r in layers if "limit" in r["times"] and "cython" in r["times"]]
        if rows:
            lines += ["", "Affine and Convolution layers against their GEMM limit "
                          "(multiply-adds at NumPy's 2048^3 rate):"]
            lines += bench.table(["layer", "fastbp", "GEMM limit", "fastbp/limit"], rows)
    return lines


def _ratio(x):
    return f"{x:.2f}x"


def _vs(r, n):
    if n == "cython":
        return "-"
    if n == "limit":
        return bench._vs_short(r["times"]["limit"] / r["times"]["cython"])
    return bench._vs_short(r["ratios"].get(f"{n}/cython"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="784-50-10 and SimpleConvNet only")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="the steps whose name contains NAME (repeatable)")
    p.add_argument("--dtype", choices=("float64", "float32", "both"), default="both")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="threads of fastbp, BLAS, OpenMP and PyTorch (default 2)")
    p.add_argument("--one-thread", action="store_true",
                   help="also fastbp with set_num_threads(1), interleaved with the default")
    p.add_argument("--busy", action="store_true", help="every step again, one core taken")
    p.add_argument("--layers", action="store_true", help="also every layer alone")
    p.add_argument("--no-peers", action="store_true", help="leave PyTorch and JAX out")
    p.add_argument("--budget", type=float, default=1.5,
                   help="seconds of timing per step case (layers: half; default 1.5)")
    p.add_argument("--repeats", type=int, default=9, help="interleaved rounds (default 9)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = p.parse_args(argv)
    report_ = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report_, f, indent=1, default=_jsonable)
        print(f"wrote {args.json}")
    return 0


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
