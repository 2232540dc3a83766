"""Property-based tests: random shapes, dtypes, layouts and values at every public kernel
and layer. Whatever the input: no crash, no hang, no change to the caller's arrays, and
the two backends either agree or raise the same exception with the same message.

Agreement is exact where a kernel only rounds like NumPy (ReLU, the sigmoid gradient,
Affine's products); where ``exp`` is involved NumPy's SIMD exp and the C library's may
differ by an ulp, so float64 is held to rtol 1e-12 and float32 to rtol 1e-6 (``TOL``).
The number of examples comes from the hypothesis profile in ``conftest.py``.
"""
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import fastbp  # noqa: E402
from fastbp import functions, kernels  # noqa: E402
from fastbp.kernels import _numpy  # noqa: E402
from fastbp.kernels._checks import float_dtype  # noqa: E402
from fastbp.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss  # noqa: E402

pytestmark = pytest.mark.skipif(not kernels.HAVE_CYTHON,
                                reason="backend agreement needs the compiled kernels")
MODULES = {"numpy": _numpy, "cython": getattr(kernels, "_cython", None)}

TOL = {np.dtype(np.float32): dict(rtol=1e-6, atol=1e-40),
       np.dtype(np.float64): dict(rtol=1e-12, atol=1e-300)}

GOOD = [np.float32, np.float64]
CONVERTED = [np.int8, np.int64, np.uint16, np.bool_]
REFUSED = [np.float16, np.complex128, object]
LAYOUTS = ["C", "F", "strided", "readonly", "unaligned", "reversed", "byteswapped", "list"]


# --------------------------------------------------------------------------- strategies

def _elements(dtype, finite, bound, nonneg=False):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        width = 8 * dtype.itemsize
        if finite:
            bound = min(bound, float(np.finfo(dtype).max))
            low = 0.0 if nonneg else -bound
            return st.floats(low, bound, width=width, allow_nan=False, allow_infinity=False)
        return st.floats(width=width)
    if dtype.kind == "c":
        return st.complex_numbers(max_magnitude=10)
    if finite and dtype.kind in "iu":  # e.g. targets: no 1e18 weights that cancel
        info = np.iinfo(dtype)
        low = 0 if nonneg else max(int(info.min), -int(bound))
        return st.integers(low, min(int(info.max), int(bound)))
    return None  # hypothesis' default for integers and bool


@st.composite
def arrays(draw, shape=None, dtypes=GOOD + CONVERTED, finite=False, bound=1e6,
           min_dims=0, max_dims=3, layouts=LAYOUTS, nonneg=False):
    """An array (or nested list) of a random dtype, shape, layout and values.
    ``finite``: values in [-bound, bound] ([0, bound] with ``nonneg``)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=5))
    base_dtype = np.float64 if dtype == object else dtype
    a = draw(hnp.arrays(base_dtype, shape, elements=_elements(base_dtype, finite, bound, nonneg)))
    if dtype == object:
        a = a.astype(object)
    return _layout(a, draw(st.sampled_from(layouts)))


def _layout(a, layout):
    """The same values as ``a`` in another memory layout."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided" and a.ndim:
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "unaligned" and a.dtype.kind in "fc" and a.size:
        buf = np.zeros(a.nbytes + 1, np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if layout == "reversed" and a.ndim:
        return a[::-1].copy()[::-1]
    if layout == "byteswapped" and a.dtype.kind in "fiu" and a.dtype.itemsize > 1:
        return a.astype(a.dtype.newbyteorder())
    if layout == "list" and a.dtype.kind in "fiub":
        return a.tolist()
    return a


def labels_for(n, c):
    """Labels, mostly valid, sometimes out of range, non-integer, or of another type."""
    valid = st.lists(st.integers(0, max(c - 1, 0)), min_size=n, max_size=n)
    anyint = st.lists(st.integers(-3, c + 3), min_size=max(n - 1, 0), max_size=n + 1)
    floats = st.lists(st.sampled_from([0.0, 1.0, 0.5, -1.0, float("nan"), float("inf"), 1e20]),
                      min_size=n, max_size=n)
    dtypes = st.sampled_from([np.int64, np.int32, np.uint8, np.intp, np.float64])
    return st.one_of(
        st.tuples(valid, dtypes).map(lambda p: np.array(p[0], dtype=p[1])),
        st.tuples(valid, dtypes).map(lambda p: np.array(p[0], dtype=p[1])[::-1].copy()[::-1]),
        anyint.map(np.array),
        floats.map(np.array),
        valid,
    )


# --------------------------------------------------------------------------- running both

def _snap(args):
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]


def _unchanged(before, after, where):
    for a, b in zip(before, after):
        if not isinstance(a, np.ndarray):
            continue
        if a.dtype == object:  # the same objects (NaN != NaN, but it is the same NaN)
            assert all(p is q for p, q in zip(a.flat, b.flat)), where
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)


def _same_values(a, b, exact, where, tol_dtype=None):
    if a is None or b is None:
        assert a is None and b is None, where
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (where, a.dtype, b.dtype)
    assert a.shape == b.shape, (where, a.shape, b.shape)
    if exact or a.dtype.kind not in "f":
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        np.testing.assert_allclose(a, b, err_msg=where, **TOL[tol_dtype or a.dtype])


def both(name, *args, exact=False, out_of=None, **kw):
    """Run kernel ``name`` on both backends; check agreement; return the NumPy result.

    ``out_of(result)`` builds an ``out=`` buffer from a first plain NumPy result (a fresh
    buffer per backend). The caller's arrays must come back unchanged.
    """
    before = _snap(args)
    make_out = None
    if out_of is not None:
        try:
            with np.errstate(all="ignore"):
                first = getattr(_numpy, name)(*args, **kw)
            make_out = lambda: out_of(first)  # noqa: E731
        except (ValueError, TypeError):
            pass
    res = {}
    for backend, mod in MODULES.items():
        kwargs = dict(kw)
        if make_out is not None:
            kwargs["out"] = make_out()
        try:
            with np.errstate(all="ignore"):
                res[backend] = ("ok", getattr(mod, name)(*args, **kwargs))
        except (ValueError, TypeError, RuntimeError) as exc:
            res[backend] = ("err", exc)
        _unchanged(before, args, f"{backend}.{name} wrote to an argument")
    (kn, vn), (kc, vc) = res["numpy"], res["cython"]
    note(f"{name}: numpy -> {kn} {vn!r:.300}; cython -> {kc} {vc!r:.300}")
    assert kn == kc, f"{name}: numpy {kn} ({vn!r}), cython {kc} ({vc!r})"
    if kn == "err":
        assert type(vn) is type(vc), (vn, vc)
        assert str(vn) == str(vc), (vn, vc)
        return None
    if isinstance(vn, tuple):
        for i, (a, b) in enumerate(zip(vn, vc)):
            _same_values(a, b, exact, f"{name}[{i}]")
    else:
        _same_values(vn, vc, exact, name)
    return vn


def float_dtype_of(a):
    return float_dtype("x", np.asarray(a))


# --------------------------------------------------------------------------- kernels

@given(x=arrays(dtypes=GOOD + CONVERTED + REFUSED))
def test_relu_forward(x):
    r = both("relu_forward", x, exact=True)
    if r is not None:
        out, mask = r
        xf = np.asarray(x, dtype=out.dtype)
        np.testing.assert_array_equal(mask, xf <= 0)
        np.testing.assert_array_equal(out, np.where(mask, 0.0, xf).astype(out.dtype))


@given(x=arrays(), use_out=st.booleans())
def test_relu_forward_out(x, use_out):
    both("relu_forward", x, exact=True,
         out_of=(lambda r: np.zeros_like(r[0])) if use_out else None)


@given(data=st.data())
def test_relu_backward(data):
    dout = data.draw(arrays(dtypes=GOOD + CONVERTED + REFUSED))
    shape = np.shape(dout) if data.draw(st.booleans()) else None
    mask = data.draw(arrays(shape=shape, dtypes=[np.bool_, np.bool_, np.bool_, np.int8, np.float64],
                            layouts=["C", "F", "strided", "readonly", "list"]))
    both("relu_backward", dout, mask, exact=True)


@given(x=arrays(dtypes=GOOD + CONVERTED + REFUSED))
def test_sigmoid_forward(x):
    r = both("sigmoid_forward", x)
    if r is not None and np.size(r):
        assert np.all((r >= 0) & (r <= 1) | np.isnan(r))


@given(x=arrays(dtypes=GOOD, finite=True, bound=1e300))
def test_sigmoid_no_warning_for_finite(x):
    for mod in MODULES.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = mod.sigmoid_forward(x)
        assert np.isfinite(y).all()


@given(data=st.data())
def test_sigmoid_backward(data):
    dout = data.draw(arrays(dtypes=GOOD + CONVERTED + REFUSED))
    shape = np.shape(dout) if data.draw(st.integers(0, 4)) else None
    y = data.draw(arrays(shape=shape, dtypes=GOOD + CONVERTED))
    use_out = data.draw(st.booleans())
    both("sigmoid_backward", dout, y, exact=True,
         out_of=(lambda r: np.zeros_like(r)) if use_out else None)


@given(dout=arrays(dtypes=GOOD + CONVERTED + REFUSED, min_dims=1, max_dims=3))
def test_bias_grad(dout):
    r = both("bias_grad", dout, exact=True)  # one summation order on both backends
    if r is not None:
        ref = np.asarray(dout, dtype=np.float64).sum(axis=0)
        np.testing.assert_allclose(r, ref.astype(r.dtype), **TOL[r.dtype])


def _sequential_column_sums(a):
    acc = np.zeros(a.shape[1])
    for row in np.asarray(a, np.float64):
        acc = acc + row
    return acc


@given(data=st.data())
def test_column_sums_have_one_order(data):
    """Single columns above all, where NumPy's own sum is pairwise: bias_grad, and the
    statistics and gradients of batch normalization, sum each column from 0 in row
    order on both backends, bit for bit."""
    n = data.draw(st.integers(1, 300))
    m = data.draw(st.sampled_from([1, 1, 1, 2, 3]))
    dt = data.draw(st.sampled_from(GOOD))
    scale = data.draw(st.sampled_from([1.0, 1e8, 1e16]))
    a = data.draw(hnp.arrays(dt, (n, m), elements=_elements(dt, True, 1.0))) * dt(scale)
    a[0] = data.draw(st.sampled_from([0.0, 1.0, -scale, scale]))  # a large head, often
    r = both("bias_grad", a, exact=True)
    np.testing.assert_array_equal(r, _sequential_column_sums(a).astype(dt))
    gamma, beta = np.ones(m, dt), np.zeros(m, dt)
    stats = [(np.zeros(m, dt), "C"), (np.ones(m, dt), "C")]
    r = both_in_place("batchnorm_forward", stats, lambda built, *rest: [*rest[:3], *built, *rest[3:]],
                      a, gamma, beta, 0.9, 1e-5, exact=True)
    if r is not None:
        _, (out, xn, std) = r
        both("batchnorm_backward", a, xn, std, gamma, exact=True)


@given(data=st.data())
def test_convolution_bias_sums_have_one_order(data):
    """conv_bias_grad sums each plane in the compiled loop's order (8 running sums, then
    the tail) and the planes of a channel from 0 in image order, on both backends, bit
    for bit: planes shorter and longer than 8, one and several channels."""
    n, c = data.draw(st.integers(1, 4)), data.draw(st.sampled_from([1, 1, 2, 3]))
    h, w = data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7))
    dt = data.draw(st.sampled_from(GOOD))
    scale = data.draw(st.sampled_from([1.0, 1e8, 1e16]))
    a = data.draw(hnp.arrays(dt, (n, c, h, w), elements=_elements(dt, True, 1.0))) * dt(scale)
    a.flat[0] = data.draw(st.sampled_from([0.0, 1.0, -scale, scale]))
    both("conv_bias_grad", a, exact=True)


def test_column_sum_of_the_reported_case():
    """[[1e16], [1], [1], [1], [0] x 8]: pairwise gives 1e16 + 2, sequential 1e16."""
    a = np.array([[1e16], [1], [1], [1]] + [[0.0]] * 8)
    for mod in MODULES.values():
        assert mod.bias_grad(a)[0] == 1e16


@given(data=st.data())
def test_affine_backward(data):
    n, d, m = (data.draw(st.integers(0, 5)) for _ in range(3))
    fuzz = data.draw(st.integers(0, 3))  # 0: a wrong shape somewhere
    x = data.draw(arrays(shape=(n, d) if fuzz else None, dtypes=GOOD + CONVERTED + REFUSED))
    W = data.draw(arrays(shape=(d, m) if fuzz else None, dtypes=GOOD + CONVERTED))
    dout = data.draw(arrays(shape=(n, m) if fuzz else None, dtypes=GOOD + CONVERTED))
    need_dx = data.draw(st.booleans())
    r = both("affine_backward", dout, x, W, need_dx=need_dx)
    if r is not None and fuzz:
        dx, dW, db = r
        assert (dx is None) == (not need_dx)
        assert dW.shape == (d, m) and db.shape == (m,)


@given(data=st.data())
def test_softmax_cross_entropy(data):
    n, c = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 6))
    x = data.draw(arrays(shape=(n, c) if data.draw(st.integers(0, 5)) else None,
                         dtypes=GOOD + CONVERTED + REFUSED))
    if data.draw(st.booleans()):
        t = data.draw(labels_for(n, c))
    else:  # targets in [0, 1]: negative weights cancel, leaving no relative accuracy to compare
        t = data.draw(arrays(shape=(n, c) if data.draw(st.integers(0, 5)) else None,
                             dtypes=GOOD + CONVERTED + [np.float16], finite=True, bound=1.0, nonneg=True))
    use_out = data.draw(st.booleans())
    r = both("softmax_cross_entropy", x, t, out_of=(lambda r: np.zeros_like(r[1])) if use_out else None)
    if r is not None:
        loss, y = r
        assert loss.dtype == y.dtype == float_dtype_of(x)
        finite_rows = np.isfinite(np.asarray(x, float)).all(axis=1)
        np.testing.assert_allclose(y[finite_rows].sum(axis=1), 1.0, rtol=1e-5)


@given(data=st.data())
def test_softmax_cross_entropy_backward(data):
    n, c = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 6))
    y = data.draw(arrays(shape=(n, c) if data.draw(st.integers(0, 5)) else None,
                         dtypes=GOOD + CONVERTED + REFUSED))
    if data.draw(st.booleans()):
        t = data.draw(labels_for(n, c))
    else:
        t = data.draw(arrays(shape=(n, c) if data.draw(st.integers(0, 5)) else None,
                             dtypes=GOOD + CONVERTED, finite=True, bound=1.0, nonneg=True))
    dout = data.draw(st.sampled_from([1.0, 1, 0.5, -2.0, np.float32(3.0), float("nan")]))
    use_out = data.draw(st.booleans())
    both("softmax_cross_entropy_backward", y, t, dout,
         out_of=(lambda r: np.zeros_like(r)) if use_out else None)


@given(data=st.data())
def test_softmax_agrees_with_log_sum_exp(data):
    """Finite logits: the fused loss is the exact log-softmax loss, no warnings."""
    n, c = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 6))
    dtype = data.draw(st.sampled_from(GOOD))
    x = data.draw(arrays(shape=(n, c), dtypes=[dtype], finite=True, bound=1e4))
    t = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    x64 = np.asarray(x, np.float64)
    m = x64.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x64 - m).sum(axis=1)) + m[:, 0]
    ref = float(np.mean(lse - x64[np.arange(n), t]))
    for mod in MODULES.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss, y = mod.softmax_cross_entropy(x, t)
            mod.softmax_cross_entropy_backward(y, t)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert abs(float(loss) - ref) <= tol * (1 + abs(ref))


# --------------------------------------------------------------------------- chapter 6

# In-place kernels: state arrays are updated, so each backend gets its own copies, built
# from one drawn recipe (values and layout); results must agree bit for bit.
OPTIMIZERS = {  # kernel -> (state buffers, hyperparameters)
    "sgd_update": ((), ("lr",)),
    "momentum_update": (("v",), ("lr", "momentum")),
    "nesterov_update": (("v",), ("lr", "momentum")),
    "adagrad_update": (("h",), ("lr", "eps")),
    "rmsprop_update": (("h",), ("lr", "decay_rate", "eps")),
    "adam_update": (("m", "v"), ("lr_t", "beta1", "beta2", "eps")),
}
HYPER = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1e-7, 0.9, 0.999, 1.0, 2.0, -0.5]),
                  st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def recipes(draw, shape, dtypes, layouts, nonneg=False):
    """(values, layout) from which equal arrays are built for each backend."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    values = draw(hnp.arrays(dtype, shape, elements=_elements(dtype, False, 1e6, nonneg)))
    return values, draw(st.sampled_from(layouts))


def _build(recipe):
    values, layout = recipe
    return _layout(values.copy(), layout)


def both_in_place(name, recipes_, arguments, *rest, exact=True):
    """Run in-place kernel ``name`` on each backend with fresh arrays built from
    ``recipes_``: ``arguments(built, *rest)`` gives the call's arguments. Compare the
    outcome, the updated arrays and the result (bit for bit, or within ``TOL`` of the
    first result's dtype when not ``exact``); ``rest`` must come back unchanged.
    Returns ``(updated arrays, result)`` of the NumPy backend, or None."""
    res = {}
    for backend, mod in MODULES.items():
        args = [_build(r) for r in recipes_]
        before = _snap(rest)
        try:
            with np.errstate(all="ignore"):
                out = getattr(mod, name)(*arguments(args, *rest))
            res[backend] = ("ok", args, out)
        except (ValueError, TypeError, RuntimeError) as exc:
            res[backend] = ("err", exc, None)
        _unchanged(before, rest, f"{backend}.{name} wrote to a read-only argument")
    (kn, vn, on), (kc, vc, oc) = res["numpy"], res["cython"]
    note(f"{name}: numpy -> {kn} {vn!r:.300}; cython -> {kc} {vc!r:.300}")
    assert kn == kc, f"{name}: numpy {kn} ({vn!r}), cython {kc} ({vc!r})"
    if kn == "err":
        assert type(vn) is type(vc) and str(vn) == str(vc), (vn, vc)
        return None
    on, oc = (on if isinstance(on, tuple) else (on,)), (oc if isinstance(oc, tuple) else (oc,))
    tol = None if exact else np.asarray(on[0]).dtype
    for i, (a, b) in enumerate(zip(vn, vc)):
        _same_values(a, b, exact, f"{name} argument {i}", tol)
    for i, (a, b) in enumerate(zip(on, oc)):
        _same_values(a, b, exact, f"{name} result {i}", tol)
    return vn, on


@given(data=st.data(), name=st.sampled_from(sorted(OPTIMIZERS)))
def test_optimizer_updates(data, name):
    """Both backends update param and state alike, bit for bit, or refuse alike (a param
    or state that is not a writable C-contiguous float array, a grad of another shape)."""
    state, hyper = OPTIMIZERS[name]
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    dtype = data.draw(st.sampled_from(GOOD))
    writable = ["C", "C", "C", "C", "F", "strided", "readonly", "list"]
    param = data.draw(recipes(shape, [dtype] * 4 + [np.int64, np.float16], writable))
    states = [data.draw(recipes(shape, [dtype] * 4 + [np.float32, np.float64], writable,
                                nonneg=s in ("h", "v") and name != "momentum_update"
                                and name != "nesterov_update"))
              for s in state]
    wrong = data.draw(st.integers(0, 5)) == 0
    grad = data.draw(arrays(shape=None if wrong else shape, dtypes=GOOD + CONVERTED + REFUSED))
    hypers = [data.draw(HYPER) for _ in hyper]
    # kernel(param, grad, *state, *hyperparameters)
    both_in_place(name, [param, *states], lambda built, grad, *h: [built[0], grad, *built[1:], *h],
                  grad, *hypers)


@given(data=st.data())
def test_dropout(data):
    x = data.draw(arrays(dtypes=GOOD + CONVERTED + REFUSED))
    u = data.draw(arrays(shape=np.shape(x) if data.draw(st.integers(0, 3)) else None,
                         dtypes=GOOD + CONVERTED, finite=True, bound=1.0, nonneg=True))
    ratio = data.draw(st.sampled_from([0.0, 0.5, 0.15, 1.0]))
    scale = data.draw(st.sampled_from([1.0, 2.0, 1 / 0.85]))
    use_out = data.draw(st.booleans())
    r = both("dropout_forward", x, u, ratio, scale, exact=True,
             out_of=(lambda r: np.zeros_like(r[0])) if use_out else None)
    dout = data.draw(arrays(shape=np.shape(x) if data.draw(st.integers(0, 3)) else None,
                            dtypes=GOOD + CONVERTED + REFUSED))
    mask = r[1] if r is not None else np.asarray(u) > ratio
    both("dropout_backward", dout, mask, scale, exact=True)


@given(data=st.data())
def test_batchnorm(data):
    """Training mode (running statistics updated in place), test mode and backward."""
    n, d = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 4))
    x = data.draw(arrays(shape=(n, d) if data.draw(st.integers(0, 5)) else None,
                         dtypes=GOOD + CONVERTED + REFUSED, finite=data.draw(st.booleans()),
                         bound=1e3))
    dt = np.dtype(data.draw(st.sampled_from(GOOD)))
    row = (d,) if data.draw(st.integers(0, 5)) else (d + 1,)
    gamma = data.draw(arrays(shape=row, dtypes=[dt], finite=True, bound=10))
    beta = data.draw(arrays(shape=(d,), dtypes=[dt], finite=True, bound=10))
    stats = [data.draw(recipes((d,), [dt] * 4 + [np.float32, np.float64],
                               ["C", "C", "C", "readonly", "strided"], nonneg=True))
             for _ in range(2)]
    momentum, eps = data.draw(st.sampled_from([0.9, 0.0, 1.0])), data.draw(st.sampled_from([1e-6, 1e-3]))
    # kernel(x, gamma, beta, running_mean, running_var, momentum, eps): the column sums
    # run in one order on both backends, so they agree bit for bit
    r = both_in_place("batchnorm_forward", stats,
                      lambda built, *rest: [*rest[:3], *built, *rest[3:]],
                      x, gamma, beta, momentum, eps, exact=True)
    if r is None:
        return
    sn, (out, xn, std) = r
    both("batchnorm_inference", x, gamma, beta, sn[0], sn[1], eps, exact=True)
    dout = data.draw(arrays(shape=out.shape if data.draw(st.integers(0, 4)) else None,
                            dtypes=GOOD + CONVERTED, finite=True, bound=1e3))
    both("batchnorm_backward", dout, xn, std, gamma, exact=True)


# --------------------------------------------------------------------------- layers

def _has_float32(*values):
    return any(np.asarray(v).dtype == np.float32 for v in values
               if isinstance(v, np.ndarray) or np.isscalar(v))


def _layer_both(make, steps, tol_dtype=None):
    """Run the same sequence of layer calls on both backends; compare every result.

    ``tol_dtype``: the tolerance to hold results to when a float32 value upstream was
    promoted to float64 (its rounding differences travel with it)."""
    res = {}
    for backend in ("numpy", "cython"):
        layer = make()
        outs = []
        with fastbp.use_backend(backend), np.errstate(all="ignore"):
            for method, args in steps:
                try:
                    outs.append(("ok", getattr(layer, method)(*args)))
                except (ValueError, TypeError, RuntimeError) as exc:
                    outs.append(("err", exc))
        res[backend] = outs
    for i, ((kn, vn), (kc, vc)) in enumerate(zip(res["numpy"], res["cython"])):
        assert kn == kc, (i, vn, vc)
        if kn == "err":
            assert type(vn) is type(vc) and str(vn) == str(vc), (vn, vc)
        else:
            _same_values(vn, vc, False, f"step {i}", tol_dtype)
    return res["numpy"]


@given(data=st.data())
def test_elementwise_layers(data):
    x = data.draw(arrays(dtypes=GOOD + CONVERTED + REFUSED))
    dout = data.draw(arrays(shape=np.shape(x) if data.draw(st.integers(0, 3)) else None))
    steps = [("forward", (x,)), ("backward", (dout,))]
    if data.draw(st.booleans()):
        steps.insert(0, ("backward", (dout,)))  # before any forward
    before = _snap([x, dout])
    loose = np.dtype(np.float32) if _has_float32(x, dout) else None
    for make in (Relu, Sigmoid):
        _layer_both(make, steps, loose)
    _unchanged(before, [x, dout], "a layer wrote to an argument")


@given(data=st.data())
def test_affine_layer(data):
    d, m = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    W = data.draw(arrays(shape=(d, m), dtypes=GOOD, finite=True, layouts=["C", "F", "readonly"]))
    b = data.draw(arrays(shape=(m,), dtypes=GOOD, finite=True, layouts=["C", "readonly"]))
    n = data.draw(st.integers(0, 4))
    if data.draw(st.integers(0, 4)):
        shape = data.draw(st.sampled_from([(n, d), (d,), (n, 1, d)]))
    else:
        shape = None
    x = data.draw(arrays(shape=shape, dtypes=GOOD + CONVERTED + REFUSED))
    out_shape = (m,) if np.ndim(x) == 1 else (np.shape(x)[0] if np.ndim(x) else 0, m)
    dout = data.draw(arrays(shape=out_shape if data.draw(st.integers(0, 3)) else None))
    W0, b0 = np.array(W), np.array(b)
    loose = np.dtype(np.float32) if _has_float32(x, dout, W, b) else None
    res = _layer_both(lambda: Affine(W, b), [("forward", (x,)), ("backward", (dout,))], loose)
    np.testing.assert_array_equal(W, W0)  # parameters are only read
    np.testing.assert_array_equal(b, b0)
    if res[1][0] == "ok":
        assert res[1][1].shape == np.shape(x)


@given(data=st.data())
def test_softmax_with_loss_layer(data):
    n, c = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 5))
    single = data.draw(st.booleans())
    x = data.draw(arrays(shape=(c,) if single else (n, c), dtypes=GOOD + CONVERTED + REFUSED))
    if data.draw(st.booleans()):
        t = data.draw(labels_for(1 if single else n, c))
        if single and isinstance(t, np.ndarray) and t.size == 1 and data.draw(st.booleans()):
            t = t.reshape(())
    else:
        t = data.draw(arrays(shape=(c,) if single else (n, c), dtypes=GOOD, finite=True, bound=1.0, nonneg=True))
    dout = data.draw(st.sampled_from([1, 0.5, 2.0]))
    loose = np.dtype(np.float32) if _has_float32(x, t) else None
    res = _layer_both(SoftmaxWithLoss, [("forward", (x, t)), ("backward", (dout,))], loose)
    if res[0][0] == "ok":
        assert res[1][1].shape == np.shape(x)


@given(data=st.data())
def test_functions(data):
    x = data.draw(arrays(dtypes=GOOD + CONVERTED + REFUSED, min_dims=1))
    res = {}
    for backend in ("numpy", "cython"):
        with fastbp.use_backend(backend), np.errstate(all="ignore"):
            row = []
            for f in (functions.sigmoid, functions.sigmoid_grad, functions.relu,
                      functions.relu_grad, functions.softmax):
                try:
                    row.append(("ok", f(x)))
                except (ValueError, TypeError) as exc:
                    row.append(("err", exc))
            res[backend] = row
    for (kn, vn), (kc, vc) in zip(res["numpy"], res["cython"]):
        assert kn == kc
        if kn == "ok":
            _same_values(vn, vc, False, "functions")
        else:
            assert type(vn) is type(vc) and str(vn) == str(vc)


@given(data=st.data())
def test_two_layer_net_gradient(data):
    """Whole training steps from random small data: both backends agree."""
    n, d, h, c = (data.draw(st.integers(1, 4)) for _ in range(4))
    dtype = data.draw(st.sampled_from(GOOD))
    x = data.draw(arrays(shape=(n, d), dtypes=[dtype], finite=True, bound=10.0))
    t = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    grads = {}
    for backend in ("numpy", "cython"):
        net = fastbp.TwoLayerNet(d, h, c, weight_init_std=0.5, dtype=dtype, rng=3)
        with fastbp.use_backend(backend):
            g = net.gradient(x, t)
            for k in net.params:
                net.params[k] -= 0.1 * g[k]
            grads[backend] = (net.loss(x, t), g)
    ln, gn = grads["numpy"]
    lc, gc = grads["cython"]
    # a whole training step sums and cancels: looser than one kernel
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-10, 1e-13)
    np.testing.assert_allclose(ln, lc, rtol=rtol)
    for k in gn:
        np.testing.assert_allclose(gn[k], gc[k], rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- aliasing

from _kernel_specs import placed, specs  # noqa: E402

# Not compared bit for bit: exp, and matrix products (the compiled backend's products are
# blocked CBLAS calls, NumPy's may take gemv or its own loop for thin shapes: they round
# differently).
_APPROXIMATE_KERNELS = ("sigmoid_forward", "softmax_cross_entropy", "affine_forward",
                        "affine_backward", "conv_forward", "conv_backward")
_SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30, -1e-30]


@given(data=st.data())
def test_aliasing_every_pair_of_array_arguments(data):
    """Any two array arguments of any kernel in one buffer (the same array, shifted by
    an element or a row, or one strided over the other), single columns included: both
    backends give the same values, or refuse alike (the overlap rule)."""
    n, d = data.draw(st.integers(1, 5)), data.draw(st.sampled_from([1, 1, 2, 3, 4]))
    table = specs(n, d)
    name = data.draw(st.sampled_from(sorted(table)))
    makers, written, call = table[name]
    first, second = data.draw(st.permutations(list(makers)))[:2]
    kind = data.draw(st.sampled_from(["exact", "+1 element", "-1 element", "+1 row", "-1 row",
                                      "strided"]))
    dt = np.dtype(data.draw(st.sampled_from(GOOD)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    base = {k: make(rng, dt) for k, make in makers.items()}
    if base[first].dtype == np.bool_:  # fill a mask last: any other bytes are not a bool
        first, second = second, first
    for k in base:  # a few special values in the float inputs
        if base[k].dtype.kind == "f" and base[k].size and data.draw(st.booleans()):
            base[k].flat[data.draw(st.integers(0, base[k].size - 1))] = data.draw(st.sampled_from(_SPECIAL))
    if kind == "exact" and (base[first].shape != base[second].shape
                            or base[first].dtype != base[second].dtype):
        kind = "+1 element"
    note(f"{name}: {first} and {second}, {kind}, {dt}, n={n} d={d}")
    res = {}
    for backend, mod in MODULES.items():
        args = placed(base, first, second, kind)
        if args is None:
            return
        try:
            with np.errstate(all="ignore"):
                out = call(mod, args)
            out = out if isinstance(out, tuple) else (out,)
            res[backend] = ("ok", [None if o is None else np.array(o) for o in out],
                            {k: np.array(args[k]) for k in written})
        except (ValueError, TypeError) as exc:
            res[backend] = ("err", type(exc), str(exc))
    (kn, *vn), (kc, *vc) = res["numpy"], res["cython"]
    assert kn == kc, (res["numpy"], res["cython"])
    if kn == "err":
        assert vn == vc
        return
    exact = not name.startswith(_APPROXIMATE_KERNELS)
    compare = _same_products if name.startswith(("affine", "conv_")) else _same_values
    for i, (a, b) in enumerate(zip(vn[0], vc[0])):
        compare(a, b, exact, f"{name} result {i}")
    for k in written:
        compare(vn[1][k], vc[1][k], exact, f"{name} {k}")


def _same_products(a, b, exact, where):
    """Results of matrix products: equal to a few ulp of the largest finite value (a
    rounding difference in one term can be all of a result that cancels to near 0)."""
    if a is None or b is None or np.asarray(a).dtype.kind != "f":
        return _same_values(a, b, exact, where)
    a, b = np.asarray(a), np.asarray(b)
    finite = np.abs(a[np.isfinite(a)])
    scale = float(finite.max()) if finite.size else 1.0
    np.testing.assert_allclose(a, b, err_msg=where, rtol=TOL[a.dtype]["rtol"],
                               atol=16 * np.finfo(a.dtype).eps * max(scale, 1.0))
