"""The overlap rule, for every kernel argument that is written, on both backends.

The rule (``fastbp.kernels._checks.apart``, docs/robustness.md): arrays a kernel writes
never share memory with one another; one it writes either shares no memory with an input
or is exactly that input (the result is then as if every input were read first); any
other overlap is a ValueError, raised before anything is written. Inputs that are
converted or copied at the boundary (strided ones, say) may overlap anything.

For every kernel, every written argument ``w`` and every other array argument ``a``:
``a`` exactly ``w`` (a distinct view of the same memory), ``a`` shifted from ``w`` by
one element or one row either way, and ``a`` a strided view over ``w``'s memory. The
expected outcome is decided from the memory alone (``np.shares_memory``), and the
expected values come from the same call on separate copies of the same values.
"""
import zlib

import numpy as np
import pytest

from fastbp import kernels
from fastbp.kernels import _numpy

from _kernel_specs import placed, specs

BACKENDS = {"numpy": _numpy}
if kernels.HAVE_CYTHON:
    BACKENDS["cython"] = kernels._cython

N, D = 4, 3
SPECS = specs(N, D)


def test_every_kernel_with_a_written_argument_is_covered():
    covered = {name.split("[")[0] for name in SPECS}
    assert covered == set(_numpy.__all__)  # every kernel writes out=, or updates in place


def _outcome(call, k, args):
    try:
        with np.errstate(all="ignore"):
            result = call(k, args)
    except (ValueError, TypeError) as exc:
        return ("err", type(exc), str(exc))
    result = result if isinstance(result, tuple) else (result,)
    return ("ok", [None if r is None else np.array(r) for r in result])


def _apart_copies(args):
    return {name: np.array(v, copy=True) for name, v in args.items()}


KINDS = ["exact", "+1 element", "-1 element", "+1 row", "-1 row", "strided"]
DTYPES = [np.float32, np.float64]


def _can_be_the_same_array(spec, w, a, dtype):
    """Whether ``w`` and ``a`` take arrays of the same shape and dtype (labels or a
    bias never do): only then is "exact" (one array passed as both) a case."""
    makers = SPECS[spec][0]
    rng = np.random.default_rng(0)  # the makers' shapes and dtypes do not depend on it
    x, y = makers[w](rng, np.dtype(dtype)), makers[a](rng, np.dtype(dtype))
    return x.shape == y.shape and x.dtype == y.dtype


# Every written argument against every other array argument, in every placement; the
# "exact" placement only for the pairs that can be one array.
CASES = [pytest.param(spec, w, a, kind, dtype,
                      id=f"{spec}:{w}-{a}-{kind}-{np.dtype(dtype).name}")
         for spec, (arrays, written, _) in SPECS.items()
         for w in written for a in arrays if a != w
         for kind in KINDS for dtype in DTYPES
         if kind != "exact" or _can_be_the_same_array(spec, w, a, dtype)]


def test_exact_cases_are_the_pairs_that_can_alias():
    exact = {(p.values[0], p.values[1], p.values[2]) for p in CASES if p.values[3] == "exact"}
    assert ("relu_forward", "out", "x") in exact
    assert ("relu_backward", "out", "mask") not in exact  # bool mask, float out
    assert ("bias_grad", "out", "dout") not in exact  # (D,) against (N, D)
    assert any(p.values[:3] == ("bias_grad", "out", "dout") for p in CASES)  # shifted: still


@pytest.mark.parametrize("spec, w, a, kind, dtype", CASES)
def test_overlap_rule(spec, w, a, kind, dtype):
    makers, written, call = SPECS[spec]
    rng = np.random.default_rng(zlib.crc32(f"{spec}:{w}-{a}:{kind}".encode()))
    base = {name: make(rng, np.dtype(dtype)) for name, make in makers.items()}
    outcomes = {}
    for backend, k in BACKENDS.items():
        args = placed(base, w, a, kind)
        apart = _apart_copies(args)  # the same values, in separate arrays
        expected = _outcome(call, k, apart)
        assert expected[0] == "ok", expected
        before = {name: np.array(v, copy=True) for name, v in args.items()}
        got = _outcome(call, k, args)
        shared = np.shares_memory(args[w], args[a])
        # copied at the boundary, if read: strided, or unaligned (intp labels a row of
        # float32 away)
        converted = not (args[a].flags.c_contiguous and args[a].flags.aligned)
        if shared and a in written:
            # two written arrays in one memory: refused (a strided one as not C-contiguous)
            assert got[0] == "err" and got[1] is ValueError, (backend, got)
        elif shared and kind != "exact" and not converted:
            assert got[0] == "err" and got[1] is ValueError, (backend, got)
            assert f"{w}: overlaps {a} without being it" in got[2], got[2]
        else:
            # apart, exactly the input, or an input copied at the boundary: the result of
            # reading every input first
            assert got[0] == "ok", (backend, got)
            for i, (x, y) in enumerate(zip(got[1], expected[1])):
                np.testing.assert_array_equal(x, y, err_msg=f"{backend} result {i}")
            for name in written:
                np.testing.assert_array_equal(args[name], apart[name], err_msg=f"{backend} {name}")
        if got[0] == "err":  # refused before anything was written
            for name, v in args.items():
                np.testing.assert_array_equal(v, before[name], err_msg=f"{backend} wrote {name}")
        outcomes[backend] = got if got[0] == "err" else "ok"
    assert len({str(o) for o in outcomes.values()}) == 1, outcomes  # the same on both


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_cases_that_were_wrong(backend):
    """batchnorm_backward(out=dout) returned zeros on the NumPy twin;
    affine_backward(dW_out=dout) with a square x computed db from the overwritten dout."""
    k = BACKENDS[backend]
    rng = np.random.default_rng(0)
    dout, xn = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    std, gamma = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    expect = k.batchnorm_backward(dout.copy(), xn, std, gamma)
    d = dout.copy()
    got = k.batchnorm_backward(d, xn, std, gamma, out=d)
    assert got[0] is d
    for x, y in zip(got, expect):
        np.testing.assert_array_equal(x, y)
    assert np.abs(got[0]).max() > 0
    dout, x, W = (rng.standard_normal((4, 4)) for _ in range(3))
    expect = k.affine_backward(dout.copy(), x, W)
    d = dout.copy()
    got = k.affine_backward(d, x, W, dW_out=d)
    for u, v in zip(got, expect):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(got[2], dout.sum(axis=0))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_large_arrays_follow_the_rule(backend):
    """The NumPy sigmoid works in slices: in place it is right past the first slice, and
    a shifted out is refused whatever the size (it was wrong past the slice size)."""
    k = BACKENDS[backend]
    x = np.random.default_rng(1).standard_normal(50_001) * 10
    expect = k.sigmoid_forward(x)
    a = x.copy()
    np.testing.assert_array_equal(k.sigmoid_forward(a, out=a), expect)
    buf = np.concatenate([x, [0.0]])
    with pytest.raises(ValueError, match="out: overlaps x without being it"):
        k.sigmoid_forward(buf[:-1], out=buf[1:])
    np.testing.assert_array_equal(buf[:-1], x)
