"""Dropout and BatchNormalization: the book's formulas, gradient checks, kernel twins."""

import re

import numpy as np
import pytest

import fastbp
from fastbp import BatchNormalization, Dropout, kernels, numerical_gradient
from fastbp.kernels import _numpy as knp

BACKENDS = ["numpy"] + (["cython"] if kernels.HAVE_CYTHON else [])
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastbp.use_backend(request.param):
        yield request.param


def _rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)


# --------------------------------------------------------------------------- Dropout

def test_dropout_inverted_scales_kept_units_and_is_the_identity_at_test_time(backend):
    x = np.random.default_rng(0).standard_normal((200, 50))
    layer = Dropout(0.3, inverted=True, rng=1)
    out = layer.forward(x)
    kept = layer.mask
    assert kept.dtype == np.bool_ and kept.shape == x.shape
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(out[kept], x[kept] / 0.7, rtol=1e-15)
    assert np.all(out[~kept] == 0)
    assert layer.forward(x, train_flg=False) is x
    dout = np.ones_like(x)
    np.testing.assert_allclose(layer.backward(dout), kept / 0.7, rtol=1e-15)
    assert np.all(dout == 1)


def test_dropout_is_the_books_by_default_masks_and_outputs(backend):
    x = np.random.default_rng(0).standard_normal((20, 30))
    np.random.seed(5)
    layer = Dropout(0.4)
    out = layer.forward(x)
    np.random.seed(5)
    mask = np.random.rand(*x.shape) > 0.4  # the book's draw
    np.testing.assert_array_equal(out, x * mask)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), mask.astype(float))
    np.testing.assert_array_equal(layer.forward(x, False), x * (1.0 - 0.4))
    assert Dropout(0.4).inverted is False and Dropout(0.4, inverted=False).inverted is False


@pytest.mark.parametrize("inverted", [True, False])
def test_dropout_gradient_check_with_a_fixed_mask(backend, inverted):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 7))
    w = rng.standard_normal((6, 7))
    layer = Dropout(0.5, inverted=inverted)

    def f(_):
        np.random.seed(11)  # the same mask at every call
        return np.sum(layer.forward(x) * w)

    num = numerical_gradient(f, x)
    f(x)
    grad = layer.backward(w)
    assert layer.mask.any() and not layer.mask.all()
    assert _rel_err(grad, num) < 1e-8


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_keeps_float32(backend, dtype):
    layer = Dropout(0.5, rng=0)
    x = np.ones((4, 5), dtype=dtype)
    assert layer.forward(x).dtype == dtype
    assert layer.backward(x).dtype == dtype


@pytest.mark.parametrize("ratio", [-0.1, 2, "0.5", None])
def test_dropout_ratio_is_checked(ratio):
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(ratio)


def test_dropout_ratio_one_drops_everything_but_cannot_be_inverted():
    x = np.ones((3, 4))
    assert np.all(Dropout(1.0).forward(x) == 0)  # the book's layer allows it
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(1.0, inverted=True)  # would divide by 1 - 1


def test_dropout_backward_before_forward():
    with pytest.raises(RuntimeError, match="before forward"):
        Dropout().backward(np.ones(3))


@pytest.mark.parametrize("make, x", [
    (lambda: Dropout(0.3), np.ones((3, 6))),
    (lambda: Dropout(0.3, inverted=True), np.ones((2, 3, 4))),
    (lambda: BatchNormalization(np.ones(6), np.zeros(6)), np.arange(18.0).reshape(3, 6)),
    (lambda: BatchNormalization(np.ones(8), np.zeros(8)), np.arange(24.0).reshape(3, 2, 4)),
])
@pytest.mark.parametrize("wrong", ["transposed", "fewer rows", "flat", "same size"])
def test_backward_names_dout_and_the_last_forwards_output(backend, make, x, wrong):
    """As Relu and Sigmoid say it (Dropout said "mask: expected shape (6, 3) (the shape
    of dout)", blaming the layer's own state)."""
    layer = make()
    out = layer.forward(x)
    dout = {"transposed": np.ones(out.shape[::-1]), "fewer rows": np.ones((1,) + out.shape[1:]),
            "flat": np.ones(out.size), "same size": np.ones((out.size // 2, 2))}[wrong]
    expected = rf"dout: expected shape {re.escape(str(out.shape))} \(the output of the last forward\), got {re.escape(str(dout.shape))}"
    with pytest.raises(ValueError, match=expected):
        layer.backward(dout)
    assert layer.backward(np.ones(out.shape)).shape == x.shape  # and the state is intact


# --------------------------------------------------------------------------- BatchNorm

def _book_bn_forward(x, gamma, beta, eps=1e-6):
    """The book's training-mode forward, written out plainly."""
    mu = x.mean(axis=0)
    xc = x - mu
    var = np.mean(xc ** 2, axis=0)
    std = np.sqrt(var + eps)
    xn = xc / std
    return gamma * xn + beta, xc, xn, std, mu, var


def _book_bn_backward(dout, gamma, xc, xn, std):
    """The book's step-by-step backward pass."""
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(xn * dout, axis=0)
    dxn = gamma * dout
    dxc = dxn / std
    dstd = -np.sum((dxn * xc) / (std * std), axis=0)
    dvar = 0.5 * dstd / std
    dxc += (2.0 / n) * xc * dvar
    dmu = np.sum(dxc, axis=0)
    return dxc - dmu / n, dgamma, dbeta


def _bn_problem(n=8, d=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) * 3 + 2).astype(dtype)
    gamma = (rng.random(d) + 0.5).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    dout = rng.standard_normal((n, d)).astype(dtype)
    return x, gamma, beta, dout


def test_batchnorm_matches_the_books_formulas(backend):
    x, gamma, beta, dout = _bn_problem()
    layer = BatchNormalization(gamma, beta)
    out = layer.forward(x)
    ref, xc, xn, std, mu, var = _book_bn_forward(x, gamma, beta)
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)
    dx = layer.backward(dout)
    rdx, rdgamma, rdbeta = _book_bn_backward(dout, gamma, xc, xn, std)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.dgamma, rdgamma, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.dbeta, rdbeta, rtol=1e-13, atol=1e-13)
    # running statistics: the book's update from zeros
    np.testing.assert_allclose(layer.running_mean, 0.1 * mu, rtol=1e-14)
    np.testing.assert_allclose(layer.running_var, 0.1 * var, rtol=1e-14)
    layer.forward(x)
    np.testing.assert_allclose(layer.running_mean, 0.9 * 0.1 * mu + 0.1 * mu, rtol=1e-14)
    # test mode: the running statistics
    y = layer.forward(x, train_flg=False)
    rm, rv = layer.running_mean, layer.running_var
    np.testing.assert_allclose(y, gamma * (x - rm) / np.sqrt(rv + 1e-6) + beta, rtol=1e-13)


def test_batchnorm_gradient_check(backend):
    x, gamma, beta, dout = _bn_problem(n=6, d=4, seed=1)
    layer = BatchNormalization(gamma, beta)

    def f(_):
        return np.sum(layer.forward(x) * dout)

    num = {"x": numerical_gradient(f, x), "gamma": numerical_gradient(f, gamma),
           "beta": numerical_gradient(f, beta)}
    layer.forward(x)
    dx = layer.backward(dout)
    assert _rel_err(dx, num["x"]) < 1e-7
    assert _rel_err(layer.dgamma, num["gamma"]) < 1e-8
    assert _rel_err(layer.dbeta, num["beta"]) < 1e-8


def test_batchnorm_holds_gamma_and_beta_by_reference(backend):
    x, gamma, beta, _ = _bn_problem()
    layer = BatchNormalization(gamma, beta)
    assert layer.gamma is gamma and layer.beta is beta
    gamma *= 2
    beta += 1
    ref = _book_bn_forward(x, gamma, beta)[0]
    np.testing.assert_allclose(layer.forward(x), ref, rtol=1e-13, atol=1e-13)


def test_batchnorm_does_not_write_to_the_callers_running_statistics(backend):
    x, gamma, beta, _ = _bn_problem()
    rm, rv = np.ones(5), np.ones(5)
    layer = BatchNormalization(gamma, beta, running_mean=rm, running_var=rv)
    layer.forward(x)
    assert np.all(rm == 1) and np.all(rv == 1)
    assert not np.allclose(layer.running_mean, 1)


def test_batchnorm_4d_input_is_flattened_per_sample(backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 2, 3, 2))
    gamma, beta = np.ones(12), np.zeros(12)
    layer = BatchNormalization(gamma, beta)
    out = layer.forward(x)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.reshape(5, -1), _book_bn_forward(x.reshape(5, -1), gamma, beta)[0],
                               rtol=1e-12, atol=1e-12)
    assert layer.backward(np.ones_like(x)).shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_keeps_the_dtype(backend, dtype):
    x, gamma, beta, dout = _bn_problem(dtype=dtype)
    layer = BatchNormalization(gamma, beta)
    assert layer.forward(x).dtype == dtype
    assert layer.running_mean.dtype == dtype
    assert layer.backward(dout).dtype == dtype
    assert layer.dgamma.dtype == dtype and layer.dbeta.dtype == dtype
    assert layer.forward(x, train_flg=False).dtype == dtype
    ref = _book_bn_forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64))[0]
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(layer.forward(x), ref, rtol=tol, atol=tol)


def test_batchnorm_bad_arguments(backend):
    x, gamma, beta, _ = _bn_problem()
    with pytest.raises(ValueError, match="gamma"):
        BatchNormalization(np.ones(4), beta).forward(x)
    with pytest.raises(ValueError, match="x: expected a batch"):
        BatchNormalization(gamma, beta).forward(np.ones(5))
    with pytest.raises(ValueError, match="empty batch"):
        BatchNormalization(gamma, beta).forward(np.ones((0, 5)))
    with pytest.raises(TypeError, match="x"):
        BatchNormalization(gamma, beta).forward(np.ones((3, 5), dtype=np.complex128))
    with pytest.raises(RuntimeError, match="before forward"):
        BatchNormalization(gamma, beta).backward(np.ones((3, 5)))


# --------------------------------------------------------------------------- kernels

needs_cython = pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")


def _both(fn):
    out = []
    for be in ("numpy", "cython"):
        with fastbp.use_backend(be):
            out.append(fn(kernels.active()))
    return out


@needs_cython
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_kernels_are_twins(dtype, layout):
    x, gamma, beta, dout = _bn_problem(n=13, d=7, seed=5, dtype=dtype)
    u = np.random.default_rng(6).random(x.shape).astype(dtype)
    if layout == "F":
        x, dout, u = np.asfortranarray(x), np.asfortranarray(dout), np.asfortranarray(u)
    elif layout == "strided":
        x, dout, u = (np.repeat(a, 2, axis=1)[:, ::2] for a in (x, dout, u))
    ratio, scale = 0.3, 1 / 0.7
    a, b = _both(lambda k: k.dropout_forward(x, u, ratio, scale))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    a, b = _both(lambda k: k.dropout_backward(dout, a[1], scale))
    np.testing.assert_array_equal(a, b)

    stats = {be: [np.full(7, 0.5, dtype), np.full(7, 2.0, dtype)] for be in ("numpy", "cython")}
    fa, fb = _both(lambda k: k.batchnorm_forward(
        x, gamma, beta, *stats["numpy" if k is knp else "cython"], 0.9, 1e-6))
    # the column sums run in one order on both backends: equal to the last bit
    for p, q in zip(fa, fb):
        np.testing.assert_array_equal(p, q)
    for p, q in zip(stats["numpy"], stats["cython"]):
        np.testing.assert_array_equal(p, q)
    ia, ib = _both(lambda k: k.batchnorm_inference(x, gamma, beta, *stats["numpy"], 1e-6))
    np.testing.assert_array_equal(ia, ib)
    ba, bb = _both(lambda k: k.batchnorm_backward(dout, fa[1], fa[2], gamma))
    for p, q in zip(ba, bb):
        assert p.dtype == dtype
        np.testing.assert_array_equal(p, q)


@needs_cython
def test_kernels_refuse_alike():
    x = np.ones((4, 3))
    cases = [
        lambda k: k.dropout_forward(x, np.ones((3, 4)), 0.5, 2.0),
        lambda k: k.dropout_backward(x, np.ones((4, 3)), 2.0),
        lambda k: k.dropout_forward(x, np.ones((4, 3)), 0.5, 2.0, out=np.ones((4, 3), np.float32)),
        lambda k: k.batchnorm_forward(x, np.ones(3), np.ones(3), np.ones(3, np.float32), np.ones(3), 0.9, 1e-6),
        lambda k: k.batchnorm_forward(x, np.ones(2), np.ones(3), np.ones(3), np.ones(3), 0.9, 1e-6),
        lambda k: k.batchnorm_forward(np.ones(3), np.ones(3), np.ones(3), np.ones(3), np.ones(3), 0.9, 1e-6),
        lambda k: k.batchnorm_inference(x, np.ones(3), np.ones(3), np.ones(2), np.ones(3), 1e-6),
        lambda k: k.batchnorm_backward(x, np.ones((4, 2)), np.ones(3), np.ones(3)),
        lambda k: k.batchnorm_backward(x, x, np.ones(3), np.ones(4)),
    ]
    for i, case in enumerate(cases):
        errors = []
        for be in ("numpy", "cython"):
            with fastbp.use_backend(be):
                with pytest.raises((TypeError, ValueError)) as info:
                    case(kernels.active())
                errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1], (i, errors)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_kernels_special_values(backend, dtype):
    """A dropped unit is x * 0, as the book's x * mask: NaN and inf give NaN, -1 gives -0."""
    x = np.array([np.nan, -1.0, 2.0, np.inf, -np.inf, np.nan], dtype=dtype)
    u = np.array([0.1, 0.1, 0.9, 0.1, 0.9, 0.9], dtype=dtype)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, mask = kernels.active().dropout_forward(x, u, 0.5, 2.0)
        dx = kernels.active().dropout_backward(x, mask, 2.0)
    np.testing.assert_array_equal(mask, [False, False, True, False, True, True])
    for got in (out, dx):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np.array([np.nan, -0.0, 4.0, np.nan, -np.inf, np.nan], dtype))
        assert np.signbit(got[1])
