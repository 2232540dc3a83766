"""fastbp's release targets, and their evaluation on a set of benchmark results.

The results are those of ``benchmarks/compare.py --json`` (``"results"``) or of the
pytest-benchmark suite (its JSON's ``"fastbp"`` entry): ``[{"id", "kind", "times",
"ratios"}]``, where busy runs of a step have the id of the idle one plus ``BUSY``.
``compare.py`` and ``benchmarks/conftest.py`` print the table after a run;
``tools/plot_bench.py --targets`` puts several runs side by side for docs/benchmarks.md.

Every row is a ratio of times, "how many times faster"; ``at_most`` rows are bounds on
a ratio that should stay small (a step over its matrix products or its GEMM limit, a
busy step over the same step idle or on one thread).
"""
from dataclasses import dataclass
from typing import List, Optional

BUSY = ", busy"   # suffix of a busy run's case id

DTYPES = ("float64", "float32")

__all__ = ["Target", "TARGETS", "BUSY", "evaluate", "table"]


@dataclass
class Target:
    what: str
    case: str                       # case id (of the idle run)
    num: str                        # contender timed in the numerator
    den: str                        # contender timed in the denominator
    at_least: Optional[float] = None
    at_most: Optional[float] = None
    slowdown: bool = False          # num's time busy over num's time idle (den unused)
    num_busy: bool = False          # both times from the busy run of the case

    def measure(self, by_id):
        if self.slowdown:
            idle, busy = by_id.get(self.case), by_id.get(self.case + BUSY)
            if not idle or not busy:
                return None
            a, b = busy["times"].get(self.num), idle["times"].get(self.num)
        else:
            r = by_id.get(self.case + BUSY if self.num_busy else self.case)
            if not r:
                return None
            ratio = r.get("ratios", {}).get(f"{self.num}/{self.den}")
            if ratio is not None:        # a median of paired ratios, where measured
                return ratio
            inverse = r.get("ratios", {}).get(f"{self.den}/{self.num}")
            if inverse:
                return 1 / inverse
            a, b = r["times"].get(self.num), r["times"].get(self.den)
        return a / b if a and b else None

    def wanted(self):
        return f">= {self.at_least:g}x" if self.at_least is not None else f"<= {self.at_most:g}x"

    def met(self, ratio):
        if ratio is None:
            return None
        return ratio >= self.at_least if self.at_least is not None else ratio <= self.at_most


def _targets():
    rows: List[Target] = []
    small, large = "step 784-50-10 b100", "step 784-1000-1000-10 b256"
    for dt in DTYPES:
        s, g = f"{small} {dt}", f"{large} {dt}"
        rows += [
            Target(f"784-50-10 step vs the book, {dt}", s, "book", "cython", at_least=2.5),
            Target(f"784-50-10 step vs PyTorch eager, {dt}", s, "torch", "cython", at_least=2.0),
            Target(f"784-50-10 step vs JAX jit, {dt}", s, "jax", "cython", at_least=1.5),
            Target(f"784-1000-1000-10 step vs PyTorch eager, {dt}", g, "torch", "cython",
                   at_least=1.15),
            Target(f"784-1000-1000-10 step vs JAX jit, {dt}", g, "jax", "cython", at_least=1.1),
            Target(f"784-50-10 step over its matrix products, {dt}", s, "cython", "floor",
                   at_most=1.1),
            Target(f"784-1000-1000-10 step over its matrix products, {dt}", g, "cython",
                   "floor", at_most=1.1),
            Target(f"numpy backend 784-50-10 step vs the book, {dt}", s, "book", "numpy",
                   at_least=1.4),
        ]
        for step in (s, g):
            rows.append(Target(f"{step[5:step.index(' b')]} book-API loop over train_step, {dt}",
                               step, "cython-api", "cython", at_most=1.15))
    # Chapters 7 and 8: the CNN steps (batch 100)
    for net in ("SimpleConvNet", "DeepConvNet"):
        for dt in DTYPES:
            c = f"step {net} b100 {dt}"
            rows += [
                Target(f"{net} step vs the book, {dt}", c, "book", "cython", at_least=5),
                Target(f"{net} step vs PyTorch eager, {dt}", c, "torch", "cython",
                       at_least=1.5 if dt == "float64" else 0.8),
                Target(f"{net} step vs JAX jit, {dt}", c, "jax", "cython", at_least=1.0),
                Target(f"{net} step over its GEMM limit, {dt}", c, "cython", "limit",
                       at_most=2.5),
            ]
    # Threads that never cost: every step, busy, against its own single-thread time and
    # its idle time; idle, the default faster than one thread where there is work.
    for net, batch in (("784-50-10", 100), ("784-1000-1000-10", 256), ("SimpleConvNet", 100),
                       ("DeepConvNet", 100)):
        for dt in DTYPES:
            c = f"step {net} b{batch} {dt}"
            rows += [
                Target(f"busy: {net} step over its single-thread time, {dt}", c, "cython",
                       "cython-1t", at_most=1.15, num_busy=True),
                Target(f"busy: {net} step over its idle time, {dt}", c, "cython", "cython",
                       at_most=2.0, slowdown=True),
            ]
            if net != "784-50-10":
                rows.append(Target(f"idle: {net} step, 1 thread vs default threads, {dt}", c,
                                   "cython-1t", "cython", at_least=1.0))
    s = f"{small} float64"
    rows += [
        Target("busy: 784-50-10 step vs PyTorch eager, float64", s, "torch", "cython",
               at_least=1.0, num_busy=True),
        Target("busy: 784-50-10 step vs JAX jit, float64", s, "jax", "cython", at_least=1.0,
               num_busy=True),
    ]
    return rows


TARGETS = _targets()


def evaluate(results, allocation=()):
    """``[{"what", "ratio", "wanted", "met"}]`` for the targets these results measure
    (a row whose case or contender did not run is left out); ``allocation``: the rows of
    ``tools/profile_step.py --json`` or of older runs."""
    by_id = {r["id"]: r for r in results}
    rows = []
    for tgt in TARGETS:
        ratio = tgt.measure(by_id)
        if ratio is not None:
            rows.append({"what": tgt.what, "ratio": ratio, "wanted": tgt.wanted(),
                         "met": tgt.met(ratio)})
    for a in allocation:
        if a["contender"] != "cython":
            continue
        # fastbp's step as it offers it: train_step with its in-place SGD, when it has one
        label = "step, optimizers.SGD" if "step, optimizers.SGD" in a else "step"
        v = a[label]["in_params"]
        rows.append({"what": f"no parameter-sized allocation per step, {a['case']}",
                     "ratio": v, "wanted": "< 1 parameter", "met": v < 1.0})
    return rows


def table(rows):
    """The evaluated targets as text lines (at most 100 columns)."""
    if not rows:
        return []
    width = max(len(r["what"]) for r in rows)
    lines = [f"{'target':<{width}}  {'measured':>8}  {'wanted':>13}",
             f"{'-' * width}  {'-' * 8}  {'-' * 13}"]
    for r in rows:
        mark = "" if r["met"] else "  NOT MET"
        lines.append(f"{r['what']:<{width}}  {r['ratio']:>7.2f}x  {r['wanted']:>13}{mark}")
    met = sum(1 for r in rows if r["met"])
    lines.append(f"{met} of {len(rows)} targets met")
    return lines
