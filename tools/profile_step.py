#!/usr/bin/env python
"""Where the time and the memory of one training step go, layer by layer.

For a step of ``fastbp.bench.cases.STEPS`` and a dtype: the book's network and fastbp's
on each backend, from the same parameters and batch. Each layer's ``forward`` and
``backward`` are wrapped (instance attributes: the networks' code is untouched; a
wrapper adds well under a microsecond per call), then ``steps`` training steps through
the book's API (``gradient``, then ``params[k] -= lr * grads[k]``) give the time per
step of every phase, the update and the Python glue. ``--alloc`` adds the peak transient
memory of one steady-state step (tracemalloc) in units of the largest parameter: below
1, the step cannot have allocated a parameter-sized array.

    python tools/profile_step.py SimpleConvNet --dtype float32
    python tools/profile_step.py 784-50-10 --alloc
"""
import argparse
import sys
import time
import tracemalloc

import numpy as np

from fastbp import kernels
from fastbp.bench import cases, fmt_time, table
from fastbp.optimizers import SGD


def networks(step, dtype):
    """``{name: (network, context)}`` from the same parameters, and the batch."""
    init, x, t, _ = cases.step_data(step, dtype)
    out = {"book": (cases._bind_book(step.book_net(), init), lambda: np.errstate(over="ignore"))}
    for backend in ("numpy", "cython") if kernels.HAVE_CYTHON else ("numpy",):
        with kernels.use_backend(backend):
            net = cases._bind_fastbp(step.fastbp_net(dtype), init)
        out[backend] = (net, lambda b=backend: kernels.use_backend(b))
    return out, x, t


def profile(net, context, x, t, steps):
    acc = {}

    def wrap(label, f):
        def timed(*a, **k):
            t0 = time.perf_counter()
            r = f(*a, **k)
            acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0
            return r
        return timed

    layers = cases._layer_list(net)
    names = cases._layer_names(layers) + ["Loss"]
    wrapped = []
    for name, layer in zip(names, layers + [cases._last_layer(net)]):
        for meth in ("forward", "backward"):
            wrapped.append((layer, meth))
            setattr(layer, meth, wrap(f"{name}.{meth}", getattr(layer, meth)))
    params, t_upd = net.params, 0.0
    try:
        with context():
            net.gradient(x, t)
            acc.clear()
            t_all = time.perf_counter()
            for _ in range(steps):
                grads = net.gradient(x, t)
                t0 = time.perf_counter()
                for key in params:
                    params[key] -= cases.LR * grads[key]
                t_upd += time.perf_counter() - t0
            total = time.perf_counter() - t_all
    finally:
        for layer, meth in wrapped:
            delattr(layer, meth)
    out = {k: v / steps for k, v in acc.items()}
    out["SGD update"] = t_upd / steps
    out["python glue"] = (total - t_upd) / steps - sum(out[k] for k in acc)
    out["total"] = total / steps
    return out


def allocation(net, context, x, t):
    """Peak transient memory of one steady-state step, in units of the largest parameter:
    the book's API and, where the network has it, ``train_step`` with ``optimizers.SGD``."""
    params = net.params
    largest = max(a.nbytes for a in params.values())

    def book_step():
        grads = net.gradient(x, t)
        for key in params:
            params[key] -= cases.LR * grads[key]
    variants = {"book API": book_step}
    if hasattr(net, "train_step"):
        opt = SGD(lr=cases.LR)
        variants["train_step"] = lambda: net.train_step(x, t, opt)
    out = {}
    with context():
        for label, fn in variants.items():
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
            out[label] = (peak - before) / largest
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=list(cases.STEPS))
    p.add_argument("--dtype", choices=cases.DTYPES, default="float64")
    p.add_argument("--steps", type=int, default=20, help="steps to time (default 20)")
    p.add_argument("--alloc", action="store_true", help="also the peak transient memory")
    args = p.parse_args(argv)
    nets, x, t = networks(cases.STEPS[args.step], args.dtype)
    per = {name: profile(net, ctx, x, t, args.steps) for name, (net, ctx) in nets.items()}
    phases = [k for k in next(iter(per.values())) if k != "total"]
    rows = [[ph] + [f"{fmt_time(p[ph])} {100 * p[ph] / p['total']:4.1f}%" for p in per.values()]
            for ph in phases]
    rows.append(["total"] + [fmt_time(p["total"]) for p in per.values()])
    print(f"{args.step} {args.dtype}: time per step by phase")
    print("\n".join(table(["phase", *per], rows)))
    if args.alloc:
        print("\npeak transient memory of one step, in units of the largest parameter")
        rows = [[name] + [f"{v:.2f}" for v in allocation(net, ctx, x, t).values()]
                for name, (net, ctx) in nets.items() if name != "book"]
        print("\n".join(table(["backend", "book API", "train_step"], rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
