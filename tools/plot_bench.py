#!/usr/bin/env python
"""Plot fastbp's benchmark results: speed-up over the book's NumPy idiom, per case.

Reads the JSON of ``fastbp bench --json FILE``, ``benchmarks/compare.py --json FILE`` or
``pytest benchmarks/ --benchmark-only --benchmark-json FILE`` and writes a PNG
(default ``docs/bench.png``) with one bar per contender and case: how many times faster
than the book (log scale; 1 = as fast as the book). Needs matplotlib
(``pip install 'fastbp[plot]'``).

    python tools/plot_bench.py bench.json [-o docs/bench.png] [--dtype float64]
    python tools/plot_bench.py bench.json --markdown     # the tables, for docs/benchmarks.md
    python tools/plot_bench.py docs/bench-2threads.json --targets docs/bench-1thread.json
                                  # the targets of several runs side by side, one column each
"""
import argparse
import importlib.util
import json
import os
import sys

CONTENDERS = [("numpy", "fastbp numpy", "#8fb3d9"), ("cython", "fastbp cython", "#1f5fa8"),
              ("torch", "PyTorch eager", "#e07b39"), ("jax", "JAX jit", "#6a9f3a"),
              ("floor", "matmul floor", "#999999")]


def load(path):
    """``(results, machine)``: results as ``[{"id", "kind", "times": {name: s}}]``."""
    with open(path) as f:
        data = json.load(f)
    if "results" in data:                       # fastbp bench
        return data["results"], data.get("machine", {})
    if "fastbp" in data:                        # pytest-benchmark with fastbp's conftest
        machine = data.get("machine_info", {}).get("fastbp", {})
        return data["fastbp"]["results"], machine
    if "benchmarks" in data:                    # plain pytest-benchmark JSON
        by_group = {}
        for b in data["benchmarks"]:
            extra = b.get("extra_info", {})
            name = extra.get("contender") or b.get("param") or b["name"]
            entry = by_group.setdefault(b["group"], {"id": b["group"], "kind": extra.get("kind", "kernel"),
                                                     "times": {}})
            entry["times"][name] = b["stats"]["median"]
        return list(by_group.values()), data.get("machine_info", {}).get("fastbp", {})
    raise SystemExit(f"{path}: neither fastbp bench nor pytest-benchmark JSON")


def machine_line(m):
    if not m:
        return ""
    blas = m.get("blas", {})
    pools = m.get("threadpools") or []
    arch = ", ".join(sorted({p["architecture"] for p in pools if p.get("architecture")}))
    torch = m.get("torch") or (m.get("peers") or {}).get("torch") or {}
    n = m.get('threads_pinned', '?')
    return (f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} CPUs, {n} thread{'' if n == 1 else 's'}; "
            f"NumPy {m.get('numpy', '?')} ({blas.get('name', '?')} {blas.get('version', '')}"
            f"{', ' + arch if arch else ''})"
            f"{'; torch ' + torch['version'] if torch.get('version') else ''}")


def _panel(ax, rows, title):
    names = [c for c in CONTENDERS if any(c[0] in r["times"] for r in rows)]
    height = 0.8 / len(names)
    for j, (key, label, color) in enumerate(names):
        ys, xs = [], []
        for i, r in enumerate(rows):
            t = r["times"].get(key)
            if t:
                ys.append(i + (j - (len(names) - 1) / 2) * height)
                xs.append(r["times"]["book"] / t)
        ax.barh(ys, xs, height=height, color=color, label=label)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["id"] for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(axis="x", which="both", alpha=0.3)


def plot(results, machine, out, dtype=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["kind"] in ("kernel", "layer", "step") and "book" in r["times"]]
    if dtype:
        rows = [r for r in rows if r["id"].endswith(dtype)]
    if not rows:
        raise SystemExit("no case with a book time to plot")
    panels = [(sorted((r for r in rows if r["kind"] in k), key=lambda r: r["id"]), title)
              for k, title in ((("step",), "training steps"),
                               (("kernel", "layer"), "layers (forward/backward)"))]
    panels = [(rs, t) for rs, t in panels if rs]
    sizes = [len(rs) * (2.0 if t.startswith("training") else 1.0) + 1 for rs, t in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.3 * sum(sizes) + 1.2), sharex=True,
                             gridspec_kw={"height_ratios": sizes}, squeeze=False)
    for ax, (rs, title) in zip(axes[:, 0], panels):
        _panel(ax, rs, title)
    axes[-1, 0].set_xlabel("times faster than the book's NumPy idiom (book median / median)")
    line = machine_line(machine)
    fig.suptitle("fastbp vs the book" + (f"\n{line}" if line else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def _t(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def _r(times, a, b):
    ta, tb = times.get(a), times.get(b)
    return f"{ta / tb:.2f}x" if ta and tb else "-"


def markdown(results, machine, targets=None):
    """The results as Markdown tables (steps, kernels, threads, targets)."""
    out = []
    if machine:
        out.append(f"Machine: {machine_line(machine)}.\n")
    steps = [r for r in results if r["kind"] == "step"]
    if steps:
        jax = any("jax" in r["times"] for r in steps)   # older runs have no JAX column
        out += ["| step | book | fastbp numpy | fastbp cython | floor | floor+sgd | PyTorch | "
                + ("JAX | " if jax else "")
                + "book/numpy | book/cython | torch/cython | " + ("jax/cython | " if jax else "")
                + "cython/floor | cython/floor+sgd |",
                "| --- |" + " ---: |" * (11 + 2 * jax)]
        for r in steps:
            tm = r["times"]
            out.append(f"| {r['id']} | {_t(tm.get('book'))} | {_t(tm.get('numpy'))} | "
                       f"{_t(tm.get('cython'))} | {_t(tm.get('floor'))} | "
                       f"{_t(tm.get('floor+sgd'))} | {_t(tm.get('torch'))} | "
                       + (f"{_t(tm.get('jax'))} | " if jax else "")
                       + f"{_r(tm, 'book', 'numpy')} | {_r(tm, 'book', 'cython')} | "
                       f"{_r(tm, 'torch', 'cython')} | "
                       + (f"{_r(tm, 'jax', 'cython')} | " if jax else "")
                       + f"{_r(tm, 'cython', 'floor')} | {_r(tm, 'cython', 'floor+sgd')} |")
        out.append("")
    extra = [(k, label) for k, label in (("cython-1t", "fastbp 1 thread"), ("limit", "GEMM limit"))
             if any(k in r["times"] for r in steps)]
    if extra:   # compare.py runs: one thread and the GEMM limit, against fastbp's step
        out += ["| step | fastbp cython | " + " | ".join(label for _, label in extra) + " | "
                + " | ".join(f"cython/{k}" for k, _ in extra) + " |",
                "| --- |" + " ---: |" * (1 + 2 * len(extra))]
        for r in steps:
            tm = r["times"]
            out.append(f"| {r['id']} | {_t(tm.get('cython'))} | "
                       + " | ".join(_t(tm.get(k)) for k, _ in extra) + " | "
                       + " | ".join(_r(tm, "cython", k) for k, _ in extra) + " |")
        out.append("")
    kernels = [r for r in results if r["kind"] in ("kernel", "layer")]
    if kernels:
        out += ["| layer call | book | fastbp numpy | fastbp cython | book/numpy | book/cython |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in kernels:
            tm = r["times"]
            out.append(f"| {r['id']} | {_t(tm.get('book'))} | {_t(tm.get('numpy'))} | "
                       f"{_t(tm.get('cython'))} | {_r(tm, 'book', 'numpy')} | {_r(tm, 'book', 'cython')} |")
        out.append("")
    threads = [r for r in results if r["kind"] == "threads"]
    if threads:
        out += ["| threads | 1 thread | 2 threads | 1t/2t |", "| --- | ---: | ---: | ---: |"]
        for r in threads:
            tm = r["times"]
            out.append(f"| {r['id']} | {_t(tm.get('cython-1t'))} | {_t(tm.get('cython-2t'))} | "
                       f"{_r(tm, 'cython-1t', 'cython-2t')} |")
        out.append("")
    if targets:
        out += ["| target | measured | wanted | met |", "| --- | ---: | ---: | --- |"]
        for t in targets:
            met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
            out.append(f"| {t['what']} | {_got(t)} | {_want(t)} | {met} |")
        out.append("")
    return "\n".join(out)


def targets_of(data):
    """The targets of a run: as stored in its JSON (older ``fastbp bench`` runs), else
    evaluated now by ``benchmarks/targets.py`` on its results."""
    stored = data.get("targets") or data.get("fastbp", {}).get("targets")
    if stored:
        return stored
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks",
                        "targets.py")
    spec = importlib.util.spec_from_file_location("fastbp_targets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = data["results"] if "results" in data else data.get("fastbp", {}).get("results", [])
    return module.evaluate(results, data.get("allocation", ()))


def _got(t):
    if t is None or t["ratio"] is None:
        return "-"
    if "wanted" in t:          # evaluated by benchmarks/targets.py
        return f"{t['ratio']:.2f}x"
    if t["minimum"] is None:
        return f"{t['ratio']:.2f}"
    if "floor" in t["what"]:
        return f"{1 / t['ratio']:.2f}x floor"
    return f"{t['ratio']:.2f}x"


def _want(t):
    if "wanted" in t:
        return t["wanted"]
    if t["minimum"] is None:
        return "< 1"
    if "floor" in t["what"]:
        return f"<= {1 / t['minimum']:.1f}x floor"
    return f">= {t['minimum']:g}x"


def targets_side_by_side(runs):
    """One Markdown table of the targets of several ``fastbp bench`` runs, given as
    ``[(label, targets)]``: a column per run, "(no)" where a target is not met."""
    out = ["| target | " + " | ".join(label for label, _ in runs) + " | wanted |",
           "| --- | " + " | ".join("---:" for _ in runs) + " | ---: |"]
    first = runs[0][1]
    by_run = [{t["what"]: t for t in targets} for _, targets in runs]
    for t in first:
        cells = []
        for targets in by_run:
            u = targets.get(t["what"])
            cells.append(_got(u) + ("" if u is None or u["met"] in (None, True) else " (no)"))
        out.append(f"| {t['what']} | " + " | ".join(cells) + f" | {_want(t)} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", help="fastbp bench --json output or pytest-benchmark JSON")
    p.add_argument("-o", "--output", default="docs/bench.png", help="PNG to write")
    p.add_argument("--dtype", choices=("float64", "float32"), help="plot one dtype only")
    p.add_argument("--markdown", action="store_true",
                   help="print the results as Markdown tables instead of plotting")
    p.add_argument("--targets", nargs="*", metavar="JSON",
                   help="print the targets of this run and of these other fastbp bench runs "
                        "side by side, a column per run (labelled by its thread count)")
    args = p.parse_args(argv)
    if args.targets is not None:
        runs = []
        for path in [args.json] + args.targets:
            with open(path) as f:
                data = json.load(f)
            threads = data.get("options", {}).get("threads")
            runs.append((f"{threads} thread{'s' if threads != 1 else ''}", targets_of(data)))
        print(targets_side_by_side(runs), end="")
        return 0
    if args.markdown:
        with open(args.json) as f:
            data = json.load(f)
        results, machine = load(args.json)
        print(markdown(results, machine, targets_of(data)))
        return 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_bench: matplotlib is not installed (pip install 'fastbp[plot]')",
              file=sys.stderr)
        return 1
    results, machine = load(args.json)
    print(plot(results, machine, args.output, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
