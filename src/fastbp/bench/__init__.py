"""``fastbp bench``: how much faster than the book's NumPy idiom, in tables of ratios.

Runs the cases of ``fastbp.bench.cases`` (the same ones as ``benchmarks/``, without
pytest) and prints, per case, the median time of every contender and how many times
faster fastbp is: than the book (``fastbp.bench.book``), than the step's matrix products
alone (the floor), and, with ``--peers``, than PyTorch eager and JAX ``jit``. ``--busy``
runs the training steps again with one other CPU-bound process spinning on one core.

Timing: every contender of a case is sampled in turn, ``repeats`` times, in a rotating
order (so a slow moment of a shared machine hits them all); a sample is the mean of
``number`` back-to-back calls (fresh inputs, where needed, made right before each call
and outside its timing). Times are medians of the samples; each ratio is the median of
the per-round ratios. fastbp's threads and the BLAS and OpenMP pools (threadpoolctl)
are set to ``--threads``.

    fastbp bench                  # everything, float64 and float32
    fastbp bench --quick          # the book's sizes only, a smaller budget
    fastbp bench --dtype float32 --json out.json
    fastbp bench --profile        # where the time of a training step goes, per layer
    fastbp bench --peers --busy   # from a source tree: + PyTorch and JAX, idle and busy
"""
import argparse
import contextlib
import importlib.util
import json
import math
import os
import statistics
import sys
import textwrap
import time
import tracemalloc

import numpy as np

from . import cases as _cases
from .busy import busy as _busy
from .machine import describe, machine_info

__all__ = ["main", "run", "measure", "step_allocation", "profile_step", "report",
           "load_peers", "BUSY"]

#: Suffix of the case id of a step timed with the spinner running.
BUSY = ", busy"
WIDTH = 100   # every line of the report fits in this many columns


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
    for a, b in _cases.ratio_pairs(names):
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


# ----------------------------------------------------------------------------- peers

def load_peers(where="benchmarks"):
    """The peer contenders, ``{name: make}``, from ``benchmarks/peers.py`` of a source
    tree (``where``: that folder or the file). They are not part of the installed package:
    fastbp depends on neither PyTorch nor JAX. Raises ``FileNotFoundError`` with what to
    do when the file is not there."""
    path = where if where.endswith(".py") else os.path.join(where, "peers.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--peers: no {path}: the peer contenders (PyTorch, JAX) live in benchmarks/peers.py "
            "of fastbp's source tree (a git checkout or the sdist); run from its root, or "
            "give the folder: --peers PATH/benchmarks")
    spec = importlib.util.spec_from_file_location("fastbp_bench_peers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    getattr(module, "preload", lambda: None)()
    return dict(module.PEERS)


# ----------------------------------------------------------------------------- cases

def _shape_id(shape):
    return "x".join(map(str, shape))


def _selected_cases(quick, dtypes, only):
    """The cases ``fastbp bench`` runs, as ``(case id, builder)``: built one at a time,
    so the large arrays of one case are freed before the next is made. ``quick``: the
    book's sizes only (batch 100)."""
    picks = []
    kernels = [("relu_forward", (100, 784)), ("relu_backward", (100, 784)),
               ("sigmoid_forward", (100, 784)), ("sigmoid_backward", (100, 784)),
               ("softmax_ce_labels", (100, 10)), ("softmax_ce_onehot", (100, 10)),
               ("affine_backward", (100, 784, 50))]
    if not quick:
        kernels += [("softmax_ce_labels", (256, 1000)), ("softmax_ce_labels", (4096, 1000))]
    for kernel, shape in kernels:
        for dt in dtypes:
            picks.append((f"{kernel} {_shape_id(shape)} {dt}",
                          lambda k=kernel, s=shape, d=dt: _cases.kernel_case(k, s, d)))
    for arch, (_, batch) in _cases.STEP_ARCHS.items():
        if quick and batch != 100:
            continue
        for dt in dtypes:
            picks.append((f"step {arch} b{batch} {dt}", ("step", arch, dt)))
    if not quick:
        for kernel, shape in _cases.THREADS_CASES:
            for dt in dtypes:
                picks.append((f"threads {kernel} {_shape_id(shape)} {dt}",
                              lambda k=kernel, s=shape, d=dt: _cases.threads_case(k, s, d)))
    if only:
        picks = [p for p in picks if any(o in p[0] for o in only)]
    return picks


def _record(case, m, load="idle"):
    return {"id": case.id + (BUSY if load == "busy" else ""), "kind": case.kind,
            "load": load, "info": case.info, "times": m["times"], "ratios": m["ratios"],
            "page_faults": m["page_faults"], "skipped": case.skipped}


def run(quick=False, dtypes=("float64", "float32"), only=None, threads=2, peers=None,
        busy=False, budget=None, repeats=None, alloc=True, profile=False, out=None):
    """Measure, print the report, return everything as a JSON-able dict.

    ``peers``: ``{name: make}`` step contenders (``load_peers()``); ``busy``: time every
    training step a second time with one CPU-bound process spinning on one core.
    """
    out = sys.stdout if out is None else out
    budget = budget if budget is not None else (0.25 if quick else 0.5)
    repeats = repeats if repeats is not None else (5 if quick else 7)
    picks = _selected_cases(quick, dtypes, only)
    if not picks:
        raise ValueError(f"--only {only}: no case matches")
    with _pinned(threads):
        info = machine_info(threads)
        print(describe(info, width=WIDTH), file=out)
        print(f"timing: median of {repeats} rounds, about {budget:.2f} s per case"
              + (", training steps idle and busy" if busy else "") + "\n", file=out, flush=True)
        results, allocation, profiles = [], [], {}
        for case_id, builder in picks:
            if callable(builder):
                case = builder()
            else:
                _, arch, dt = builder
                case = _cases.step_case(arch, dt, peers=peers, threads=threads)
            for name in list(case.contenders):
                case.check(name)
            step_budget = budget * (2 if case.kind == "step" else 1)
            idle = _record(case, measure(case, budget=step_budget, repeats=repeats))
            results.append(idle)
            if case.kind == "step" and busy:
                with _busy():
                    results.append(_record(case, measure(case, budget=step_budget,
                                                         repeats=repeats), "busy"))
            if case.kind == "step" and alloc:
                for name in ("book", "cython"):
                    if name in case.contenders:
                        a = step_allocation(case, name)
                        allocation.append(dict(a, case=case.id, contender=name))
            if case.kind == "step" and profile:
                slowest = max(idle["times"].get(n, 0) for n in ("book", "numpy", "cython"))
                steps = int(min(50, max(3, 4 * budget / max(slowest, 1e-6) / 3)))
                profiles[case.id] = {name: profile_step(case, name, steps=steps)
                                     for name in ("book", "numpy", "cython") if name in case.nets}
            del case
        info = machine_info(threads)   # now with the peers that were loaded
    print("\n".join(report(results, allocation, profiles)), file=out)
    return {"machine": info,
            "options": {"quick": quick, "dtypes": list(dtypes), "threads": threads,
                        "budget": budget, "repeats": repeats, "busy": busy,
                        "peers": sorted(peers or ())},
            "results": results, "allocation": allocation, "profiles": profiles}


@contextlib.contextmanager
def _pinned(threads):
    """fastbp's threads, and the BLAS and OpenMP pools (threadpoolctl), at ``threads``."""
    with _cases.fastbp_threads(threads):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:   # describe() says the pools are not pinned
            yield
            return
        with threadpool_limits(limits=threads):
            yield


# ----------------------------------------------------------------------------- report

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

    def line(cells):
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _step_label(case_id):
    """A step's case id without its leading "step " (the table says it)."""
    return case_id[len("step "):] if case_id.startswith("step ") else case_id


def _para(text):
    return textwrap.wrap(text, WIDTH)


# Contenders of a step, in the order they are shown, and their names for a reader.
STEP_NAMES = {"book": "the book", "numpy": "fastbp numpy", "cython": "fastbp",
              "cython-api": "fastbp, book API", "floor": "floor", "floor+sgd": "floor+sgd",
              "torch": "PyTorch eager", "jax": "JAX jit"}


def report(results, allocation=(), profiles=None):
    """The report of a run as lines of text, none wider than ``WIDTH`` columns."""
    lines = []
    kernels = [r for r in results if r["kind"] == "kernel"]
    steps = [r for r in results if r["kind"] == "step" and r.get("load", "idle") == "idle"]
    busy = {r["id"][:-len(BUSY)]: r for r in results if r.get("load") == "busy"}
    threads = [r for r in results if r["kind"] == "threads"]
    if kernels:
        lines += _para("Layers (one forward or backward call): time per call, and how many "
                       "times faster than the book fastbp is on each backend")
        lines += _table(["case", "book", "numpy", "fastbp", "numpy vs book", "fastbp vs book"],
                        [[r["id"], *(_fmt_time(r["times"].get(n)) for n in ("book", "numpy", "cython")),
                          _fmt_ratio(r["ratios"].get("book/numpy")),
                          _fmt_ratio(r["ratios"].get("book/cython"))] for r in kernels])
        lines.append("")
    if steps:
        lines += _para("Training steps (forward, loss, backward, SGD update): time per step, and "
                       "how many times faster fastbp is (below 1: the contender is faster). "
                       "fastbp: train_step with optimizers.SGD; book API: gradient, then "
                       "params[k] -= lr * grads[k]. "
                       "floor: the step's matrix products alone; floor+sgd: with the weight "
                       "update; for them 'fastbp is' reads as the products' share of the step."
                       + (" busy: the same with one other process spinning on one core." if busy else ""))
        headers = ["step", "contender", "time", "fastbp is"]
        if busy:
            headers += ["busy", "fastbp is", "busy/idle"]
        rows = []
        for r in steps:
            b = busy.get(r["id"])
            names = [n for n in STEP_NAMES if n in r["times"]] + \
                [n for n in r["times"] if n not in STEP_NAMES]
            for i, n in enumerate(names):
                row = [_step_label(r["id"]) if i == 0 else "", STEP_NAMES.get(n, n),
                       _fmt_time(r["times"][n]),
                       "-" if n == "cython" else _fmt_ratio(r["ratios"].get(f"{n}/cython"))]
                if busy:
                    bt = b["times"].get(n) if b else None
                    row += [_fmt_time(bt),
                            "-" if n == "cython" or not b else _fmt_ratio(b["ratios"].get(f"{n}/cython")),
                            _fmt_ratio(bt / r["times"][n] if bt else None)]
                rows.append(row)
        lines += _table(headers, rows)
        skipped = {}
        for r in steps:
            for n, why in r.get("skipped", {}).items():
                skipped.setdefault(f"{STEP_NAMES.get(n, n)} ({why})", None)
        if skipped:
            lines += _para("Not timed: " + "; ".join(skipped))
        faulty = [(r["id"], n, f) for r in steps for n, f in r.get("page_faults", {}).items() if f >= 1]
        if faulty:
            lines += _para("Page faults per step (fresh pages after the allocator gave memory "
                           "back; they vary with what ran before): "
                           + "; ".join(f"{case} {STEP_NAMES.get(n, n)} {f:.0f}" for case, n, f in faulty))
        lines.append("")
    if threads:
        lines += _para("Threads: fastbp's compiled kernels with 1 and 2 OpenMP threads")
        lines += _table(["case", "1 thread", "2 threads", "speed-up"],
                        [[r["id"], *(_fmt_time(r["times"].get(n)) for n in ("cython-1t", "cython-2t")),
                          _fmt_ratio(r["ratios"].get("cython-1t/cython-2t"))] for r in threads])
        lines.append("")
    if allocation:
        labels = [("step", "book-API step"), ("gradient", "gradient"),
                  ("step, optimizers.SGD", "train_step")]
        lines += _para("Memory: the peak transient allocation of one steady-state call "
                       "(tracemalloc), in units of the largest parameter; below 1, no "
                       "parameter-sized array was allocated. book-API step: gradient, then "
                       "params[k] -= lr * grads[k]")
        rows = []
        for a in allocation:
            rows.append([_step_label(a["case"]), STEP_NAMES.get(a["contender"], a["contender"]),
                         *("-" if a.get(k) is None else f"{a[k]['in_params']:.2f}" for k, _ in labels)])
        lines += _table(["step", "contender", *(h for _, h in labels)], rows)
        lines.append("")
    for case_id, per in (profiles or {}).items():
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
        lines += _para(f"Profile of {case_id}: time per step by layer")
        lines += _table(["phase", *(STEP_NAMES.get(n, n) for n in per)], rows)
        lines.append("")
    lines += _summary(kernels, steps)
    return lines


def _summary(kernels, steps):
    def span(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        lo, hi = min(values), max(values)
        return f"{lo:.2f}x" if abs(hi - lo) < 0.005 else f"{lo:.2f}x to {hi:.2f}x"
    out = []
    s = span(r["ratios"].get("book/cython") for r in steps)
    if s:
        out.append(f"fastbp's training steps: {s} faster than the book's.")
    k = span(r["ratios"].get("book/cython") for r in kernels)
    if k:
        out.append(f"fastbp's layer calls: {k} faster than the book's.")
    return _para(" ".join(out)) if out else []


# ----------------------------------------------------------------------------- options

class _Parser(argparse.ArgumentParser):
    """A bad option is one line, ``fastbp bench: error: ...``, and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _seconds(text):
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return s


def _parser():
    p = _Parser(
        prog="fastbp bench",
        description="Time fastbp against the book's NumPy idiom and the step's matrix products "
                    "(and PyTorch and JAX with --peers) and print how many times faster it is.")
    p.add_argument("--quick", action="store_true",
                   help="only the book's sizes (batch 100: the 100x784 layers, softmax 100x10, "
                        "the 784-50-10 step), no thread scaling, a smaller budget and fewer rounds")
    p.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                   help="which dtype to run (default: both)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--threads", type=_positive_int, default=min(2, os.cpu_count() or 1),
                   help="threads of fastbp, BLAS, OpenMP and PyTorch (default: 2, or 1 on one CPU)")
    p.add_argument("--peers", nargs="?", const="benchmarks", metavar="DIR",
                   help="also time PyTorch eager and JAX jit (each where installed) on the "
                        "training steps; their code is in benchmarks/peers.py of the source "
                        "tree: DIR is that folder (default: ./benchmarks)")
    p.add_argument("--busy", action="store_true",
                   help="time the training steps again with one CPU-bound process spinning "
                        "on one core, and show each contender's slowdown")
    p.add_argument("--profile", action="store_true",
                   help="also show where a training step's time goes, layer by layer")
    p.add_argument("--no-alloc", action="store_true", help="skip the tracemalloc measurement")
    p.add_argument("--only", action="append", metavar="TEXT",
                   help="run only the cases whose name contains TEXT (repeatable)")
    p.add_argument("--budget", type=_seconds, metavar="SECONDS",
                   help="time to spend per case (default 0.5, --quick 0.25)")
    p.add_argument("--repeats", type=_positive_int, metavar="N",
                   help="rounds per case (default 7, --quick 5)")
    return p


def _check_output(path):
    """Refuse a --json FILE that cannot be written, before any timing."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"--json {path}: is a folder, not a file"
    if not os.path.isdir(parent):
        return f"--json {path}: the folder {parent} does not exist"
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"--json {path}: not writable"
    return None


def main(argv=None) -> int:
    """Entry point of ``fastbp bench``; returns the exit status (0, or 2 on bad options)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # --help (0) or a bad option (2, already reported)
        return exc.code
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    problem = _check_output(args.json) if args.json else None
    if problem is None and args.only and not _selected_cases(args.quick, dtypes, args.only):
        problem = f"--only {' '.join(args.only)}: no case matches" + (" with --quick" if args.quick else "")
    peers = None
    if problem is None and args.peers is not None:
        try:
            peers = load_peers(args.peers)
        except FileNotFoundError as exc:
            problem = str(exc)
    if problem:
        print(f"fastbp bench: error: {problem}", file=sys.stderr)
        return 2
    report_ = run(quick=args.quick, dtypes=dtypes, only=args.only, threads=args.threads,
                  peers=peers, busy=args.busy, budget=args.budget, repeats=args.repeats,
                  alloc=not args.no_alloc, profile=args.profile)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report_, f, indent=1, default=_jsonable)
        print(f"\nwrote {args.json}")
    return 0


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
