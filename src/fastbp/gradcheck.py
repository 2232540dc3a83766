"""The book's gradient check, told apart from ReLU kinks (``fastbp gradcheck``).

The book checks backpropagation by the mean ``|backprop - numerical|`` per parameter,
the numerical gradient being central differences ``(f(p + h) - f(p - h)) / 2h``. That
difference is the derivative only where the loss is smooth on ``[p - h, p + h]``. A
ReLU whose input crosses 0 inside that step puts a kink there: the difference then
averages two slopes and is off by up to half their gap (1e-3 and more), which on
some batches (one seed in eight, for the book's 3 images) fails the check although
backpropagation is right, and a user cannot tell that from a bug.

So the check watches every ReLU during each perturbed forward pass. An element whose
``+h`` or ``-h`` pass changes any ReLU's mask (some pre-activation, of some sample of
the batch, lies within the step of 0 and crosses it) straddles a kink: the report
names those elements and leaves them out; every other element is judged as the book
does. A wrong gradient still fails: it is wrong on the smooth elements too.
"""
import inspect
import time
from dataclasses import dataclass

import numpy as np

from . import kernels
from .gradient import numerical_gradient
from .layers import Relu

__all__ = ["TOLERANCE", "ParamCheck", "BackendCheck", "GradcheckReport", "gradient_check"]

# Mean absolute difference above which the check fails. float64 central differences
# away from kinks agree to ~1e-9 (truncation h**2 * f''' / 6); float32 rounding makes
# (f(x+h) - f(x-h)) / 2h uncertain at ~1e-3.
TOLERANCE = {"float64": 1e-6, "float32": 1e-2}


@dataclass
class ParamCheck:
    """One parameter's comparison. ``kinks``: a bool array of the parameter's shape,
    True where the central difference crosses a ReLU kink (not judged). ``mean_diff``
    and ``max_diff`` are over the other elements (None when there are none);
    ``kink_max_diff`` is the largest difference at a kink (None without kinks)."""
    name: str
    mean_diff: object
    max_diff: object
    kinks: np.ndarray
    kink_max_diff: object


@dataclass
class BackendCheck:
    backend: str
    params: dict
    seconds: float

    @property
    def worst(self):
        """The largest mean difference over the judged elements of any parameter."""
        return max((p.mean_diff for p in self.params.values() if p.mean_diff is not None),
                   default=0.0)


@dataclass
class GradcheckReport:
    """The checks of one network on one batch, per backend; ``str()`` is what
    ``fastbp gradcheck`` prints."""
    checks: list
    tol: float
    dtype: str

    @property
    def worst(self):
        return max((c.worst for c in self.checks), default=0.0)

    @property
    def ok(self):
        return self.worst <= self.tol

    def lines(self):
        out = ["mean |backprop - numerical| per parameter:"]
        for c in self.checks:
            cells = "  ".join(f"{name}:{_num(p.mean_diff)}" for name, p in c.params.items())
            out.append(f"  {c.backend:<6}  {cells}  ({c.seconds:.1f} s)")
        notes = [(c.backend, _kink_note(c)) for c in self.checks]
        if len({note for _, note in notes}) == 1:  # the same on every backend (or none)
            out += [f"near a ReLU kink, not judged: {notes[0][1]}"] if notes[0][1] else []
        else:  # a pre-activation rounded to either side of 0 by one backend only
            out += [f"near a ReLU kink, not judged ({b}): {note or 'none'}" for b, note in notes]
        ok = self.ok
        out.append(f"{'ok' if ok else 'FAILED'}: largest difference {self.worst:.2e} "
                   f"({'within' if ok else 'above'} {self.tol:g} for {self.dtype})")
        return out

    def __str__(self):
        return "\n".join(self.lines())


def _num(value):
    return "-" if value is None else f"{value:.2e}"


def _kink_note(check):
    """``W1: 130 of 39200 elements, b1[17] (differences there up to 2.1e-03)``, or ''."""
    parts, worst = [], 0.0
    for name, p in check.params.items():
        count = int(p.kinks.sum())
        if not count:
            continue
        worst = max(worst, p.kink_max_diff)
        if count <= 3:
            parts += [f"{name}[{', '.join(map(str, idx))}]" for idx in np.argwhere(p.kinks)]
        else:
            parts.append(f"{name}: {count} of {p.kinks.size} elements")
    return f"{', '.join(parts)} (differences there up to {worst:.1e})" if parts else ""


def _check_one(network, x, t, h, loss):
    relus = [layer for layer in network.layers.values() if isinstance(layer, Relu)]
    loss()
    masks = [r.mask.copy() for r in relus]
    start = time.perf_counter()
    backprop = network.gradient(x, t)
    params = {}
    for name in backprop:
        param = network.params[name]
        crossed = []  # per call of f: two per element, +h then -h, in nditer's order

        def f(_):
            value = loss()
            crossed.append(any(not np.array_equal(r.mask, m) for r, m in zip(relus, masks)))
            return value

        numerical = numerical_gradient(f, param, h)
        kinks = np.zeros(param.shape, dtype=bool)
        if any(crossed):
            pairs = np.array(crossed).reshape(-1, 2).any(axis=1)
            it = np.nditer(param, flags=["multi_index"])  # numerical_gradient's order
            for k, _ in enumerate(it):
                kinks[it.multi_index] = pairs[k]
        diff = np.abs(np.asarray(backprop[name], dtype=np.float64) - numerical)
        smooth = diff[~kinks]
        params[name] = ParamCheck(
            name,
            float(smooth.mean()) if smooth.size else None,
            float(smooth.max()) if smooth.size else None,
            kinks,
            float(diff[kinks].max()) if kinks.any() else None,
        )
    return params, time.perf_counter() - start


def gradient_check(network, x, t, *, backends=None, h=1e-4, tol=None):
    """Compare ``network.gradient(x, t)`` with central differences of its loss, per
    parameter and per backend; returns a ``GradcheckReport``.

    ``network``: one of the book's networks (``params``, ``layers``, ``loss`` and
    ``gradient``); the loss is taken in training mode, as the book's
    ``numerical_gradient`` does (so leave dropout out: it draws new masks every pass).
    ``backends``: names (default: the current one). ``tol``: the largest mean
    difference that passes (default ``TOLERANCE`` for the parameters' dtype). The
    parameters are perturbed in place and restored, as by ``numerical_gradient``.
    """
    dtype = np.dtype(network.params[next(iter(network.params))].dtype).name
    tol = TOLERANCE.get(dtype, TOLERANCE["float32"]) if tol is None else float(tol)
    if "train_flg" in inspect.signature(network.loss).parameters:  # chapter 6's networks
        loss = lambda: network.loss(x, t, train_flg=True)  # noqa: E731
    else:
        loss = lambda: network.loss(x, t)  # noqa: E731
    checks = []
    for backend in backends or [kernels.get_backend()]:
        with kernels.use_backend(backend):
            params, seconds = _check_one(network, x, t, h, loss)
        checks.append(BackendCheck(backend, params, seconds))
    return GradcheckReport(checks, tol, dtype)
