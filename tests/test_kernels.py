"""The kernel contract, checked on both backends.

Every case runs on each backend (the ``backend`` fixture) over dtype x layout, against
an independent reference written here (long double where precision matters), and the
two backends are compared with each other. Tolerances, per dtype:

- float64: rtol 1e-12 against the reference and between backends (transcendental
  kernels: a few ulp);
- float32: rtol 2e-6 (a few float32 ulp; sums are accumulated in double on both).

ReLU, its backward, and the zero/sign/NaN pattern of every kernel must match exactly.
"""
import warnings

import numpy as np
import pytest

from fastbp import kernels
from fastbp.kernels import _numpy

DTYPES = [np.float32, np.float64]
LAYOUTS = ["C", "F", "strided", "readonly"]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-300)}
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 1.5, -2.5, 30.0, -30.0, 1e30, -1e30,
           88.0, -104.0, 745.0]


def layout(a, kind):
    """The same values as ``a`` in another memory layout."""
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.full((a.shape[0] * 2,) + a.shape[1:-1] + (a.shape[-1] * 3,), 7, a.dtype)
        view = big[::2, ..., ::3]
        view[...] = a
        return view
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    raise ValueError(kind)


def data(rng, dtype, shape=(6, 16), special=True):
    a = rng.standard_normal(shape) * 3
    if special:
        flat = a.reshape(-1)
        flat[: len(SPECIAL)] = SPECIAL
        rng.shuffle(flat)
    return a.astype(dtype)


def same(a, b, dtype, exact=False):
    assert a.dtype == b.dtype == np.dtype(dtype)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    if exact:
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.signbit(a), np.signbit(b))
    else:
        np.testing.assert_allclose(a, b, equal_nan=True, **TOL[dtype])


def both(fn_name, *args, **kw):
    """Run a kernel on both backends; return (numpy result, cython result or None)."""
    ref = getattr(_numpy, fn_name)(*args, **kw)
    if not kernels.HAVE_CYTHON:
        return ref, None
    return ref, getattr(kernels._cython, fn_name)(*args, **kw)


@pytest.fixture(autouse=True)
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------------------------- ReLU

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_relu_forward(backend, rng, dtype, kind):
    x = layout(data(rng, dtype), kind)
    before = x.copy()
    out, mask = backend.relu_forward(x)
    expected_mask = x <= 0
    expected = np.where(expected_mask, dtype(0), x)
    np.testing.assert_array_equal(mask, expected_mask)
    assert mask.dtype == np.bool_
    same(out, expected, dtype, exact=True)
    assert not np.signbit(out[expected_mask]).any(), "-0.0 and -inf must give +0.0"
    assert np.isnan(out[np.isnan(x)]).all()
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_relu_backward_leaves_dout_alone(backend, rng, dtype, kind):
    x = data(rng, dtype)
    _, mask = backend.relu_forward(x)
    dout = layout(data(rng, dtype), kind)
    before = dout.copy()
    dx = backend.relu_backward(dout, layout(mask, kind))
    same(dx, np.where(mask, dtype(0), dout), dtype, exact=True)
    np.testing.assert_array_equal(dout, before)


def test_relu_kink_is_zero(backend):
    x = np.array([-1.0, -0.0, 0.0, 1e-300, 1.0])
    out, mask = backend.relu_forward(x)
    dx = backend.relu_backward(np.ones_like(x), mask)
    np.testing.assert_array_equal(dx, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(out, [0, 0, 0, 1e-300, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_in_place(backend, rng, dtype):
    x = data(rng, dtype)
    expected_out, expected_mask = _numpy.relu_forward(x)
    out, mask = backend.relu_forward(x, out=x)
    assert out is x
    same(x, expected_out, dtype, exact=True)
    dout = data(rng, dtype)
    expected = _numpy.relu_backward(dout, mask)
    dx = backend.relu_backward(dout, mask, out=dout)
    assert dx is dout
    same(dout, expected, dtype, exact=True)


def test_relu_any_rank(backend, rng):
    for shape in [(), (7,), (2, 3, 4), (2, 1, 3, 5)]:
        x = rng.standard_normal(shape)
        out, mask = backend.relu_forward(x)
        assert out.shape == mask.shape == np.shape(x)
        np.testing.assert_array_equal(out, np.where(x <= 0, 0, x))
        dx = backend.relu_backward(np.ones(shape), mask)
        np.testing.assert_array_equal(dx, (x > 0).astype(float))


# ------------------------------------------------------------------------- Sigmoid

def sigmoid_reference(x):
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(xl))
    return np.where(xl >= 0, 1 / (1 + e), e / (1 + e))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_sigmoid_forward(backend, rng, dtype, kind):
    x = layout(data(rng, dtype), kind)
    before = x.copy()
    y = backend.sigmoid_forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    ref = sigmoid_reference(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    tol = dict(rtol=4e-7, atol=1e-37) if dtype == np.float32 else dict(rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(y.astype(np.longdouble), ref, equal_nan=True, **tol)
    assert (y[np.isposinf(x)] == 1).all() and (y[np.isneginf(x)] == 0).all()
    assert ((y[~np.isnan(x)] >= 0) & (y[~np.isnan(x)] <= 1)).all()
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_sigmoid_backward(backend, rng, dtype, kind):
    y = backend.sigmoid_forward(data(rng, dtype))
    dout = layout(data(rng, dtype, special=False), kind)
    dx = backend.sigmoid_backward(dout, layout(y, kind))
    same(dx, dout * (1 - y) * y, dtype)


def test_sigmoid_extremes_no_overflow(backend):
    for dtype in DTYPES:
        big = np.finfo(dtype).max
        x = np.array([-big, -1000, -100, 0, 100, 1000, big], dtype=dtype)
        y = backend.sigmoid_forward(x)  # the autouse fixture turns warnings into errors
        assert np.isfinite(y).all()
        assert y[0] == 0 and y[-1] == 1 and y[3] == 0.5


# ------------------------------------------------------------------------- Affine

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_bias_grad(backend, rng, dtype, kind):
    dout = layout(data(rng, dtype, (37, 11), special=False), kind)
    db = backend.bias_grad(dout)
    ref = np.array([np.sum(col.astype(np.longdouble)) for col in np.asarray(dout).T])
    assert db.dtype == dtype and db.shape == (11,)
    np.testing.assert_allclose(db.astype(np.longdouble), ref, **TOL[dtype])


def test_bias_grad_special_values(backend, rng):
    dout = np.zeros((4, 5))
    dout[1, 0], dout[2, 1], dout[0, 2], dout[3, 2] = np.nan, np.inf, np.inf, -np.inf
    db = backend.bias_grad(dout)
    assert np.isnan(db[0]) and db[1] == np.inf and np.isnan(db[2])
    np.testing.assert_array_equal(db[3:], 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_affine_backward(backend, rng, dtype, kind):
    x = layout(data(rng, dtype, (8, 5), special=False), kind)
    W = layout(data(rng, dtype, (5, 3), special=False), kind)
    dout = layout(data(rng, dtype, (8, 3), special=False), kind)
    dx, dW, db = backend.affine_backward(dout, x, W)
    L = np.longdouble
    np.testing.assert_allclose(dx.astype(L), dout.astype(L) @ W.astype(L).T, **TOL[dtype])
    np.testing.assert_allclose(dW.astype(L), x.astype(L).T @ dout.astype(L), **TOL[dtype])
    np.testing.assert_allclose(db.astype(L), dout.astype(L).sum(0), **TOL[dtype])
    assert dx.dtype == dW.dtype == db.dtype == dtype
    none, dW2, db2 = backend.affine_backward(dout, x, W, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


# ------------------------------------------------------------------------- Softmax + CE

def softmax_ce_reference(x, labels):
    xl = x.astype(np.longdouble)
    z = xl - xl.max(axis=1, keepdims=True)
    log_s = np.log(np.exp(z).sum(axis=1))
    y = np.exp(z - log_s[:, None])
    loss = np.mean(log_s - z[np.arange(len(x)), labels])
    return loss, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("target", ["labels", "onehot"])
def test_softmax_cross_entropy(backend, rng, dtype, kind, target):
    x = (rng.standard_normal((9, 7)) * 5).astype(dtype)
    x[0, 3] = 700 if dtype == np.float64 else 80  # large logits: max-shifted, no overflow
    x = layout(x, kind)
    labels = rng.integers(0, 7, size=9)
    t = labels if target == "labels" else np.eye(7)[labels]
    t_before = t.copy()
    loss, y = backend.softmax_cross_entropy(x, layout(t, kind) if target == "onehot" else t)
    ref_loss, ref_y = softmax_ce_reference(x, labels)
    assert isinstance(loss, np.generic) and loss.dtype == dtype
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(float(loss), float(ref_loss), **TOL[dtype])
    np.testing.assert_allclose(y.astype(np.longdouble), ref_y, **TOL[dtype])
    np.testing.assert_array_equal(t, t_before)

    dx = backend.softmax_cross_entropy_backward(y, t, 2.0)
    expected = (ref_y - np.eye(7)[labels]) * 2 / 9
    np.testing.assert_allclose(dx.astype(np.longdouble), expected, rtol=TOL[dtype]["rtol"],
                               atol=10 * np.finfo(dtype).eps)
    assert dx.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_backward_in_place(backend, rng, dtype):
    x = rng.standard_normal((5, 4)).astype(dtype)
    labels = np.array([0, 3, 1, 1, 2])
    _, y = backend.softmax_cross_entropy(x, labels)
    expected = _numpy.softmax_cross_entropy_backward(y, labels)
    dx = backend.softmax_cross_entropy_backward(y, labels, out=y)
    assert dx is y
    np.testing.assert_allclose(dx, expected, **TOL[dtype])


def test_softmax_non_finite_rows(backend):
    x = np.array([
        [1.0, 2.0, 3.0],
        [np.nan, 0.0, 1.0],      # NaN anywhere: the row is NaN
        [np.inf, 0.0, 1.0],      # +inf: inf - inf is NaN
        [-np.inf, 0.0, 1.0],     # -inf: probability 0, finite loss
    ])
    labels = np.array([0, 1, 2, 2])
    for rows in ([0, 3], [0, 1], [0, 2]):
        loss, y = backend.softmax_cross_entropy(x[rows], labels[rows])
        if rows[1] == 3:
            assert np.isfinite(loss)
            assert y[1, 0] == 0 and np.isfinite(y).all()
            # one-hot targets give the same, even with -inf in a zero-target class
            loss2, _ = backend.softmax_cross_entropy(x[rows], np.eye(3)[labels[rows]])
            np.testing.assert_allclose(loss2, loss, rtol=1e-12)
        else:
            assert np.isnan(loss)
            assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()


def test_softmax_label_at_minus_inf_is_infinite_loss(backend):
    loss, _ = backend.softmax_cross_entropy(np.array([[-np.inf, 0.0]]), np.array([0]))
    assert loss == np.inf


def test_softmax_loss_is_exact(backend):
    """No epsilon in the log: the book's 1e-7 would dominate these losses."""
    loss, _ = backend.softmax_cross_entropy(np.array([[40.0, 0.0, 0.0]]), np.array([0]))
    assert 0 <= loss < 1e-15
    loss, _ = backend.softmax_cross_entropy(np.array([[12.0, 0.0, 0.0]]), np.array([0]))
    np.testing.assert_allclose(loss, np.log1p(2 * np.exp(-12.0)), rtol=1e-10)


# ------------------------------------------------------------------------- both backends

@pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_backends_agree(rng, dtype, kind):
    x = layout(data(rng, dtype, (12, 10)), kind)
    dout = layout(data(rng, dtype, (12, 10)), kind)
    a, b = both("relu_forward", x)
    same(a[0], b[0], dtype, exact=True)
    np.testing.assert_array_equal(a[1], b[1])
    a, b = both("relu_backward", dout, a[1])
    same(a, b, dtype, exact=True)
    a, b = both("sigmoid_forward", x)
    same(a, b, dtype)
    a, b = both("sigmoid_backward", dout, a)
    same(a, b, dtype)
    a, b = both("bias_grad", dout)
    same(a, b, dtype)
    W = layout(data(rng, dtype, (10, 4), special=False), kind)
    g = layout(data(rng, dtype, (12, 4), special=False), kind)
    for ra, rb in zip(*both("affine_backward", g, layout(data(rng, dtype, (12, 10), False), kind), W)):
        same(ra, rb, dtype)
    logits = layout(data(rng, dtype, (12, 10)), kind)
    labels = rng.integers(0, 10, 12)
    for t in (labels, np.eye(10, dtype=dtype)[labels]):
        (la, ya), (lb, yb) = both("softmax_cross_entropy", logits, t)
        same(ya, yb, dtype)
        np.testing.assert_allclose(la, lb, equal_nan=True, **TOL[dtype])
        same(*both("softmax_cross_entropy_backward", ya, t, 0.5), dtype)


# ------------------------------------------------------------------------- dtype rule

def test_integer_and_bool_inputs_become_float64(backend):
    out, _ = backend.relu_forward(np.array([[-2, 3]], dtype=np.int32))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0, 3]])
    y = backend.sigmoid_forward(np.array([True, False]))
    assert y.dtype == np.float64
    assert backend.bias_grad(np.ones((3, 2), dtype=np.int64)).dtype == np.float64


def test_mixed_precision_promotes(backend):
    y32 = backend.sigmoid_forward(np.zeros(3, np.float32))
    assert backend.sigmoid_backward(np.ones(3, np.float64), y32).dtype == np.float64
    dx, dW, db = backend.affine_backward(np.ones((2, 3), np.float32), np.ones((2, 4), np.float64),
                                         np.ones((4, 3), np.float32))
    assert dx.dtype == dW.dtype == db.dtype == np.float64
    # targets take the logits' dtype
    loss, y = backend.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.eye(3)[[0, 1]])
    assert loss.dtype == y.dtype == np.float32


@pytest.mark.parametrize("bad", [np.float16, np.complex128, object, "U3"])
def test_unsupported_dtypes(backend, bad):
    x = np.zeros((2, 3), dtype=bad)
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array.*dtype"):
        backend.relu_forward(x)
    with pytest.raises(TypeError, match="dtype"):
        backend.sigmoid_forward(x)


# ------------------------------------------------------------------------- out= buffers

def test_out_buffer_must_be_usable_as_is(backend):
    x = np.ones((4, 3))
    cases = [
        (np.empty((4, 3), np.float32), TypeError, "out: expected dtype float64"),
        (np.empty((3, 4)), ValueError, r"out: expected shape \(4, 3\)"),
        (np.empty((4, 3), order="F"), ValueError, "C-contiguous"),
        (np.empty((4, 6))[:, ::2], ValueError, "C-contiguous"),
        ([[0.0] * 3] * 4, TypeError, "out: expected an ndarray"),
    ]
    ro = np.empty((4, 3))
    ro.flags.writeable = False
    cases.append((ro, ValueError, "read-only"))
    for out, exc, msg in cases:
        for call in (lambda: backend.relu_forward(x, out=out),
                     lambda: backend.sigmoid_forward(x, out=out),
                     lambda: backend.softmax_cross_entropy(x, np.zeros(4, int), out=out)):
            with pytest.raises(exc, match=msg):
                call()


# ------------------------------------------------------------------------- empty arrays

def test_empty_arrays(backend):
    x = np.empty((0, 5))
    out, mask = backend.relu_forward(x)
    assert out.shape == mask.shape == (0, 5)
    assert backend.relu_backward(x, mask).shape == (0, 5)
    assert backend.sigmoid_forward(x).shape == (0, 5)
    np.testing.assert_array_equal(backend.bias_grad(x), np.zeros(5))
    dx, dW, db = backend.affine_backward(np.empty((0, 2)), x, np.ones((5, 2)))
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dW, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="empty batch"):
        backend.softmax_cross_entropy(x, np.empty(0, int))
    with pytest.raises(ValueError, match="no classes"):
        backend.softmax_cross_entropy(np.empty((3, 0)), np.zeros(3, int))


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_may_be_the_input(backend, rng, dtype):
    """In-place forwards give the same values as out-of-place ones."""
    x = data(rng, dtype, (70, 33))
    expected = _numpy.sigmoid_forward(x)
    same(backend.sigmoid_forward(x, out=x), expected, dtype)
    logits = data(rng, dtype, (70, 33), special=False)
    labels = rng.integers(0, 33, 70)
    ref_loss, ref_y = _numpy.softmax_cross_entropy(logits, labels)
    loss, y = backend.softmax_cross_entropy(logits, labels, out=logits)
    assert y is logits
    same(y, ref_y, dtype)
    np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])


@pytest.mark.parametrize("shape", [(3000, 50), (7, 5000), (3, 2047), (5, 2049), (2049, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_row_groups(backend, rng, dtype, shape):
    """The compiled softmax works on groups of rows that fit a 2048-element chunk (or on
    one row when a row is longer); the result does not depend on the grouping."""
    n, c = shape
    x = data(rng, dtype, shape, special=False) * 4
    labels = rng.integers(0, c, n)
    loss, y = backend.softmax_cross_entropy(x, labels)
    ref_loss, ref_y = softmax_ce_reference(x, labels)
    np.testing.assert_allclose(y.astype(np.longdouble), ref_y, **TOL[dtype])
    np.testing.assert_allclose(float(loss), float(ref_loss), **TOL[dtype])
    loss_t, y_t = backend.softmax_cross_entropy(x, np.eye(c, dtype=dtype)[labels])
    np.testing.assert_array_equal(y_t, y)
    np.testing.assert_allclose(float(loss_t), float(loss), **TOL[dtype])


@pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")
@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_exp_is_numpys(rng, dtype):
    """The compiled sigmoid and softmax call NumPy's own exp loop: bit for bit the
    NumPy twin's sigmoid, and the softmax numerators are np.exp's."""
    x = data(rng, dtype, (300, 97)) * 30
    np.testing.assert_array_equal(kernels._cython.sigmoid_forward(x), _numpy.sigmoid_forward(x))
    logits = rng.standard_normal((40, 3000)).astype(dtype) * 10  # one row per chunk
    logits[:, 0] = 50  # the max: exp(x - max) is exact at that column
    _, y = kernels._cython.softmax_cross_entropy(logits, np.zeros(40, dtype=np.intp))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, z / z.sum(axis=1, keepdims=True, dtype=np.float64), **TOL[dtype])


@pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")
@pytest.mark.parametrize("shape", [(1100, 1000), (61, 1000)])
def test_threads_do_not_change_results(rng, shape):
    """Large arrays are split across threads (the softmax and the sigmoid from 32,768
    elements, everything from a million); the results are bit-identical to one thread."""
    cy = kernels._cython
    x = rng.standard_normal(shape)
    labels = rng.integers(0, shape[1], shape[0])
    dout = rng.standard_normal(x.shape)
    before = kernels.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 3, 7):
            kernels.set_num_threads(n)
            out, mask = cy.relu_forward(x)
            loss, y = cy.softmax_cross_entropy(x, labels)
            results[n] = [out, mask, cy.relu_backward(dout, mask), cy.sigmoid_forward(x),
                          cy.sigmoid_backward(dout, x), loss, y,
                          cy.softmax_cross_entropy_backward(y, labels),
                          cy.softmax_cross_entropy_backward(y, np.eye(shape[1])[labels], 0.5)]
            # chapter 6: column sums split by columns, updates by elements
            results[n] += [cy.bias_grad(x), *cy.dropout_forward(x, np.abs(dout) % 1, 0.5, 2.0),
                           cy.dropout_backward(dout, mask, 2.0)]
            stats = [np.zeros(shape[1]), np.ones(shape[1])]
            bn = cy.batchnorm_forward(x, dout[0], dout[1], *stats, 0.9, 1e-5)
            results[n] += [*bn, *stats, cy.batchnorm_inference(x, dout[0], dout[1], *stats, 1e-5),
                           *cy.batchnorm_backward(dout, bn[1], bn[2], dout[0])]
            p, m, v = x.copy(), np.zeros_like(x), np.ones_like(x)
            cy.adam_update(p, dout, m, v, 0.01, 0.9, 0.999, 1e-7)
            cy.nesterov_update(p, dout, m, 0.1, 0.9)
            results[n] += [p, m, v]
    finally:
        kernels.set_num_threads(before)
    for n in (2, 3, 7):
        for a, b in zip(results[1], results[n]):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(results[1][3], _numpy.sigmoid_forward(x), rtol=1e-15)
    with pytest.raises(ValueError, match="positive number of threads"):
        kernels.set_num_threads(0)


# --------------------------------------------------------------------------- hyperparameters

def _hyper_calls():
    """kernel -> (call with the hyperparameters given by name, their good values)."""
    x, p = np.ones((3, 2)), lambda: np.ones((3, 2))
    d = np.ones(2)
    return {
        "sgd_update": (lambda k, h: k.sgd_update(p(), x, **h), {"lr": 0.1}),
        "momentum_update": (lambda k, h: k.momentum_update(p(), x, p(), **h),
                            {"lr": 0.1, "momentum": 0.9}),
        "nesterov_update": (lambda k, h: k.nesterov_update(p(), x, p(), **h),
                            {"lr": 0.1, "momentum": 0.9}),
        "adagrad_update": (lambda k, h: k.adagrad_update(p(), x, p(), **h), {"lr": 0.1, "eps": 1e-7}),
        "rmsprop_update": (lambda k, h: k.rmsprop_update(p(), x, p(), **h),
                           {"lr": 0.1, "decay_rate": 0.99, "eps": 1e-7}),
        "adam_update": (lambda k, h: k.adam_update(p(), x, p(), p(), **h),
                        {"lr_t": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}),
        "dropout_forward": (lambda k, h: k.dropout_forward(x, x / 2, **h), {"ratio": 0.5, "scale": 2.0}),
        "dropout_backward": (lambda k, h: k.dropout_backward(x, x > 0, **h), {"scale": 2.0}),
        "batchnorm_forward": (lambda k, h: k.batchnorm_forward(x, d, d, d.copy(), d.copy(), **h),
                              {"momentum": 0.9, "eps": 1e-5}),
        "batchnorm_inference": (lambda k, h: k.batchnorm_inference(x, d, d, d, d, **h), {"eps": 1e-5}),
        "softmax_cross_entropy_backward": (
            lambda k, h: k.softmax_cross_entropy_backward(np.full((3, 2), 0.5), [0, 1, 0], **h),
            {"dout": 1.0}),
        "affine_backward_sgd": (lambda k, h: k.affine_backward_sgd(x, x, np.ones((2, 2)), d.copy(), **h),
                                {"lr": 0.1, "decay": 0.01}),
    }


def test_every_float_hyperparameter_is_in_the_table():
    """The table above covers every parameter the type stub declares ``float``, so a new
    kernel's hyperparameters are checked alike on both backends or this fails."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(_numpy.__file__).with_name("_cython.pyi").read_text())
    declared = {(node.name, a.arg) for node in tree.body if isinstance(node, ast.FunctionDef)
                for a in node.args.args
                if a.annotation is not None and ast.unparse(a.annotation) == "float"}
    covered = {(name, param) for name, (_, good) in _hyper_calls().items() for param in good}
    assert declared == covered


BAD_HYPER = [None, "0.1", b"0.1", [0.1], (0.1,), np.array([0.1]), True, 1j, np.complex128(1)]


@pytest.mark.parametrize("name", sorted(_hyper_calls()))
def test_hyperparameters_are_checked_alike(name):
    """One check for every hyperparameter on both backends (``_checks.real_scalar``):
    None, strings, one-element lists and arrays, bools and complex numbers are refused
    with the same exception naming the argument; NumPy scalars, 0-d arrays and ints are
    taken as the float they hold."""
    call, good = _hyper_calls()[name]
    mods = [_numpy] + ([kernels._cython] if kernels.HAVE_CYTHON else [])
    for param in good:
        for bad in BAD_HYPER:
            errors = []
            for k in mods:
                with pytest.raises((TypeError, ValueError)) as info:
                    call(k, {**good, param: bad})
                errors.append((type(info.value), str(info.value)))
            assert errors[0][1].startswith(f"{param}: "), errors
            assert all(e == errors[0] for e in errors), (param, bad, errors)
        for fine in (np.float32(good[param]), np.array(good[param]), np.float64(good[param])):
            results = [call(k, {**good, param: fine}) for k in mods]
            for r in results[1:]:
                pairs = zip(results[0], r) if isinstance(r, tuple) else [(results[0], r)]
                for a, b in pairs:
                    np.testing.assert_array_equal(a, b)
