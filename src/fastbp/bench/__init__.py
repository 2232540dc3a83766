"""``fastbp bench``: how much faster than the book's NumPy idiom, in a table of ratios.

Runs the cases of ``fastbp.bench.cases`` (the same ones as ``benchmarks/``, without
pytest) and prints, per case, the median time of every contender and the ratios that
matter: ``book/numpy`` and ``book/cython`` (how many times faster than the book), and
for training steps ``torch/cython`` and ``floor/cython`` (the matrix products alone).
Then the targets of issue 3, met or not, and the transient memory of one training step.

Timing: every contender of a case is sampled in turn, ``repeats`` times, in a rotating
order (so a slow moment of a shared machine hits them all); a sample is the mean of
``number`` back-to-back calls (fresh inputs, where needed, made right before each call
and outside its timing). Times are medians
of the samples; each ratio is the median of the per-round ratios. BLAS and OpenMP pools
(and PyTorch) are pinned to ``--threads`` threads.

    fastbp bench                 # everything, float64 and float32 (under a minute)
    fastbp bench --quick         # smaller budget, no 4096-row shapes
    fastbp bench --dtype float32 --json out.json
    fastbp bench --profile       # where the time of a training step goes, per layer
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

from . import cases as _cases
from .machine import describe, machine_info

__all__ = ["main", "run", "measure", "step_allocation", "profile_step"]

ORDER = ("book", "numpy", "cython", "floor", "floor+sgd", "torch", "cython-1t", "cython-2t")


# ----------------------------------------------------------------------------- timing

def _sample(c, number, fresh):
    """Mean time of one call over ``number`` calls.

    Fresh inputs are made right before each call, outside its timing (as
    pytest-benchmark's ``setup``), so the call finds them in cache, as a layer finds
    the output of the layer before it.
    """
    fn = c.fn
    setup = c.setup
    clock = time.perf_counter
    if fresh:
        dt = 0.0
        for _ in range(number):
            args = setup()
            t0 = clock()
            fn(*args)
            dt += clock() - t0
        del args
    else:
        args = c.setup()
        rng = range(number)
        t0 = time.perf_counter()
        for _ in rng:
            fn(*args)
        dt = time.perf_counter() - t0
    return dt / number


# Seconds of untimed calls before a sample that follows a contender on another thread
# pool: OpenBLAS's idle threads spin for about 0.1 s (measured: PyTorch's 784-1000-1000-10
# step ran 30-50 ms for 0.1 s after a NumPy one, then 16 ms).
WARMUP_S = 0.2


def _warm_up(c, fresh, seconds):
    """At least one untimed call of ``c``; more until ``seconds`` have passed."""
    end = time.perf_counter() + seconds
    _sample(c, 1, fresh)
    while time.perf_counter() < end:
        _sample(c, 1, fresh)


def measure(case, budget=1.0, repeats=7):
    """Median time per call of every contender of ``case``, and the ratios between them.

    ``budget`` is the time (seconds) to spend on the whole case, roughly: split between
    the contenders and the repeats; a contender slower than its share runs once a repeat.
    Returns ``{"times": {name: seconds}, "ratios": {"a/b": median ratio}, "number": ...,
    "page_faults": {name: minor page faults per call}}``.
    """
    names = list(case.contenders)
    if not names:
        return {"times": {}, "ratios": {}, "number": {}, "page_faults": {}}
    share = budget / (len(names) * repeats)
    number = {}
    for name in names:
        c = case.contenders[name]
        with c.context():
            _sample(c, 1, case.fresh)                      # warm up
            est = min(_sample(c, 1, case.fresh) for _ in range(3))
        n = max(1, int(share / max(est, 1e-7)))
        number[name] = min(n, 100_000)
    samples = {name: [] for name in names}
    faults = dict.fromkeys(names, 0)
    previous = None
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c = case.contenders[name]
            with c.context():
                # Untimed calls first, until the thread pools the contender before left
                # spinning on the other core have gone to sleep (see Contender.own_threads)
                after_other_pool = previous is not None and (
                    c.own_threads != case.contenders[previous].own_threads)
                _warm_up(c, case.fresh, WARMUP_S if after_other_pool else 0)
                before = _minor_faults()
                samples[name].append(_sample(c, number[name], case.fresh))
                faults[name] += _minor_faults() - before
            previous = name
    times = {name: statistics.median(s) for name, s in samples.items()}
    ratios = {}
    for a, b in _cases.RATIO_PAIRS:
        if a in samples and b in samples:
            ratios[f"{a}/{b}"] = statistics.median(x / y for x, y in zip(samples[a], samples[b]))
    # Page faults per call: the allocator hands back fresh pages when it has returned
    # memory to the system, so a contender that allocates array-sized temporaries (the
    # book's) can run at two speeds depending on what ran before it in the process.
    page_faults = {name: faults[name] / (number[name] * repeats) for name in names}
    return {"times": times, "ratios": ratios, "number": number, "page_faults": page_faults}


def _minor_faults():
    try:
        import resource
    except ImportError:  # not on every platform
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ------------------------------------------------------------------ memory and profile

def _peak(fn, warm):
    """Peak traced memory of one call of ``fn`` above what was live before it (bytes)."""
    for _ in range(warm):
        fn()
    tracemalloc.start()
    try:
        fn()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def _fastbp_sgd():
    """fastbp's own in-place SGD (``fastbp.optimizers.SGD``), when it has one."""
    try:
        from ..optimizers import SGD
    except ImportError:
        return None
    return SGD(lr=_cases.LR)


def step_allocation(case, name, warm=1):
    """Peak transient memory of one steady-state training step, in parameter units.

    For the timed network of contender ``name``: one step through the book's API
    (``gradient`` then ``params[k] -= lr * grads[k]``), ``gradient`` alone, and, for
    fastbp's networks, ``train_step(x, t, optimizers.SGD(lr))``: its fast path, whose
    gradients go into buffers reused across steps.
    Each is run ``warm`` times, then once more under ``tracemalloc``: the peak of traced
    memory above what was live before the call, divided by the size of the largest
    parameter. Below 1.0, the call cannot have allocated a parameter-sized array on top
    of what it already held (NumPy reports its buffers to tracemalloc). The book's
    update allocates ``lr * grads[k]`` itself, in the caller's code, whatever the library.
    """
    net = case.nets[name]
    x, t = case.data
    params = net.params
    largest = max(a.nbytes for a in params.values())

    def book_step():
        grads = net.gradient(x, t)
        for key in params:
            params[key] -= _cases.LR * grads[key]

    variants = {"step": book_step, "gradient": lambda: net.gradient(x, t)}
    opt = _fastbp_sgd() if name != "book" else None
    if opt is not None and hasattr(net, "train_step"):
        variants["step, optimizers.SGD"] = lambda: net.train_step(x, t, opt)
    out = {"largest_param_bytes": largest}
    with case.contenders[name].context():
        for label, fn in variants.items():
            extra = _peak(fn, warm)
            out[label] = {"peak_bytes": extra, "in_params": extra / largest}
    return out


def profile_step(case, name, steps=50):
    """Time per step of each layer's forward and backward, the update and the rest.

    Wraps the methods of the timed network's layers (instance attributes, so the
    network's own code is untouched) and returns ``{phase: seconds per step}`` plus
    ``"total"``. The wrappers add about 0.1 us per call.
    """
    net = case.nets[name]
    x, t = case.data
    acc = {}

    def wrap(label, f):
        def timed(*a, **k):
            t0 = time.perf_counter()
            r = f(*a, **k)
            acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0
            return r
        return timed

    last = getattr(net, "lastLayer", None) or getattr(net, "last_layer")   # book ch5 / ch6 names
    layers = list(net.layers.items()) + [("Loss", last)]
    originals = []
    for key, layer in layers:
        for meth in ("forward", "backward"):
            originals.append((layer, meth))
            setattr(layer, meth, wrap(f"{key}.{meth}", getattr(layer, meth)))
    params = net.params
    try:
        with case.contenders[name].context():
            for _ in range(3):
                grads = net.gradient(x, t)
            acc.clear()
            t_grad = t_upd = 0.0
            t_all0 = time.perf_counter()
            for _ in range(steps):
                t0 = time.perf_counter()
                grads = net.gradient(x, t)
                t1 = time.perf_counter()
                for key in params:
                    params[key] -= _cases.LR * grads[key]
                t_upd += time.perf_counter() - t1
                t_grad += t1 - t0
            total = time.perf_counter() - t_all0
    finally:
        for layer, meth in originals:
            delattr(layer, meth)
    out = {k: v / steps for k, v in acc.items()}
    out["SGD update"] = t_upd / steps
    out["python glue (gradient)"] = (t_grad - sum(acc.values())) / steps
    out["total"] = total / steps
    return out


# ----------------------------------------------------------------------------- driver

def _fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def _table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _selected_cases(quick, dtypes, only):
    """The cases ``fastbp bench`` runs (builders, so large arrays exist one at a time)."""
    picks = []
    kernels = [("relu_forward", (100, 784)), ("relu_backward", (100, 784)),
               ("sigmoid_forward", (100, 784)), ("sigmoid_backward", (100, 784)),
               ("softmax_ce_labels", (100, 10)), ("softmax_ce_onehot", (100, 10)),
               ("softmax_ce_labels", (256, 1000)), ("affine_backward", (100, 784, 50))]
    if not quick:
        kernels.append(("softmax_ce_labels", (4096, 1000)))
    for kernel, shape in kernels:
        for dt in dtypes:
            picks.append((f"{kernel} {'x'.join(map(str, shape))} {dt}",
                          lambda k=kernel, s=shape, d=dt: _cases.kernel_case(k, s, d)))
    for arch in _cases.STEP_ARCHS:
        _, batch = _cases.STEP_ARCHS[arch]
        for dt in dtypes:
            picks.append((f"step {arch} b{batch} {dt}", ("step", arch, dt)))
    if not quick:
        for kernel, shape in _cases.THREADS_CASES:
            for dt in dtypes:
                picks.append((f"threads {kernel} {'x'.join(map(str, shape))} {dt}",
                              lambda k=kernel, s=shape, d=dt: _cases.threads_case(k, s, d)))
    if only:
        picks = [p for p in picks if any(o in p[0] for o in only)]
    return picks


def run(quick=False, dtypes=("float64", "float32"), only=None, threads=2, torch=True,
        budget=None, repeats=None, alloc=True, profile=False, out=None):
    """Measure, print the tables, return everything as a JSON-able dict."""
    out = sys.stdout if out is None else out
    budget = budget if budget is not None else (0.25 if quick else 0.5)
    repeats = repeats if repeats is not None else (5 if quick else 7)
    contenders = ("book", "numpy", "cython", "floor", "floor+sgd") + (("torch",) if torch else ())
    picks = _selected_cases(quick, dtypes, only)
    if torch and _cases.have_torch() and any(not callable(b) for _, b in picks):
        import torch as _torch  # noqa: F401  (before the pools are pinned, so they include it)
    with _pinned(threads):
        info = machine_info(threads)
        print(describe(info), file=out)
        print(f"timing: median of {repeats} rounds, about {budget:.2f} s per case\n", file=out)
        results = []
        allocation = []
        profiles = {}
        for case_id, builder in picks:
            if callable(builder):
                case = builder()
            else:
                _, arch, dt = builder
                case = _cases.step_case(arch, dt, contenders=contenders, torch_threads=threads)
            for name in list(case.contenders):
                case.check(name)
            m = measure(case, budget=budget * (2 if case.kind == "step" else 1), repeats=repeats)
            results.append({"id": case.id, "kind": case.kind, "info": case.info,
                            "times": m["times"], "ratios": m["ratios"],
                            "page_faults": m["page_faults"], "skipped": case.skipped})
            if case.kind == "step" and alloc:
                for name in ("book", "cython"):
                    if name in case.contenders:
                        a = step_allocation(case, name)
                        allocation.append(dict(a, case=case.id, contender=name))
            if case.kind == "step" and profile:
                slowest = max(m["times"].get(n, 0) for n in ("book", "numpy", "cython"))
                steps = int(min(50, max(3, 4 * budget / max(slowest, 1e-6) / 3)))
                profiles[case.id] = {name: profile_step(case, name, steps=steps)
                                     for name in ("book", "numpy", "cython") if name in case.nets}
            del case
        info = machine_info(threads)   # now with torch, if it was used
    _print_results(results, allocation, profiles, out)
    targets = _evaluate_targets(results, allocation)
    _print_targets(targets, out)
    return {"machine": info, "options": {"quick": quick, "dtypes": list(dtypes), "threads": threads,
                                         "budget": budget, "repeats": repeats},
            "results": results, "targets": targets, "allocation": allocation,
            "profiles": profiles}


@contextlib.contextmanager
def _pinned(threads):
    """BLAS and OpenMP pools (threadpoolctl) and fastbp's own threads, at ``threads``."""
    if threads is None:
        yield
        return
    with _cases.fastbp_threads(threads):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            print("note: threadpoolctl is not installed: BLAS/OpenMP threads are not pinned "
                  "(pip install 'fastbp[bench]')", file=sys.stderr)
            yield
            return
        with threadpool_limits(limits=threads):
            yield


def _print_results(results, allocation, profiles, out):
    kernels = [r for r in results if r["kind"] == "kernel"]
    steps = [r for r in results if r["kind"] == "step"]
    threads = [r for r in results if r["kind"] == "threads"]
    if kernels:
        rows = [[r["id"], *(_fmt_time(r["times"].get(n)) for n in ("book", "numpy", "cython")),
                 _fmt_ratio(r["ratios"].get("book/numpy")), _fmt_ratio(r["ratios"].get("book/cython"))]
                for r in kernels]
        print("Kernels (layer forward/backward calls): time per call, and how many times "
              "faster than the book", file=out)
        print(_table(["case", "book", "numpy", "cython", "book/numpy", "book/cython"], rows),
              file=out)
        print(file=out)
    if steps:
        rows = [[r["id"], *(_fmt_time(r["times"].get(n))
                            for n in ("book", "numpy", "cython", "floor", "floor+sgd", "torch")),
                 _fmt_ratio(r["ratios"].get("book/numpy")), _fmt_ratio(r["ratios"].get("book/cython")),
                 _fmt_ratio(r["ratios"].get("torch/cython")),
                 *("-" if r["ratios"].get(f"{f}/cython") is None else f"{1 / r['ratios'][f'{f}/cython']:.2f}x"
                   for f in ("floor", "floor+sgd"))]
                for r in steps]
        print("Training steps (forward, loss, backward, SGD update): time per step; floor: "
              "the matrix products alone, floor+sgd: with the in-place weight update", file=out)
        print(_table(["case", "book", "numpy", "cython", "floor", "floor+sgd", "torch", "book/numpy",
                      "book/cython", "torch/cython", "cython/floor", "cython/floor+sgd"], rows), file=out)
        faulty = [(r["id"], n, f) for r in steps for n, f in r.get("page_faults", {}).items() if f >= 1]
        if faulty:
            print("page faults per step (fresh pages after the allocator gave memory back; "
                  "they vary with what ran before): "
                  + "; ".join(f"{case} {name} {f:.0f}" for case, name, f in faulty), file=out)
        print(file=out)
    if threads:
        rows = [[r["id"], *(_fmt_time(r["times"].get(n)) for n in ("cython-1t", "cython-2t")),
                 _fmt_ratio(r["ratios"].get("cython-1t/cython-2t"))] for r in threads]
        print("Threads: the compiled kernels with 1 and 2 OpenMP threads", file=out)
        print(_table(["case", "1 thread", "2 threads", "1t/2t"], rows), file=out)
        print(file=out)
    if allocation:
        labels = ["step", "gradient", "step, optimizers.SGD"]
        rows = []
        for a in allocation:
            cells = []
            for label in labels:
                v = a.get(label)
                cells.append("-" if v is None else
                             f"{v['in_params']:.2f} ({v['peak_bytes'] / 1024:.0f} KiB)")
            rows.append([a["case"], a["contender"], *cells])
        print("Memory: peak transient allocation of one steady-state call (tracemalloc), in "
              "units of the largest parameter; 'step' updates with params[k] -= lr * grads[k]",
              file=out)
        print(_table(["case", "contender", *labels], rows), file=out)
        print(file=out)
    for case_id, per in profiles.items():
        phases = []
        for p in per.values():
            phases += [k for k in p if k not in phases and k != "total"]
        rows = []
        for ph in phases:
            row = [ph]
            for name, p in per.items():
                v = p.get(ph)
                row.append("-" if v is None else f"{_fmt_time(v)} {100 * v / p['total']:4.1f}%")
            rows.append(row)
        rows.append(["total"] + [_fmt_time(p["total"]) for p in per.values()])
        print(f"Profile of {case_id}: time per step by layer", file=out)
        print(_table(["phase", *per], rows), file=out)
        print(file=out)


def _evaluate_targets(results, allocation):
    by_id = {r["id"]: r for r in results}
    rows = []
    for tgt in _cases.TARGETS:
        r = by_id.get(tgt.case)
        if r is None:
            continue
        ratio = r["ratios"].get(f"{tgt.num}/{tgt.den}")
        rows.append({"what": tgt.what, "ratio": ratio, "minimum": tgt.minimum,
                     "met": None if ratio is None else ratio >= tgt.minimum, "note": tgt.note})
    for a in allocation:
        if a["contender"] != "cython":
            continue
        # The step as fastbp offers it: its in-place optimizer when it has one.
        label = "step, optimizers.SGD" if "step, optimizers.SGD" in a else "step"
        v = a[label]["in_params"]
        rows.append({"what": f"no parameter-sized allocation per step ({label}), {a['case']}",
                     "ratio": v, "minimum": None, "met": v < 1.0,
                     "note": "peak transient / largest parameter, target < 1"})
    return rows


def _print_targets(targets, out):
    if not targets:
        return
    rows = []
    for t in targets:
        if t["minimum"] is None:
            want = "< 1.00"
        elif "floor" in t["what"]:
            want = f"cython <= {1 / t['minimum']:.2f}x floor"
        else:
            want = f">= {t['minimum']:.2f}x"
        if t["ratio"] is None:
            got = "-"
        elif "floor" in t["what"]:
            got = f"{1 / t['ratio']:.2f}x floor"
        else:
            got = f"{t['ratio']:.2f}" + ("" if t["minimum"] is None else "x")
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        rows.append([t["what"], got, want, met])
    print("Targets (issue 3)", file=out)
    print(_table(["target", "measured", "wanted", ""], rows), file=out)
    missing = sum(1 for t in targets if t["met"] is False)
    print(f"\n{len(targets) - missing} of {len(targets)} targets met", file=out)


def _parser():
    p = argparse.ArgumentParser(
        prog="fastbp bench",
        description="Time fastbp against the book's NumPy idiom (and PyTorch, and the "
                    "matrix-product floor) and print the ratios.")
    p.add_argument("--quick", action="store_true",
                   help="a smaller time budget and no 4096-row shapes (about 20 s)")
    p.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                   help="which dtype to run (default: both)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="BLAS/OpenMP/PyTorch threads (default: 2, or 1 on one CPU)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--profile", action="store_true",
                   help="also show where a training step's time goes, layer by layer")
    p.add_argument("--no-alloc", action="store_true", help="skip the tracemalloc measurement")
    p.add_argument("--only", action="append", metavar="TEXT",
                   help="run only the cases whose name contains TEXT (repeatable)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="time to spend per case (default 0.5, --quick 0.25)")
    p.add_argument("--repeats", type=int, metavar="N", help="rounds per case (default 7, --quick 5)")
    return p


def main(argv=None) -> int:
    """Entry point of ``fastbp bench``; returns the exit status (0, or 2 on bad options)."""
    args = _parser().parse_args(argv)
    if args.threads < 1:
        print("fastbp bench: --threads must be at least 1", file=sys.stderr)
        return 2
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    report = run(quick=args.quick, dtypes=dtypes, only=args.only, threads=args.threads,
                 torch=not args.no_torch, budget=args.budget, repeats=args.repeats,
                 alloc=not args.no_alloc, profile=args.profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=_jsonable)
        print(f"\nwrote {args.json}")
    return 0


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
