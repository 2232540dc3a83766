"""Interleaved timing: the contenders of a case in turn, round after round, and medians.

A slow moment of a shared machine then hits every contender of a round alike, and a
ratio is the median of the ratios within each round. A sample is the mean of ``number``
back-to-back calls (fresh inputs, where the call overwrites them, made right before each
call and outside its timing). Before each sample the contender runs untimed: once, and
after a contender on another thread pool until it is back to its calibrated speed (the
threads the other pool leaves spinning have gone to sleep), for at most ``WARMUP_S``.
"""
import os
import statistics
import time

__all__ = ["measure", "machine_load", "WARMUP_S"]

# Seconds of untimed calls before a sample that follows a contender on another thread
# pool: OpenBLAS's idle threads keep spinning for a while after a call, and a contender
# on a pool of its own (PyTorch, JAX, fastbp's OpenMP threads) then runs on one core: it
# runs untimed until a call is as fast as when calibrated, for at most this long.
WARMUP_S = 0.2


def _sample(c, number, fresh):
    """Mean time of one call of contender ``c`` over ``number`` calls."""
    fn, clock = c.fn, time.perf_counter
    if fresh:
        dt = 0.0
        for _ in range(number):
            args = c.setup()
            t0 = clock()
            fn(*args)
            dt += clock() - t0
        return dt / number
    args = c.setup()
    t0 = clock()
    for _ in range(number):
        fn(*args)
    return (clock() - t0) / number


def _warm_up(c, fresh, seconds, target=None):
    """Untimed calls: at least one, then until a call takes at most 1.25x ``target``
    (the contender's calibrated time) or ``seconds`` have passed."""
    end = time.perf_counter() + seconds
    t = _sample(c, 1, fresh)
    while time.perf_counter() < end and (target is None or t > 1.25 * target):
        t = _sample(c, 1, fresh)


def measure(case, budget=0.5, repeats=7, pairs=()):
    """Median time per call of every contender of ``case``, and the ratios ``pairs``.

    ``budget``: seconds for the whole case, roughly, shared between contenders and
    rounds (a contender slower than its share runs once per round). Each round starts
    one contender further along (round ``r`` runs them from the ``r``-th on), so none
    is always first or always after the same one. Returns ``{"times": {name: s},
    "ratios": {"a/b": median of the per-round ratios}, "spread": {name: slowest
    sample / fastest}, "samples": {name: [s, ...]}}``.
    """
    names = list(case.contenders)
    if not names:
        return {"times": {}, "ratios": {}, "spread": {}, "samples": {}}
    share = budget / (len(names) * repeats)
    number, est = {}, {}
    for name in names:
        c = case.contenders[name]
        with c.context():
            _warm_up(c, case.fresh, WARMUP_S if c.own_threads else 0)
            est[name] = min(_sample(c, 1, case.fresh) for _ in range(2))
        number[name] = min(max(1, int(share / max(est[name], 1e-7))), 100_000)
    samples = {name: [] for name in names}
    previous = None
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c = case.contenders[name]
            with c.context():
                other_pool = (previous is not None
                              and c.own_threads != case.contenders[previous].own_threads)
                _warm_up(c, case.fresh, WARMUP_S if other_pool else 0, est[name])
                samples[name].append(_sample(c, number[name], case.fresh))
            previous = name
    times = {name: statistics.median(s) for name, s in samples.items()}
    ratios = {f"{a}/{b}": statistics.median(x / y for x, y in zip(samples[a], samples[b]))
              for a, b in pairs if a in samples and b in samples}
    spread = {name: max(s) / min(s) for name, s in samples.items()}
    return {"times": times, "ratios": ratios, "spread": spread, "samples": samples}


def machine_load():
    """``(load average over the last minute, CPUs this process may use)``, or
    ``(None, cpus)`` where the platform has no load average."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        return os.getloadavg()[0], cpus or 1
    except (AttributeError, OSError):
        return None, cpus or 1
