"""The compiled backend's matrix products (kernels/_blas.py, _gemm.pyx) and the SGD step
folded into them (affine_backward_sgd, train_step)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import MultiLayerNetExtend, TwoLayerNet
from fastbp.kernels import HAVE_CYTHON, _numpy
from fastbp.optimizers import SGD

needs_cython = pytest.mark.skipif(not HAVE_CYTHON, reason="the compiled kernels are not built")

SHAPES = [(1, 1, 1), (7, 5, 3), (100, 784, 50), (784, 100, 50), (100, 50, 10),
          (256, 784, 130), (33, 300, 65)]


def _operands(rng, m, k, n, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, (a.T if trans_a else a), (b.T if trans_b else b)


def _bound(m, k, dtype):
    """How far a product may be from NumPy's: a different blocking of the same sums."""
    return 4 * k * np.finfo(dtype).eps


@needs_cython
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_gemm_does_not_depend_on_the_thread_count(m, k, n, trans_a, trans_b, dtype):
    from fastbp.kernels import _blas, _gemm
    rng = np.random.default_rng(m * k + n)
    a, b, opa, opb = _operands(rng, m, k, n, trans_a, trans_b, dtype)
    blocks, by_columns = _blas.split(m, k, n, trans_a)
    results = []
    for threads in (1, 2, 3):
        c = np.full((m, n), np.nan, dtype)
        _gemm.gemm(a, trans_a, b, trans_b, c, 1.0, 0.0, None, blocks, threads, by_columns)
        results.append(c)
    for cut in (2, 3):  # either direction, any count: every element is in one block
        for columns in (False, True):
            c = np.full((m, n), np.nan, dtype)
            _gemm.gemm(a, trans_a, b, trans_b, c, 1.0, 0.0, None, cut, 2, columns)
            assert not np.isnan(c).any()
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])
    ref = np.matmul(opa.astype(np.float64), opb.astype(np.float64))
    scale = np.abs(opa).astype(np.float64) @ np.abs(opb).astype(np.float64)
    assert np.all(np.abs(results[0] - ref) <= _bound(m, k, dtype) * scale)


def test_blocks_depend_on_the_shape_alone():
    from fastbp.kernels import _blas
    for m, k, n in SHAPES + [(256, 784, 1000), (4096, 1000, 1000)]:
        count, by_columns = _blas.split(m, k, n)
        assert count == _blas.blocks(m, k, n) and by_columns == (n > m)
        assert not _blas.split(m, k, n, trans_a=True)[1]
        assert 1 <= count <= _blas.MAX_BLOCKS and count & (count - 1) == 0
        if count > 1:
            assert (n if by_columns else m) // count >= _blas.MIN_ROWS
    assert _blas.blocks(100, 50, 10) == 1  # the book's second layer: one BLAS call


@needs_cython
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_alpha_beta_and_bias(dtype):
    from fastbp.kernels import _blas
    rng = np.random.default_rng(1)
    a, b, _, _ = _operands(rng, 64, 40, 30, False, False, dtype)
    c0 = rng.standard_normal((64, 30)).astype(dtype)
    bias = rng.standard_normal(30).astype(dtype)
    tol = dict(rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-12)
    c = c0.copy()
    _blas.gemm(a, b, c, alpha=-0.5, beta=0.75)
    np.testing.assert_allclose(c, 0.75 * c0 - 0.5 * (a @ b), **tol)
    c = c0.copy()
    _blas.gemm(a, b, c, bias=bias)  # beta ignored: C starts as the bias
    np.testing.assert_allclose(c, a @ b + bias, **tol)
    from fastbp.kernels import _gemm
    for columns in (False, True):  # the bias and beta of a block of rows or of columns
        for kw in (dict(alpha=-0.5, beta=0.75, bias=None), dict(alpha=1.0, beta=0.0, bias=bias)):
            c = c0.copy()
            _gemm.gemm(a, False, b, False, c, kw["alpha"], kw["beta"], kw["bias"], 3, 2, columns)
            want = (a @ b + bias) if kw["bias"] is not None else 0.75 * c0 - 0.5 * (a @ b)
            np.testing.assert_allclose(c, want, **tol)


@needs_cython
def test_products_keep_numpys_blas_thread_count():
    from fastbp.kernels import _blas
    if not _blas.BOUND:
        pytest.skip("no BLAS bound")
    import ctypes
    lib = ctypes.CDLL(_blas.blas_info()["library"])  # NumPy's own, already loaded
    before = lib.scipy_openblas_get_num_threads64_()
    rng = np.random.default_rng(2)
    a, b, _, _ = _operands(rng, 256, 784, 130, False, False, np.float64)
    _blas.gemm(a, b, np.empty((256, 130)))
    assert lib.scipy_openblas_get_num_threads64_() == before
    # fastbp calls a private copy of that library, on one thread of its own
    assert _blas._private[0]._handle != lib._handle
    assert _blas._private[0].scipy_openblas_get_num_threads64_() == 1


def test_thread_choice_follows_the_timings():
    from fastbp.kernels._blas import EXPLORE_EVERY, WINDOW, _Choice
    choice = _Choice()
    picks = []
    for _ in range(2 * WINDOW):  # warm-up: both counts timed
        n = choice.pick(2)
        picks.append(n)
        choice.record(n, 1.0 if n == 1 else 2.0, 2)
    assert picks.count(1) == WINDOW and picks.count(2) == WINDOW
    later = [choice.pick(2) for _ in range(EXPLORE_EVERY * 2)]
    assert later.count(1) >= len(later) - 2 and 2 in later  # mostly the faster, re-timing the other
    for _ in range(WINDOW):  # one thread becomes slow (another process took its core)
        choice.record(1, 5.0, 2)
    assert choice.best == 2
    # the mean decides: one stall behind a descheduled helper counts in full
    for n, t in [(1, 1.0)] * WINDOW + [(2, 0.8)] * (WINDOW - 1) + [(2, 9.0)]:
        choice.record(n, t, 2)
    assert choice.best == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_forward(backend, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 20)).astype(dtype)
    W = rng.standard_normal((20, 11)).astype(dtype)
    b = rng.standard_normal(11).astype(dtype)
    k = backend
    out = k.affine_forward(x, W, b)
    strided = k.affine_forward(np.asfortranarray(x), W[:, :], b)
    # the overlap rule: out may be exactly an input (read whole first), nothing else
    square = np.ascontiguousarray(x[:, :11])
    expected = square @ W[:11] + b
    got = k.affine_forward(square, W[:11], b, out=square)
    assert got is square
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    buf = np.zeros(38 * 11, dtype)
    with pytest.raises(ValueError, match="out: overlaps x without being it"):
        k.affine_forward(buf[11:].reshape(37, 11), W[:11], b, out=buf[:-11].reshape(37, 11))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, x @ W + b, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(strided, out)


@pytest.mark.parametrize("decay", [0.0, 0.1])
@pytest.mark.parametrize("need_dx", [True, False])
def test_affine_backward_sgd_is_backward_then_sgd(backend, decay, need_dx):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 30))
    dout = rng.standard_normal((50, 20))
    W0 = rng.standard_normal((30, 20))
    b0 = rng.standard_normal(20)
    W, b = W0.copy(), b0.copy()
    k = backend
    dx = k.affine_backward_sgd(dout, x, W, b, 0.05, decay, need_dx)
    # the book's step written out: gradient (with the decay term), then W -= lr * grad
    np.testing.assert_allclose(W, W0 - 0.05 * (x.T @ dout + decay * W0), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(b, b0 - 0.05 * dout.sum(axis=0), rtol=1e-12, atol=1e-13)
    if need_dx:
        np.testing.assert_allclose(dx, dout @ W0.T, rtol=1e-12, atol=1e-13)  # the old W
    else:
        assert dx is None


def test_affine_backward_sgd_refuses_what_it_cannot_update(backend):
    x = np.ones((4, 3))
    dout = np.ones((4, 2))
    k = backend
    W = np.ones((3, 2))
    W.flags.writeable = False
    with pytest.raises(ValueError, match="W: is read-only"):
        k.affine_backward_sgd(dout, x, W, np.zeros(2), 0.1)
    with pytest.raises(ValueError, match="W: must be C-contiguous"):
        k.affine_backward_sgd(dout, x, np.ones((2, 3)).T, np.zeros(2), 0.1)
    buf = np.ones(12)
    with pytest.raises(ValueError, match="W: overlaps x without being it"):
        k.affine_backward_sgd(dout, buf.reshape(4, 3), buf[:6].reshape(3, 2), np.zeros(2), 0.1)
    with pytest.raises(TypeError, match="lr"):
        k.affine_backward_sgd(dout, x, np.ones((3, 2)), np.zeros(2), "0.1")
    with pytest.raises(ValueError, match="dout: expected shape"):
        k.affine_backward_sgd(np.ones((4, 5)), x, np.ones((3, 2)), np.zeros(2), 0.1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lr, decay, bad", [
    (0.5, 2.0, "W"),    # 1 - lr * decay == 0: BLAS with beta = 0 does not read W
    (0.25, 4.0, "W"),
    (1e-30, 1e30, "W"),  # 1 - 1e-30 * 1e30 rounds to 0
    (0.0, 0.0, "x"),    # lr == 0: a BLAS may skip the product when alpha is 0
    (0.0, 0.5, "x"),
    (1e-50, 0.0, "x"),  # an lr that is 0 in float32
])
def test_affine_backward_sgd_keeps_nan_and_inf_when_a_factor_is_0(dtype, lr, decay, bad):
    """``W = (1 - lr * decay) * W - lr * x.T @ dout`` as the formula gives it: 0 * inf
    and 0 * NaN are NaN (the compiled backend gave -7.85 for an inf in W, the NumPy one
    NaN), the same on both backends."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4)).astype(dtype)
    dout = rng.standard_normal((6, 3)).astype(dtype)
    W0 = rng.standard_normal((4, 3)).astype(dtype)
    if bad == "W":
        W0[0, 0], W0[1, 2], W0[3, 1] = np.inf, -np.inf, np.nan
    else:
        x[0, 0] = np.inf  # row 0 of x.T @ dout: +-inf
    with np.errstate(invalid="ignore", over="ignore"):
        expected = dtype(1 - lr * decay) * W0 - dtype(lr) * (x.T @ dout)
    assert np.isnan(expected).any() or dtype(lr) != 0  # (1e-50 is not 0 in float64)
    results = []
    for k in [_numpy] + ([fastbp.kernels._cython] if HAVE_CYTHON else []):
        W, b = W0.copy(), np.zeros(3, dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            k.affine_backward_sgd(dout, x, W, b, lr, decay)
        np.testing.assert_array_equal(np.isnan(W), np.isnan(expected), err_msg=k.__name__)
        np.testing.assert_allclose(W, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-12, err_msg=k.__name__)
        results.append(W)
    np.testing.assert_array_equal(np.isnan(results[0]), np.isnan(results[-1]))


def _nets():
    yield "two-layer", lambda: TwoLayerNet(20, 15, 4, rng=0)
    yield "extend", lambda: MultiLayerNetExtend(20, [16, 12], 4, weight_decay_lambda=0.05,
                                                use_batchnorm=True, use_dropout=True,
                                                dropout_ration=0.3, rng=0)


@pytest.mark.parametrize("name, make", list(_nets()))
def test_fused_sgd_step_is_the_books_step(backend, name, make):
    """train_step with plain SGD (fused) follows gradient + ``params[k] -= lr * g``."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 20))
    t = rng.integers(0, 4, 32)
    fused, book = make(), make()
    for _ in range(5):
        loss = fused.train_step(x, t, SGD(0.1))
        grads = book.gradient(x, t)
        for key in book.params:
            book.params[key] -= 0.1 * grads[key]
        assert np.isfinite(loss)
    for key in book.params:
        np.testing.assert_allclose(fused.params[key], book.params[key], rtol=1e-10, atol=1e-12,
                                   err_msg=key)
    assert fused.layers["Affine1"].W is fused.params["W1"]  # the aliasing contract


def test_without_a_bound_blas_products_are_numpys():
    """FASTBP_BLAS=numpy (or a NumPy without its bundled OpenBLAS): same expressions
    through np.matmul."""
    code = (
        "import numpy as np\n"
        "from fastbp.kernels import _blas\n"
        "assert not _blas.BOUND\n"
        "r = np.random.default_rng(0)\n"
        "a, b = r.standard_normal((40, 30)), r.standard_normal((30, 20))\n"
        "c0 = r.standard_normal((40, 20)); bias = r.standard_normal(20)\n"
        "c = c0.copy(); _blas.gemm(a, b, c, alpha=-0.5, beta=0.75)\n"
        "assert np.allclose(c, 0.75 * c0 - 0.5 * a @ b)\n"
        "c = c0.copy(); _blas.gemm(a.T.copy(), b, c, trans_a=True, bias=bias)\n"
        "assert np.allclose(c, a @ b + bias)\n"
        "c = c0.copy(); _blas.gemm(a, b, c, alpha=2.0)\n"
        "assert np.allclose(c, 2 * a @ b)\n"
        "print('ok')\n"
    )
    if not HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    env = dict(os.environ, FASTBP_BLAS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("value, bound, warns", [
    ("numpy", False, False), (" NumPy ", False, False), ("openblas", True, False),
    ("", True, False), ("mkl", True, True), ("numpy,openblas", True, True), ("0", True, True),
])
def test_fastbp_blas_is_checked(value, bound, warns):
    """An unknown FASTBP_BLAS warns, naming the variable, its value and the accepted
    ones, as FASTBP_NUM_THREADS does (any value used to be taken silently as the
    default)."""
    if not HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    code = "from fastbp.kernels import _blas; print(_blas.BOUND)"
    env = dict(os.environ, FASTBP_BLAS=value)
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(bound and fastbp.kernels._blas.BOUND)
    if warns:
        assert f"FASTBP_BLAS: expected one of openblas, numpy, got {value!r}; using openblas" \
            in r.stderr, r.stderr
    else:
        assert "FASTBP_BLAS" not in r.stderr


def test_numpy_twin_keeps_numpys_matmul():
    rng = np.random.default_rng(6)
    x, W, b = rng.standard_normal((10, 8)), rng.standard_normal((8, 3)), rng.standard_normal(3)
    np.testing.assert_array_equal(_numpy.affine_forward(x, W, b), np.matmul(x, W) + b)


@needs_cython
def test_numpys_products_in_another_thread_are_bit_identical_beside_fastbp():
    """fastbp's products never change NumPy's BLAS (its thread count is one global of
    the library): NumPy's products in another thread give the same bits whether fastbp
    multiplies beside them or not."""
    import ctypes
    import threading
    from fastbp.kernels import _blas, _cython
    if not _blas.BOUND:
        pytest.skip("no BLAS bound")
    numpys = ctypes.CDLL(_blas.blas_info()["library"])  # NumPy's own, already loaded
    if numpys.scipy_openblas_get_num_threads64_() < 2:
        pytest.skip("NumPy's OpenBLAS runs one thread here: its rounding cannot change")
    rng = np.random.default_rng(8)
    a = [rng.standard_normal((100, 784)) for _ in range(4)]
    b = rng.standard_normal((784, 50))
    alone = [(x @ b).tobytes() for x in a]
    x, W, bias = rng.standard_normal((256, 784)), rng.standard_normal((784, 300)), np.zeros(300)
    stop = threading.Event()

    def fastbp_products():
        while not stop.is_set():
            _cython.affine_forward(x, W, bias)
            _cython.affine_backward(x @ W, x, W)

    th = threading.Thread(target=fastbp_products)
    th.start()
    try:
        differing = sum((a[i % 4] @ b).tobytes() != alone[i % 4] for i in range(600))
    finally:
        stop.set()
        th.join()
    assert differing == 0, f"{differing} of 600 NumPy products changed beside fastbp's"


@needs_cython
def test_import_and_products_leave_the_environment_as_it_was():
    """Nothing fastbp sets for its own libraries stays in the environment (Python's
    view and the C library's)."""
    code = (
        "import ctypes, os, numpy as np\n"
        "before = dict(os.environ)\n"
        "import fastbp\n"
        "from fastbp.kernels import _cython\n"
        "x = np.ones((256, 784)); _cython.affine_forward(x, np.ones((784, 300)), np.zeros(300))\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
        "getenv = ctypes.CDLL(None).getenv\n"
        "getenv.restype = ctypes.c_char_p\n"
        "print([getenv(n.encode()) for n in ('OPENBLAS_NUM_THREADS', 'GOMP_SPINCOUNT', "
        "'OMP_WAIT_POLICY')])\n"
    )
    base = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    r = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[None, None, None]"
    r = subprocess.run([sys.executable, "-c", code], env=dict(base, OPENBLAS_NUM_THREADS="3"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[b'3', None, None]"
