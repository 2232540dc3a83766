"""Chapter 7's kernels and layers: im2col, col2im, max pooling, the convolution bias
gradient, ``Convolution`` and ``Pooling``, on both backends.

References: loops written here from the book's definitions (im2col, col2im), the
adjoint identity ``<im2col(x), c> == <x, col2im(c)>``, and PyTorch (``F.conv2d``,
``F.max_pool2d`` with autograd) for the layers' outputs and every gradient.
Tolerances: float64 rtol 1e-10; float32 rtol 1e-4 against the float64 oracle. The two
backends agree bit for bit on im2col, col2im and pooling (same order of additions).
"""
import itertools

import numpy as np
import pytest

from fastbp import kernels, util
from fastbp.kernels import _numpy
from fastbp.layers import Convolution, Pooling

from _gil import releases_gil

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # PyTorch is a test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
needs_cython = pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def backends():
    return [kernels._numpy] + ([kernels._cython] if kernels.HAVE_CYTHON else [])


def non_c(a, kind):
    """The same values in another layout: Fortran order, or a strided view."""
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    view = big[..., ::2]
    view[...] = a
    return view


# --------------------------------------------------------------------------- references

def ref_im2col(x, fh, fw, s, p):
    """The book's definition, element by element."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - fh) // s + 1, (w + 2 * p - fw) // s + 1
    col = np.zeros((n * oh * ow, c * fh * fw), x.dtype)
    for b, i, j, ch, ky, kx in itertools.product(range(n), range(oh), range(ow), range(c),
                                                 range(fh), range(fw)):
        y, xx = i * s + ky - p, j * s + kx - p
        if 0 <= y < h and 0 <= xx < w:
            col[(b * oh + i) * ow + j, (ch * fh + ky) * fw + kx] = x[b, ch, y, xx]
    return col


def ref_col2im(col, shape, fh, fw, s, p):
    n, c, h, w = shape
    oh, ow = (h + 2 * p - fh) // s + 1, (w + 2 * p - fw) // s + 1
    x = np.zeros(shape, np.float64)
    for b, i, j, ch, ky, kx in itertools.product(range(n), range(oh), range(ow), range(c),
                                                 range(fh), range(fw)):
        y, xx = i * s + ky - p, j * s + kx - p
        if 0 <= y < h and 0 <= xx < w:
            x[b, ch, y, xx] += col[(b * oh + i) * ow + j, (ch * fh + ky) * fw + kx]
    return x


GEOMETRIES = [  # (N, C, H, W, fh, fw, stride, pad)
    (2, 1, 5, 5, 3, 3, 1, 0),
    (2, 3, 7, 6, 3, 2, 1, 1),
    (1, 2, 9, 8, 3, 3, 2, 1),
    (3, 2, 7, 9, 2, 3, 3, 2),
    (1, 1, 4, 4, 5, 5, 1, 2),
    (2, 4, 6, 5, 1, 1, 2, 0),
]


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_col2im_against_the_definitions(geom, dtype, rng):
    n, c, h, w, fh, fw, s, p = geom
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    expected = ref_im2col(x, fh, fw, s, p)
    c_in = rng.standard_normal(expected.shape).astype(dtype)
    expected_dx = ref_col2im(c_in.astype(np.float64), x.shape, fh, fw, s, p)
    results = []
    for k in backends():
        col = k.im2col(x, fh, fw, s, p)
        assert col.dtype == dtype and col.flags.c_contiguous
        np.testing.assert_array_equal(col, expected)
        dx = k.col2im(c_in, x.shape, fh, fw, s, p)
        assert dx.dtype == dtype and dx.shape == x.shape
        np.testing.assert_allclose(dx, expected_dx, **TOL[dtype])
        results.append(dx)
    for dx in results[1:]:
        np.testing.assert_array_equal(dx, results[0])


@pytest.mark.parametrize("seed", range(20))
def test_col2im_is_the_adjoint_of_im2col(seed):
    """<im2col(x), c> == <x, col2im(c)> on random shapes and windows."""
    r = np.random.default_rng(seed)
    fh, fw, s = r.integers(1, 5), r.integers(1, 5), r.integers(1, 4)
    p = r.integers(0, 3)
    shape = (r.integers(1, 4), r.integers(1, 4), r.integers(max(fh - 2 * p, 1), 10),
             r.integers(max(fw - 2 * p, 1), 10))
    x = r.standard_normal(shape)
    for k in backends():
        col = k.im2col(x, fh, fw, s, p)
        c = r.standard_normal(col.shape)
        lhs = np.sum(col * c)
        rhs = np.sum(x * k.col2im(c, shape, fh, fw, s, p))
        assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("kind", ["F", "strided", "readonly"])
def test_layouts(kind, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    xs = x.copy() if kind == "readonly" else non_c(x, kind)
    if kind == "readonly":
        xs.flags.writeable = False
    for k in backends():
        np.testing.assert_array_equal(k.im2col(xs, 3, 3, 2, 1), _numpy.im2col(x, 3, 3, 2, 1))
        col = _numpy.im2col(x, 3, 2, 1, 1)
        cs = non_c(col, "F" if kind == "readonly" else kind)
        np.testing.assert_array_equal(k.col2im(cs, x.shape, 3, 2, 1, 1),
                                      _numpy.col2im(col, x.shape, 3, 2, 1, 1))
        out, arg = k.maxpool_forward(xs, 2, 2, 2)
        out0, arg0 = _numpy.maxpool_forward(x, 2, 2, 2)
        np.testing.assert_array_equal(out, out0)
        np.testing.assert_array_equal(arg, arg0)
        d = non_c(rng.standard_normal(out.shape), "F" if kind == "readonly" else kind)
        np.testing.assert_array_equal(k.maxpool_backward(d, arg, x.shape, 2, 2, 2),
                                      _numpy.maxpool_backward(np.ascontiguousarray(d), arg0,
                                                              x.shape, 2, 2, 2))
        np.testing.assert_allclose(k.conv_bias_grad(xs), x.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_integer_input_becomes_float64():
    x = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    for k in backends():
        col = k.im2col(x, 2, 2)
        assert col.dtype == np.float64
        np.testing.assert_array_equal(col, ref_im2col(x.astype(float), 2, 2, 1, 0))


def test_util_mirrors_the_book(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    np.testing.assert_array_equal(util.im2col(x, 3, 3, 1, 1), ref_im2col(x, 3, 3, 1, 1))
    col = rng.standard_normal((2 * 36, 27))
    np.testing.assert_allclose(util.col2im(col, x.shape, 3, 3, 1, 1),
                               ref_col2im(col, x.shape, 3, 3, 1, 1), rtol=1e-12)
    assert util.conv_output_size(28, 5) == 24.0 and util.conv_output_size(7, 2, 2, 0) == 3.5
    t = np.arange(10)
    np.random.seed(3)
    xs, ts = util.shuffle_dataset(x.repeat(5, axis=0), t)
    np.random.seed(3)
    order = np.random.permutation(10)
    np.testing.assert_array_equal(ts, order)
    np.testing.assert_array_equal(xs, x.repeat(5, axis=0)[order])
    # an 11-point Kaiser (beta 2) moving average with mirrored ends, as the book's
    curve = rng.standard_normal(40)
    w = np.kaiser(11, 2)
    w /= w.sum()
    padded = np.concatenate([curve[10:0:-1], curve, curve[-1:-11:-1]])
    expected = [np.dot(w[::-1], padded[i:i + 11]) for i in range(5, 5 + 40)]
    smoothed = util.smooth_curve(curve)
    assert smoothed.shape == curve.shape
    np.testing.assert_allclose(smoothed, expected, rtol=1e-12)


# --------------------------------------------------------------------------- pooling

def ref_maxpool(x, ph, pw, s, p):
    """Window max and first-max index (NaN wins, padding is -inf), element by element."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - ph) // s + 1, (w + 2 * p - pw) // s + 1
    out = np.empty((n, c, oh, ow), x.dtype)
    arg = np.empty((n, oh, ow, c), np.intp)
    for b, ch, i, j in itertools.product(range(n), range(c), range(oh), range(ow)):
        vals = []
        for ky, kx in itertools.product(range(ph), range(pw)):
            y, xx = i * s + ky - p, j * s + kx - p
            vals.append(x[b, ch, y, xx] if 0 <= y < h and 0 <= xx < w else -np.inf)
        nan = [k for k, v in enumerate(vals) if np.isnan(v)]
        k = nan[0] if nan else int(np.argmax(vals))
        out[b, ch, i, j], arg[b, i, j, ch] = vals[k], k
    return out, arg.reshape(-1)


@pytest.mark.parametrize("geom", [(2, 3, 6, 6, 2, 2, 2, 0), (1, 2, 7, 5, 3, 3, 2, 1),
                                  (2, 1, 5, 6, 2, 3, 1, 1), (1, 2, 9, 9, 3, 2, 3, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_special_values(geom, dtype, rng):
    n, c, h, w, ph, pw, s, p = geom
    x = rng.standard_normal((n, c, h, w))
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 8, replace=False)] = [np.nan, np.inf, -np.inf, -np.inf, 0.0,
                                                     -0.0, np.nan, 3.0]
    x[0, 0] = -np.inf  # a plane where the padding ties with the image
    x = x.astype(dtype)
    out_ref, arg_ref = ref_maxpool(x, ph, pw, s, p)
    dout = rng.standard_normal(out_ref.shape).astype(dtype)
    results = []
    for k in backends():
        out, arg = k.maxpool_forward(x, ph, pw, s, p)
        assert out.dtype == dtype and arg.dtype == np.intp
        np.testing.assert_array_equal(out, out_ref)
        np.testing.assert_array_equal(arg, arg_ref)
        results.append(k.maxpool_backward(dout, arg, x.shape, ph, pw, s, p))
    np.testing.assert_array_equal(results[0], results[-1])
    # each dout element lands where its window's argmax points (not in the padding)
    expected = np.zeros((n, c, h + 2 * p, w + 2 * p))
    arg = arg_ref.reshape(n, out_ref.shape[2], out_ref.shape[3], c)
    for b, ch, i, j in np.ndindex(*out_ref.shape):
        ky, kx = divmod(arg[b, i, j, ch], pw)
        expected[b, ch, i * s + ky, j * s + kx] += dout[b, ch, i, j]
    np.testing.assert_allclose(results[0], expected[:, :, p:p + h, p:p + w], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype):
    x = np.zeros((0, 3, 6, 6), dtype)
    for k in backends():
        assert k.im2col(x, 3, 3).shape == (0, 27)
        assert k.col2im(np.zeros((0, 27), dtype), x.shape, 3, 3).shape == x.shape
        out, arg = k.maxpool_forward(x, 2, 2)
        assert out.shape == (0, 3, 3, 3) and arg.shape == (0,)
        assert k.maxpool_backward(out, arg, x.shape, 2, 2).shape == x.shape
        np.testing.assert_array_equal(k.conv_bias_grad(x), np.zeros(3, dtype))


def test_conv_bias_grad(rng):
    d = rng.standard_normal((5, 4, 3, 7))
    d[1, 2, 0, 0] = np.nan
    d[2, 3, 1, 1], d[3, 3, 1, 1] = np.inf, -np.inf
    for dtype in DTYPES:
        for k in backends():
            db = k.conv_bias_grad(d.astype(dtype))
            assert db.dtype == dtype
            with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in the kernels
                expected = d.astype(dtype).sum(axis=(0, 2, 3), dtype=np.float64)
            np.testing.assert_allclose(db, expected, **TOL[dtype])


BAD_CALLS = [
    ("im2col", lambda k: k.im2col(np.zeros((2, 3, 4)), 3, 3), ValueError, "x: expected a 4-D array"),
    ("im2col", lambda k: k.im2col(np.zeros((1, 1, 4, 4)), 5, 5), ValueError, "does not fit"),
    ("im2col", lambda k: k.im2col(np.zeros((1, 1, 4, 4)), 3, 3, 0), ValueError, "stride: expected an integer >= 1"),
    ("im2col", lambda k: k.im2col(np.zeros((1, 1, 4, 4)), 3.0, 3), TypeError, "filter_h: expected an integer"),
    ("im2col", lambda k: k.im2col(np.zeros((1, 1, 4, 4)), 3, 3, 1, -1), ValueError, "pad: expected an integer >= 0"),
    ("im2col", lambda k: k.im2col(np.zeros((1, 1, 4, 4), np.float16), 3, 3), TypeError, "float16"),
    ("im2col", lambda k: k.im2col(np.zeros((1, 1, 4, 4), complex), 3, 3), TypeError, "complex"),
    ("im2col", lambda k: k.im2col(np.zeros((1, 1, 4, 4)), 2, 2, out=np.zeros((9, 3))), ValueError, "out: expected shape (9, 4)"),
    ("col2im", lambda k: k.col2im(np.zeros((8, 9)), (1, 1, 4, 4), 3, 3), ValueError, "col: expected shape (4, 9)"),
    ("col2im", lambda k: k.col2im(np.zeros((4, 9)), (1, 1, 4), 3, 3), ValueError, "input_shape: expected 4 sizes"),
    ("maxpool_forward", lambda k: k.maxpool_forward(np.zeros((1, 1, 4, 4)), 2, 2, 2, 2), ValueError, "pad: expected less than the pool window"),
    ("maxpool_backward", lambda k: k.maxpool_backward(np.zeros((1, 1, 2, 2)), np.array([0, 1, 2, 4]), (1, 1, 4, 4), 2, 2), ValueError, "arg_max: window indices must lie in [0, 4)"),
    ("maxpool_backward", lambda k: k.maxpool_backward(np.zeros((1, 1, 2, 2)), np.array([0, 1, -1, 3]), (1, 1, 4, 4), 2, 2), ValueError, "arg_max: window indices"),
    ("maxpool_backward", lambda k: k.maxpool_backward(np.zeros((1, 1, 2, 2)), np.zeros(3, int), (1, 1, 4, 4), 2, 2), ValueError, "arg_max: expected 4 indices"),
    ("maxpool_backward", lambda k: k.maxpool_backward(np.zeros((1, 1, 2, 2)), np.zeros(4), (1, 1, 4, 4), 2, 2), TypeError, "arg_max: expected an integer array"),
    ("maxpool_backward", lambda k: k.maxpool_backward(np.zeros((1, 1, 3, 2)), np.zeros(4, int), (1, 1, 4, 4), 2, 2), ValueError, "dout: expected shape (1, 1, 2, 2)"),
    ("conv_bias_grad", lambda k: k.conv_bias_grad(np.zeros((2, 3))), ValueError, "dout: expected a 4-D array"),
]


@pytest.mark.parametrize("name, call, exc, message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_same_error_on_both_backends(name, call, exc, message):
    messages = []
    for k in backends():
        with pytest.raises(exc) as info:
            call(k)
        assert message in str(info.value)
        messages.append(str(info.value))
    assert len(set(messages)) == 1, messages


def test_inputs_are_not_written(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    keep = x.copy()
    col = _numpy.im2col(x, 3, 3, 1, 1)
    col_keep = col.copy()
    for k in backends():
        k.im2col(x, 3, 3, 1, 1)
        k.col2im(col, x.shape, 3, 3, 1, 1)
        out, arg = k.maxpool_forward(x, 2, 2, 1)
        arg_keep = arg.copy()
        k.maxpool_backward(out, arg, x.shape, 2, 2, 1)
        np.testing.assert_array_equal(arg, arg_keep)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(col, col_keep)


@needs_cython
@pytest.mark.parametrize("name", ["im2col", "col2im", "maxpool_forward", "maxpool_backward"])
def test_compiled_kernels_release_the_gil(name, rng):
    """With a huge switch interval the main thread runs only while the worker is inside
    a kernel that released the GIL (tests/_gil.py)."""
    x = rng.standard_normal((64, 8, 28, 28))
    col = _numpy.im2col(x, 5, 5)
    out, arg = _numpy.maxpool_forward(x, 2, 2)
    k = kernels._cython
    call = {"im2col": lambda: k.im2col(x, 5, 5), "col2im": lambda: k.col2im(col, x.shape, 5, 5),
            "maxpool_forward": lambda: k.maxpool_forward(x, 2, 2),
            "maxpool_backward": lambda: k.maxpool_backward(out, arg, x.shape, 2, 2)}[name]
    assert releases_gil(call)[0], f"{name} held the GIL"


@needs_cython
def test_threads_do_not_change_results(rng):
    x = rng.standard_normal((40, 16, 30, 30))  # large enough to be split over threads
    k = kernels._cython
    before = k.get_num_threads()
    try:
        k.set_num_threads(1)
        one = (k.im2col(x, 3, 3, 1, 1), k.maxpool_forward(x, 2, 2), k.conv_bias_grad(x))
        k.set_num_threads(3)
        many = (k.im2col(x, 3, 3, 1, 1), k.maxpool_forward(x, 2, 2), k.conv_bias_grad(x))
    finally:
        k.set_num_threads(before)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1][0], many[1][0])
    np.testing.assert_array_equal(one[1][1], many[1][1])
    np.testing.assert_array_equal(one[2], many[2])


# --------------------------------------------------------------------------- layers vs PyTorch

def _torch_conv(x, W, b, dout, stride, pad):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    Wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(xt, Wt, bt, stride=stride, padding=pad)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), xt.grad.numpy(), Wt.grad.numpy(), bt.grad.numpy()


@needs_torch
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["C", "F", "strided"])
def test_convolution_against_torch(backend, stride, pad, channels, dtype, kind, rng):
    x = rng.standard_normal((3, channels, 7, 6)).astype(dtype)
    W = (rng.standard_normal((4, channels, 3, 2)) * 0.5).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    layer = Convolution(W, b, stride, pad)
    out = layer.forward(non_c(x, kind))
    assert out.dtype == dtype and out.flags.c_contiguous
    dout = rng.standard_normal(out.shape).astype(dtype)
    ref_out, ref_dx, ref_dW, ref_db = _torch_conv(x, W, b, dout, stride, pad)
    np.testing.assert_allclose(out, ref_out, **TOL[dtype])
    dx = layer.backward(non_c(dout, kind))
    assert dx.dtype == layer.dW.dtype == layer.db.dtype == dtype
    assert layer.dW.shape == W.shape and layer.db.shape == b.shape
    np.testing.assert_allclose(dx, ref_dx, **TOL[dtype])
    np.testing.assert_allclose(layer.dW, ref_dW, **TOL[dtype])
    np.testing.assert_allclose(layer.db, ref_db, **TOL[dtype])
    # the book's attributes
    assert layer.x.shape == x.shape and layer.col.shape[1] == channels * 6
    assert np.shares_memory(layer.col_W, W)


@needs_torch
@pytest.mark.parametrize("geom", [(2, 2, 1, 0), (2, 2, 2, 0), (3, 3, 2, 1), (3, 3, 3, 1),
                                  (3, 2, 1, 1), (5, 5, 3, 2), (2, 3, 2, 1)])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["C", "F"])
def test_pooling_against_torch(backend, geom, channels, dtype, kind, rng):
    ph, pw, stride, pad = geom
    x = rng.standard_normal((2, channels, 9, 7)).astype(dtype)
    layer = Pooling(ph, pw, stride, pad)
    out = layer.forward(non_c(x, kind))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ref = F.max_pool2d(xt, (ph, pw), stride=stride, padding=pad)
    dout = rng.standard_normal(out.shape).astype(dtype)
    ref.backward(torch.tensor(dout, dtype=torch.float64))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref.detach().numpy(), **TOL[dtype])
    dx = layer.backward(non_c(dout, kind))
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL[dtype])
    assert layer.arg_max.shape == (out.size,)


@needs_torch
def test_book_shapes_against_torch(backend, rng):
    """SimpleConvNet's conv (1 -> 30 channels, 5x5) and DeepConvNet's (16 -> 16, 3x3, pad
    1), batch 10, then a 2x2 pooling."""
    for c_in, fn, f, pad in [(1, 30, 5, 0), (16, 16, 3, 1)]:
        x = rng.standard_normal((10, c_in, 28, 28))
        W = rng.standard_normal((fn, c_in, f, f)) * 0.1
        b = rng.standard_normal(fn)
        conv, pool = Convolution(W, b, 1, pad), Pooling(2, 2, 2)
        out = pool.forward(conv.forward(x))
        xt = torch.tensor(x, requires_grad=True)
        Wt = torch.tensor(W, requires_grad=True)
        ref = F.max_pool2d(F.conv2d(xt, Wt, torch.tensor(b), padding=pad), 2, 2)
        dout = rng.standard_normal(out.shape)
        ref.backward(torch.tensor(dout))
        np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        dx = conv.backward(pool.backward(dout))
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(conv.dW, Wt.grad.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- layer contract

def test_convolution_holds_W_and_b_by_reference(backend, rng):
    W = rng.standard_normal((2, 1, 3, 3))
    b = np.zeros(2)
    layer = Convolution(W, b)
    x = rng.standard_normal((1, 1, 5, 5))
    before = layer.forward(x)
    W[...] *= 2
    b += 1
    np.testing.assert_allclose(layer.forward(x), 2 * before + 1, rtol=1e-12)
    assert layer.W is W and layer.b is b


def test_convolution_scalar_bias_as_apply_filter(backend, rng):
    """The book's ch07/apply_filter.py builds ``Convolution(w, 0)`` for one filter."""
    w = rng.standard_normal((1, 1, 5, 5))
    img = rng.random((1, 1, 12, 10)).astype(np.float32)
    out = Convolution(w, 0).forward(img)
    assert out.shape == (1, 1, 8, 6)
    ref = _numpy.im2col(img.astype(np.float64), 5, 5) @ w.reshape(1, -1).T
    np.testing.assert_allclose(out.reshape(-1), ref.reshape(-1), rtol=1e-12)


def test_float16_inference_computes_in_float32(backend, rng):
    x = rng.random((2, 1, 8, 8)).astype(np.float16)
    W = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    conv, pool = Convolution(W, np.zeros(3, np.float32)), Pooling(2, 2)
    out = pool.forward(conv.forward(x))
    assert out.dtype == np.float32
    ref = Pooling(2, 2).forward(Convolution(W, np.zeros(3, np.float32)).forward(x.astype(np.float32)))
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(TypeError, match="float16"):
        conv.backward(np.zeros((2, 3, 6, 6), np.float16))


def test_convolution_mixed_precision_promotes(backend, rng):
    """float32 images with float64 weights (the book's float32 MNIST): float64 out."""
    x = rng.random((2, 1, 6, 6)).astype(np.float32)
    layer = Convolution(rng.standard_normal((2, 1, 3, 3)), np.zeros(2))
    out = layer.forward(x)
    assert out.dtype == np.float64
    layer.backward(np.ones_like(out))
    assert layer.dW.dtype == np.float64


def test_errors_leave_the_layers_unchanged(backend, rng):
    W = rng.standard_normal((2, 3, 3, 3))
    conv = Convolution(W, np.zeros(2), 1, 1)
    x = rng.standard_normal((2, 3, 5, 5))
    out = conv.forward(x)
    state = (conv.x, conv.col, conv.col_W)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 3, H, W\)"):
        conv.forward(rng.standard_normal((2, 4, 5, 5)))
    with pytest.raises(ValueError, match="does not fit"):
        Convolution(W, np.zeros(2)).forward(rng.standard_normal((1, 3, 2, 2)))
    assert all(a is b for a, b in zip((conv.x, conv.col, conv.col_W), state))
    conv.backward(np.ones_like(out))
    grads = (conv.dW, conv.db)
    with pytest.raises(ValueError, match="dout: expected shape"):
        conv.backward(np.ones((2, 2, 4, 4)))
    with pytest.raises(TypeError, match="dout"):
        conv.backward(np.ones(out.shape, complex))
    assert conv.dW is grads[0] and conv.db is grads[1]
    with pytest.raises(ValueError, match="b: expected shape"):
        Convolution(W, np.zeros(3)).forward(x)
    with pytest.raises(ValueError, match="W: expected a 4-D array"):
        Convolution(W[0], np.zeros(2)).forward(x)

    pool = Pooling(2, 2, 2)
    y = pool.forward(x)
    state = (pool.x, pool.arg_max)
    with pytest.raises(ValueError, match="does not fit"):
        pool.forward(rng.standard_normal((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="dout: expected shape"):
        pool.backward(np.ones((2, 3, 3, 3)))
    assert pool.x is state[0] and pool.arg_max is state[1]
    assert pool.backward(np.ones_like(y)).shape == x.shape
    with pytest.raises(RuntimeError, match="before forward"):
        Convolution(W, np.zeros(2)).backward(out)
    with pytest.raises(RuntimeError, match="before forward"):
        Pooling(2, 2).backward(y)


def test_need_dx_false_skips_the_input_gradient(backend, rng):
    W = rng.standard_normal((2, 1, 3, 3))
    layer = Convolution(W, np.zeros(2))
    out = layer.forward(rng.standard_normal((2, 1, 6, 6)))
    d = rng.standard_normal(out.shape)
    dx = layer.backward(d)
    dW, db = layer.dW, layer.db
    assert layer.backward(d, need_dx=False) is None and dx.shape == (2, 1, 6, 6)
    np.testing.assert_array_equal(layer.dW, dW)
    np.testing.assert_array_equal(layer.db, db)


def test_layers_on_an_empty_batch(backend):
    conv = Convolution(np.ones((2, 1, 3, 3)), np.zeros(2))
    out = conv.forward(np.zeros((0, 1, 5, 5)))
    assert out.shape == (0, 2, 3, 3)
    assert conv.backward(np.zeros(out.shape)).shape == (0, 1, 5, 5)
    np.testing.assert_array_equal(conv.dW, np.zeros((2, 1, 3, 3)))
    np.testing.assert_array_equal(conv.db, np.zeros(2))
    pool = Pooling(2, 2)
    out = pool.forward(np.zeros((0, 2, 4, 4)))
    assert out.shape == (0, 2, 2, 2) and pool.backward(out).shape == (0, 2, 4, 4)


# --------------------------------------------------------------------------- whole-layer kernels
# conv_forward / conv_backward (lowered per image block on the compiled backend) and the
# 2x2 stride-2 pooling with a byte index (maxpool2_forward / maxpool2_backward).

CONV_GEOMETRIES = [  # (N, C, H, W, FN, FH, FW, stride, pad): the book's layers and odd ones
    (4, 1, 28, 28, 30, 5, 5, 1, 0),
    (3, 16, 14, 14, 16, 3, 3, 1, 1),
    (3, 32, 7, 7, 32, 3, 3, 1, 2),
    (2, 3, 9, 8, 4, 3, 2, 2, 1),
    (2, 2, 7, 9, 3, 2, 3, 3, 2),
    (1, 1, 4, 4, 2, 5, 5, 1, 2),
    (9, 2, 6, 5, 3, 1, 1, 2, 0),
]


@needs_torch
@pytest.mark.parametrize("geom", CONV_GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_kernels_against_torch(geom, dtype, rng):
    n, c, h, w, fn, fh, fw, s, p = geom
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = (rng.standard_normal((fn, c, fh, fw)) * 0.3).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    ref = None
    results = []
    for k in backends():
        out = k.conv_forward(x, W, b, s, p)
        if ref is None:
            dout = rng.standard_normal(out.shape).astype(dtype)
            ref = _torch_conv(x, W, b, dout, s, p)
        assert out.dtype == dtype and out.flags.c_contiguous
        dx, dW, db = k.conv_backward(dout, x, W, s, p)
        for got, want in zip((out, dx, dW, db), ref):
            assert got.dtype == dtype
            _close_to_scale(got, want, dtype)
        nodx = k.conv_backward(dout, x, W, s, p, need_dx=False)
        assert nodx[0] is None
        np.testing.assert_array_equal(nodx[1], dW)
        np.testing.assert_array_equal(nodx[2], db)
        results.append((out, dx, dW, db))
    # the backends agree to the rounding of the products; db is conv_bias_grad's, exactly
    for got, want in zip(results[-1], results[0]):
        _close_to_scale(got, want, dtype)
    np.testing.assert_array_equal(results[-1][3], kernels._numpy.conv_bias_grad(dout))


def _close_to_scale(got, want, dtype):
    """Sums of thousands of products (dW over a batch) cancel: the tolerance is relative
    to the array's largest element as well as to each element."""
    tol = TOL[dtype]["rtol"]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_conv_kernels_special_values_and_mixed_dtypes(rng):
    """NaN and inf propagate as through the products; float32 images with float64
    filters compute in float64."""
    x = rng.standard_normal((2, 2, 6, 6))
    x[0, 1, 2, 3], x[1, 0, 0, 0] = np.nan, np.inf
    W = rng.standard_normal((3, 2, 3, 3))
    b = np.array([0.0, -0.0, 1.0])
    for k in backends():
        out = k.conv_forward(x.astype(np.float32), W, b, 1, 1)
        assert out.dtype == np.float64
        ref = _numpy.conv_forward(x.astype(np.float32).astype(np.float64), W, b, 1, 1)
        np.testing.assert_allclose(out, ref, rtol=1e-12)
        assert np.array_equal(np.isnan(out), np.isnan(ref))
        dx, dW, db = k.conv_backward(np.ones_like(out, dtype=np.float32), x.astype(np.float32), W, 1, 1)
        assert dx.dtype == dW.dtype == db.dtype == np.float64


@needs_cython
def test_conv_kernels_do_not_depend_on_the_thread_count(rng):
    k = kernels._cython
    x = rng.standard_normal((37, 3, 13, 11))
    W = rng.standard_normal((5, 3, 3, 3))
    b = rng.standard_normal(5)
    before = k.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 8):
            k.set_num_threads(threads)
            out = k.conv_forward(x, W, b, 1, 1)
            results.append((out, *k.conv_backward(np.sin(out), x, W, 1, 1)))
    finally:
        k.set_num_threads(before)
    for r in results[1:]:
        for got, want in zip(r, results[0]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_kernels_on_empty_input(dtype):
    for k in backends():
        W = np.ones((2, 3, 3, 3), dtype)
        out = k.conv_forward(np.zeros((0, 3, 5, 5), dtype), W, np.ones(2, dtype))
        assert out.shape == (0, 2, 3, 3) and out.dtype == dtype
        dx, dW, db = k.conv_backward(out, np.zeros((0, 3, 5, 5), dtype), W)
        assert dx.shape == (0, 3, 5, 5)
        np.testing.assert_array_equal(dW, np.zeros_like(W))
        np.testing.assert_array_equal(db, np.zeros(2, dtype))
        o, index = k.maxpool2_forward(np.zeros((0, 2, 4, 4), dtype))
        assert o.shape == index.shape == (0, 2, 2, 2) and index.dtype == np.uint8
        assert k.maxpool2_backward(o, index, (0, 2, 4, 4)).shape == (0, 2, 4, 4)


CONV_BAD_CALLS = [
    ("conv_forward", lambda k: k.conv_forward(np.zeros((1, 2, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(3)), ValueError, "x: expected shape (N, 1, H, W)"),
    ("conv_forward", lambda k: k.conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3)), np.zeros(3)), ValueError, "W: expected a 4-D array"),
    ("conv_forward", lambda k: k.conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(2)), ValueError, "b: expected shape (3,)"),
    ("conv_forward", lambda k: k.conv_forward(np.zeros((1, 1, 2, 2)), np.zeros((3, 1, 3, 3)), np.zeros(3)), ValueError, "does not fit"),
    ("conv_forward", lambda k: k.conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(3), 0), ValueError, "stride: expected an integer >= 1"),
    ("conv_forward", lambda k: k.conv_forward(np.zeros((1, 1, 5, 5), np.float16), np.zeros((3, 1, 3, 3)), np.zeros(3)), TypeError, "float16"),
    ("conv_forward", lambda k: k.conv_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(3), out=np.zeros((1, 3, 3, 3), np.float32)), TypeError, "out: expected dtype float64"),
    ("conv_backward", lambda k: k.conv_backward(np.zeros((1, 3, 4, 4)), np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3))), ValueError, "dout: expected shape (1, 3, 3, 3)"),
    ("conv_backward", lambda k: k.conv_backward(np.zeros((1, 3, 3, 3), complex), np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3))), TypeError, "dout"),
    ("conv_backward", lambda k: k.conv_backward(np.zeros((1, 3, 3, 3)), np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), dW_out=np.zeros((3, 1, 3, 2))), ValueError, "dW_out: expected shape (3, 1, 3, 3)"),
    ("maxpool2_forward", lambda k: k.maxpool2_forward(np.zeros((1, 1, 1, 4))), ValueError, "does not fit"),
    ("maxpool2_backward", lambda k: k.maxpool2_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), np.intp), (1, 1, 4, 4)), TypeError, "index: expected a uint8 array"),
    ("maxpool2_backward", lambda k: k.maxpool2_backward(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 5, np.uint8), (1, 1, 4, 4)), ValueError, "index: window indices must lie in [0, 4]"),
    ("maxpool2_backward", lambda k: k.maxpool2_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 1), np.uint8), (1, 1, 4, 4)), ValueError, "index: expected shape (1, 1, 2, 2)"),
    ("maxpool2_backward", lambda k: k.maxpool2_backward(np.zeros((1, 1, 3, 2)), np.zeros((1, 1, 2, 2), np.uint8), (1, 1, 4, 4)), ValueError, "dout: expected shape (1, 1, 2, 2)"),
]


@pytest.mark.parametrize("name, call, exc, message", CONV_BAD_CALLS, ids=[c[0] for c in CONV_BAD_CALLS])
def test_conv_kernels_bad_input_same_error_on_both_backends(name, call, exc, message):
    test_bad_input_same_error_on_both_backends(name, call, exc, message)


@pytest.mark.parametrize("shape", [(2, 3, 24, 24), (3, 2, 9, 11), (1, 2, 17, 33), (2, 3, 28, 28),
                                   (1, 1, 2, 2), (2, 2, 16, 16)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2_is_maxpool_with_a_byte_index(shape, dtype, rng):
    """maxpool2_forward == maxpool_forward(x, 2, 2, 2) with the index in NCHW as bytes,
    special values included (the first NaN, the first of ties, -0.0 and -inf); its
    backward == maxpool_backward, bit for bit, on both backends."""
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, np.nan, 1.0, 1.0, 1.0, -np.inf, -np.inf, 2.0]
    flat[rng.choice(flat.size, min(flat.size, 12), replace=False)] = special[:min(flat.size, 12)]
    x[0, 0, :2, :2] = -np.inf  # a window of ties
    x = x.astype(dtype)
    ref_out, ref_arg = _numpy.maxpool_forward(x, 2, 2, 2)
    dout = rng.standard_normal(ref_out.shape).astype(dtype)
    dout.reshape(-1)[:3] = [-0.0, np.nan, np.inf][:dout.size]
    ref_dx = _numpy.maxpool_backward(dout, ref_arg, shape, 2, 2, 2)
    for k in backends():
        out, index = k.maxpool2_forward(x)
        assert out.dtype == dtype and index.dtype == np.uint8 and index.shape == out.shape
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(index.transpose(0, 2, 3, 1).reshape(-1), ref_arg)
        dx = k.maxpool2_backward(dout, index, shape)
        np.testing.assert_array_equal(dx, ref_dx)
        assert np.array_equal(np.signbit(dx), np.signbit(ref_dx))


def test_maxpool2_layouts_and_inputs_not_written(rng):
    x = rng.standard_normal((2, 3, 8, 6))
    keep = x.copy()
    ref = _numpy.maxpool2_forward(x)
    for k in backends():
        for kind in ("F", "strided"):
            out, index = k.maxpool2_forward(non_c(x, kind))
            np.testing.assert_array_equal(out, ref[0])
            np.testing.assert_array_equal(index, ref[1])
            d = non_c(out, kind)
            np.testing.assert_array_equal(k.maxpool2_backward(d, non_c(index, kind), x.shape),
                                          _numpy.maxpool2_backward(out, index, x.shape))
    np.testing.assert_array_equal(x, keep)


@needs_cython
@pytest.mark.parametrize("name", ["conv_forward", "conv_backward"])
def test_conv_kernels_release_the_gil(name, rng):
    x = rng.standard_normal((64, 8, 28, 28))
    W = rng.standard_normal((16, 8, 5, 5))
    b = np.zeros(16)
    k = kernels._cython
    out = k.conv_forward(x, W, b)
    call = {"conv_forward": lambda: k.conv_forward(x, W, b),
            "conv_backward": lambda: k.conv_backward(out, x, W)}[name]
    assert releases_gil(call)[0], f"{name} held the GIL"


def test_pooling_layer_keeps_the_book_arg_max(backend, rng):
    """The 2x2 layer keeps a byte index; ``arg_max`` reads as the book's (flat, (n, i, j,
    c) order, intp), the same array on every read, and one assigned is used."""
    x = rng.standard_normal((2, 3, 6, 6))
    pool, general = Pooling(2, 2, 2), Pooling(2, 2, 2)
    out = pool.forward(x)
    _, ref_arg = _numpy.maxpool_forward(x, 2, 2, 2)
    assert pool.arg_max.dtype == np.intp and pool.arg_max is pool.arg_max
    np.testing.assert_array_equal(pool.arg_max, ref_arg)
    d = rng.standard_normal(out.shape)
    dx = pool.backward(d)
    np.testing.assert_array_equal(dx, _numpy.maxpool_backward(d, ref_arg, x.shape, 2, 2, 2))
    general.forward(x)
    general.arg_max = np.zeros_like(ref_arg)  # the book's form, set by hand: it is what counts
    np.testing.assert_array_equal(general.backward(d),
                                  _numpy.maxpool_backward(d, np.zeros_like(ref_arg), x.shape, 2, 2, 2))


def test_convolution_layer_col_is_the_book_im2col(backend, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    W = rng.standard_normal((4, 3, 3, 2))
    layer = Convolution(W, np.zeros(4), 2, 1)
    assert layer.col is None
    layer.forward(x)
    np.testing.assert_array_equal(layer.col, ref_im2col(x, 3, 2, 2, 1))
    assert layer.col is layer.col


@needs_cython
def test_convolution_layer_does_not_call_matmul(monkeypatch, rng):
    """On the compiled backend the convolution's products go through the backend's
    BLAS calls, not np.matmul (nor a batch-sized im2col)."""
    def refuse(*a, **k):
        raise AssertionError("np.matmul called")
    layer = Convolution(rng.standard_normal((4, 2, 3, 3)), np.zeros(4), 1, 1)
    x = rng.standard_normal((3, 2, 8, 8))
    with kernels.use_backend("cython"):
        monkeypatch.setattr(np, "matmul", refuse)
        out = layer.forward(x)
        layer.backward(np.ones_like(out))


@pytest.mark.parametrize("shape", [(2, 3, 24, 24), (3, 2, 9, 11), (1, 2, 16, 16), (1, 1, 2, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_maxpool2_is_relu_then_pooling(shape, dtype, rng):
    """The fused kernel gives the Relu layer's output pooled, and maxpool2_backward with
    its index gives the gradient of both layers (ReLU's mask included), bit for bit,
    special values too (NaN passes, -0.0 and windows all <= 0 give +0.0)."""
    from fastbp.layers import Relu
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, -2.0, 0.0]
    flat[rng.choice(flat.size, min(flat.size, 8), replace=False)] = special[:min(flat.size, 8)]
    x[0, 0, :2, :2] = [[-0.0, -1.0], [0.0, -3.0]]  # a window with no positive element
    x = x.astype(dtype)
    dout = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(dtype)
    relu, pool = Relu(), Pooling(2, 2, 2)
    with kernels.use_backend("numpy"):
        ref_out = pool.forward(relu.forward(x))
        ref_dx = relu.backward(pool.backward(dout))
    for k in backends():
        out, index = k.relu_maxpool2_forward(x)
        np.testing.assert_array_equal(out, ref_out)
        assert not np.signbit(out[out == 0]).any()
        assert index[0, 0, 0, 0] == 4 and index.max() <= 4
        dx = k.maxpool2_backward(dout, index, shape)
        np.testing.assert_array_equal(dx, ref_dx)
        assert np.array_equal(np.signbit(dx), np.signbit(ref_dx))
