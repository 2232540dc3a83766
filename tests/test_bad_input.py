"""Bad input: every class of misuse gets a clear exception, never a crash or a wrong answer.

Each test runs on both kernel backends (the ``backend`` fixture). Messages are checked
for the argument's name and the expected and actual shape or dtype.
"""
import re
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import functions, kernels
from fastbp.layers import Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss

RNG = np.random.default_rng(20261129)


def K():
    return kernels.active()


def rand(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def labels(n, c):
    return RNG.integers(0, c, n)


def raises(exc, *fragments):
    """``pytest.raises`` whose message must contain every fragment (literally)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(str(f))})" for f in fragments))


def same(a, b):
    """Equal values, dtypes and shapes, NaN equal to NaN, +0.0 distinct from -0.0."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    np.testing.assert_array_equal(a, b)
    if a.dtype.kind == "f":  # the sign of zeros matters; a NaN's sign bit does not
        np.testing.assert_array_equal(np.signbit(a) & ~np.isnan(a), np.signbit(b) & ~np.isnan(b))


# --------------------------------------------------------------------------- shapes

class TestShapes:
    def test_affine_input_width(self, backend):
        layer = Affine(rand(4, 3), rand(3))
        with raises(ValueError, "x:", "4 features", "(4, 3)", "(2, 5)"):
            layer.forward(rand(2, 5))
        with raises(ValueError, "x:", "(7,)"):
            layer.forward(rand(7))

    def test_affine_params(self, backend):
        with raises(ValueError, "W:", "2-D", "(4,)"):
            Affine(rand(4), rand(3)).forward(rand(2, 4))
        with raises(ValueError, "b:", "(3,)", "(4,)"):
            Affine(rand(4, 3), rand(4)).forward(rand(2, 4))

    def test_affine_backward_dout(self, backend):
        layer = Affine(rand(4, 3), rand(3))
        layer.forward(rand(5, 4))
        with raises(ValueError, "dout:", "(5, 3)", "(5, 2)"):
            layer.backward(rand(5, 2))
        with raises(ValueError, "dout:", "(5, 3)", "(4, 3)"):
            layer.backward(rand(4, 3))
        with raises(ValueError, "dout:", "(5, 3)", "(3,)"):
            layer.backward(rand(3))

    @pytest.mark.parametrize("layer_type", [Relu, Sigmoid])
    def test_elementwise_backward_dout(self, backend, layer_type):
        layer = layer_type()
        layer.forward(rand(5, 4))
        with raises(ValueError, "dout:", "(5, 4)", "(4, 5)"):
            layer.backward(rand(4, 5))
        with raises(ValueError, "dout:", "(5, 4)", "(20,)"):
            layer.backward(rand(20))
        with raises(ValueError, "dout:", "(5, 4)", "(1, 4)"):
            layer.backward(rand(1, 4))  # would broadcast in the book's NumPy code

    def test_softmax_labels_length(self, backend):
        with raises(ValueError, "t:", "5 labels", "(4,)"):
            SoftmaxWithLoss().forward(rand(5, 3), labels(4, 3))
        with raises(ValueError, "t:", "(5,)", "(5, 3)", "(5, 1, 3)"):
            SoftmaxWithLoss().forward(rand(5, 3), np.zeros((5, 1, 3)))

    def test_softmax_onehot_classes(self, backend):
        t = np.eye(4)[labels(5, 4)]
        with raises(ValueError, "t:", "(5, 3)", "(5, 4)"):
            SoftmaxWithLoss().forward(rand(5, 3), t)
        with raises(ValueError, "t:", "(1, 3)", "(1, 4)"):
            SoftmaxWithLoss().forward(rand(3), t[0])

    def test_softmax_backward_dout(self, backend):
        layer = SoftmaxWithLoss()
        layer.forward(rand(3, 4), labels(3, 4))
        with raises(ValueError, "dout:", "scalar", "(3, 4)"):
            layer.backward(rand(3, 4))
        with raises(ValueError, "dout:", "scalar", "(1,)"):
            layer.backward(np.ones(1))
        with raises(TypeError, "dout:", "real number", "str"):
            layer.backward("1.0")
        with raises(TypeError, "dout:", "real number", "NoneType"):
            layer.backward(None)
        with raises(TypeError, "dout:", "complex"):
            layer.backward(1j)
        same(layer.backward(np.float32(2.0)), layer.backward(2))
        same(layer.backward(np.array(2.0)), layer.backward(2.0))

    def test_softmax_logits_rank(self, backend):
        with raises(ValueError, "x:", "2-D", "(2, 3, 4)"):
            SoftmaxWithLoss().forward(rand(2, 3, 4), labels(2, 3))
        with raises(ValueError, "x:", "2-D", "()"):
            SoftmaxWithLoss().forward(np.float64(1.0), 0)

    @pytest.mark.parametrize("make", [Relu, Sigmoid, lambda: Affine(rand(2, 2), rand(2)),
                                      SoftmaxWithLoss, MulLayer],
                             ids=["Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "MulLayer"])
    def test_backward_before_forward(self, backend, make):
        layer = make()
        with raises(RuntimeError, type(layer).__name__, "before forward"):
            layer.backward(1 if isinstance(layer, SoftmaxWithLoss) else np.ones(2))

    def test_failed_forward_keeps_previous_state(self, backend):
        """A forward that raises must not leave backward with half-updated state."""
        W, b = rand(4, 3), rand(3)
        layer = Affine(W, b)
        x = rand(2, 4)
        layer.forward(x)
        with pytest.raises(ValueError):
            layer.forward(rand(6))            # a single sample of the wrong width
        dx = layer.backward(np.ones((2, 3)))
        assert dx.shape == (2, 4)
        loss_layer = SoftmaxWithLoss()
        loss_layer.forward(rand(3, 4), labels(3, 4))
        with pytest.raises(ValueError):
            loss_layer.forward(rand(4), 9)      # single sample, label out of range
        assert loss_layer.backward().shape == (3, 4)

    # kernel level: the same rules without a layer in between
    def test_kernel_shapes(self, backend):
        k = K()
        with raises(ValueError, "mask:", "(3, 4)", "(4, 3)"):
            k.relu_backward(rand(3, 4), np.zeros((4, 3), bool))
        with raises(ValueError, "y:", "(3, 4)", "(3, 5)"):
            k.sigmoid_backward(rand(3, 4), rand(3, 5))
        with raises(ValueError, "dout:", "2-D", "(3,)"):
            k.bias_grad(rand(3))
        with raises(ValueError, "W:", "2-D", "(4,)"):
            k.affine_backward(rand(2, 3), rand(2, 4), rand(4))
        with raises(ValueError, "x:", "(N, 4)", "(2, 5)"):
            k.affine_backward(rand(2, 3), rand(2, 5), rand(4, 3))
        with raises(ValueError, "dout:", "(2, 3)", "(2, 4)"):
            k.affine_backward(rand(2, 4), rand(2, 4), rand(4, 3))
        with raises(ValueError, "y:", "2-D", "(3,)"):
            k.softmax_cross_entropy_backward(rand(3), labels(1, 3))
        with raises(ValueError, "t:", "3 labels", "(2,)"):
            k.softmax_cross_entropy_backward(rand(3, 4), labels(2, 4))

    def test_out_buffer(self, backend):
        k = K()
        x = rand(3, 4)
        with raises(ValueError, "out:", "(3, 4)", "(4, 3)"):
            k.relu_forward(x, out=np.empty((4, 3)))
        with raises(TypeError, "out:", "float64", "float32"):
            k.sigmoid_forward(x, out=np.empty((3, 4), np.float32))
        with raises(ValueError, "out:", "C-contiguous"):
            k.sigmoid_forward(x, out=np.empty((3, 4), order="F"))
        ro = np.empty((3, 4))
        ro.flags.writeable = False
        with raises(ValueError, "out:", "read-only"):
            k.relu_forward(x, out=ro)
        with raises(TypeError, "out:", "list"):
            k.relu_forward(x, out=[0.0] * 12)
        with raises(ValueError, "out:", "(4,)", "(3,)"):
            k.bias_grad(x, out=np.empty(3))
        with raises(ValueError, "out:", "(3, 4)", "(3, 3)"):
            k.softmax_cross_entropy(x, labels(3, 4), out=np.empty((3, 3)))


# --------------------------------------------------------------------------- dtypes

BAD_DTYPES = [np.float16, np.complex128, np.complex64, object, "U3", "S3", np.longdouble,
              "datetime64[s]"]


def _bad(dtype, shape):
    if np.dtype(dtype).kind in "US":
        return np.full(shape, "1.0", dtype=dtype)
    if np.dtype(dtype).kind == "M":
        return np.zeros(shape, dtype=dtype)
    return np.ones(shape).astype(dtype)


def _kernel_calls(bad):
    """Every kernel with the bad array in each float argument in turn: (arg, call)."""
    good22, good2 = rand(2, 2), rand(2)
    mask = np.zeros((2, 2), bool)
    t = np.array([0, 1])
    return [
        ("x", lambda k: k.relu_forward(bad)),
        ("dout", lambda k: k.relu_backward(bad, mask)),
        ("x", lambda k: k.sigmoid_forward(bad)),
        ("dout", lambda k: k.sigmoid_backward(bad, good22)),
        ("y", lambda k: k.sigmoid_backward(good22, bad)),
        ("dout", lambda k: k.bias_grad(bad)),
        ("dout", lambda k: k.affine_backward(bad, good22, good22)),
        ("x", lambda k: k.affine_backward(good22, bad, good22)),
        ("W", lambda k: k.affine_backward(good22, good22, bad)),
        ("x", lambda k: k.softmax_cross_entropy(bad, t)),
        ("t", lambda k: k.softmax_cross_entropy(good22, bad)),
        ("y", lambda k: k.softmax_cross_entropy_backward(bad, t)),
        ("t", lambda k: k.softmax_cross_entropy_backward(good22, bad)),
    ], good2


class TestDtypes:
    @pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
    def test_kernels_refuse(self, backend, dtype):
        bad = _bad(dtype, (2, 2))
        calls, _ = _kernel_calls(bad)
        for arg, call in calls:
            with raises(TypeError, f"{arg}:", str(bad.dtype)):
                call(K())

    @pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
    def test_layers_refuse(self, backend, dtype):
        bad = _bad(dtype, (2, 2))
        with raises(TypeError, "x:", str(bad.dtype)):
            Relu().forward(bad)
        with raises(TypeError, "x:", str(bad.dtype)):
            Sigmoid().forward(bad)
        with raises(TypeError, "x:", str(bad.dtype)):
            Affine(rand(2, 2), rand(2)).forward(bad)
        with raises(TypeError, "W:", str(bad.dtype)):
            Affine(bad, rand(2)).forward(rand(2, 2))
        with raises(TypeError, "b:", str(bad.dtype)):
            Affine(rand(2, 2), bad[0]).forward(rand(2, 2))
        with raises(TypeError, "x:", str(bad.dtype)):
            SoftmaxWithLoss().forward(bad, [0, 1])
        for layer in (Relu(), Sigmoid(), Affine(rand(2, 2), rand(2))):
            layer.forward(rand(2, 2))
            with raises(TypeError, "dout:", str(bad.dtype)):
                layer.backward(bad)
        with raises(TypeError, "x:", str(bad.dtype)):
            functions.softmax(bad)

    def test_python_objects_refused(self, backend):
        with raises(TypeError, "x:", "<U1"):
            K().relu_forward(["a", "b"])
        with raises(TypeError, "x:", "list"):
            K().sigmoid_forward([[1.0, 2.0], [3.0]])  # ragged
        with raises(TypeError, "x:", "NoneType"):
            K().relu_forward(None)
        with raises(TypeError, "x:", "dict"):
            Relu().forward({"a": 1})

    @pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64, bool])
    def test_int_and_bool_become_float64(self, backend, dtype):
        k = K()
        xi = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
        xf = xi.astype(np.float64)
        same(k.relu_forward(xi)[0], k.relu_forward(xf)[0])
        same(k.sigmoid_forward(xi), k.sigmoid_forward(xf))
        same(k.sigmoid_backward(xi, xi), k.sigmoid_backward(xf, xf))
        same(k.bias_grad(xi), k.bias_grad(xf))
        Wi = (np.arange(16).reshape(4, 4) % 3).astype(dtype)
        for a, b in zip(k.affine_backward(xi, xi, Wi), k.affine_backward(xf, xf, Wi.astype(float))):
            same(a, b)
        t = np.array([0, 1, 2])
        la, ya = k.softmax_cross_entropy(xi, t)
        lb, yb = k.softmax_cross_entropy(xf, t)
        same(la, lb)
        same(ya, yb)
        same(Relu().forward(xi), Relu().forward(xf))
        same(Affine(xf.T.copy(), np.zeros(3)).forward(xi), Affine(xf.T.copy(), np.zeros(3)).forward(xf))

    def test_python_scalars_and_lists(self, backend):
        k = K()
        same(k.relu_forward([-1, 2])[0], np.array([0.0, 2.0]))
        same(k.sigmoid_forward(0), np.array(0.5))
        same(k.sigmoid_forward(np.float32(0)), np.array(0.5, np.float32))

    def test_mixed_float32_float64_promotes(self, backend):
        k = K()
        a32, a64 = rand(3, 4, dtype=np.float32), rand(3, 4)
        assert k.sigmoid_backward(a32, a64).dtype == np.float64
        assert k.sigmoid_backward(a64, a32).dtype == np.float64
        same(k.sigmoid_backward(a32, a64), k.sigmoid_backward(a32.astype(np.float64), a64))
        dx, dW, db = k.affine_backward(a32, a64, rand(4, 4, dtype=np.float32))
        assert dx.dtype == dW.dtype == db.dtype == np.float64
        # one-hot targets are cast to the logits' dtype; labels of any integer type work
        loss, y = k.softmax_cross_entropy(a32, np.eye(4)[[0, 1, 2]])
        assert loss.dtype == y.dtype == np.float32
        # the layer promotes like ``x @ W + b``
        W32, b64 = rand(4, 2, dtype=np.float32), rand(2)
        out = Affine(W32, b64).forward(a32)
        assert out.dtype == np.float64
        same(out, np.matmul(a32, W32) + b64)

    def test_float32_stays_float32(self, backend):
        k = K()
        x = rand(3, 4, dtype=np.float32)
        assert k.relu_forward(x)[0].dtype == np.float32
        assert k.sigmoid_forward(x).dtype == np.float32
        assert k.bias_grad(x).dtype == np.float32
        assert k.softmax_cross_entropy(x, [0, 1, 2])[0].dtype == np.float32
        assert k.softmax_cross_entropy_backward(x, [0, 1, 2]).dtype == np.float32

    def test_byteswapped_floats(self, backend):
        k = K()
        for dt in (np.float32, np.float64):
            x = rand(3, 4, dtype=dt)
            xs = x.astype(x.dtype.newbyteorder())
            same(k.relu_forward(xs)[0], k.relu_forward(x)[0])
            same(k.sigmoid_forward(xs), k.sigmoid_forward(x))
            same(k.softmax_cross_entropy(xs, [0, 1, 2])[1], k.softmax_cross_entropy(x, [0, 1, 2])[1])
            ts = np.array([0, 1, 2], dtype=">i8")
            same(k.softmax_cross_entropy(x, ts)[1], k.softmax_cross_entropy(x, [0, 1, 2])[1])


# --------------------------------------------------------------------------- labels

class TestLabels:
    @pytest.mark.parametrize("t, exc, words", [
        ([0, 3, 1], ValueError, ["t:", "[0, 3)", "3"]),
        ([0, -1, 1], ValueError, ["t:", "[0, 3)", "-1"]),
        ([0, 10**6, 1], ValueError, ["t:", "[0, 3)"]),
        ([0.0, 1.5, 2.0], ValueError, ["t:", "whole numbers"]),
        ([0.0, np.nan, 2.0], ValueError, ["t:", "whole numbers", "NaN"]),
        ([0.0, np.inf, 2.0], ValueError, ["t:", "whole numbers"]),
        ([0.0, 1e30, 2.0], ValueError, ["t:", "whole numbers"]),
        (np.array([0, 1, 0], bool), TypeError, ["t:", "bool"]),
        (np.array([0, 1, 0], complex), TypeError, ["t:", "complex"]),
        (np.array([0, 2**63, 0], np.uint64), ValueError, ["t:", "[0, 3)"]),
        ([[0, 1, 2]], ValueError, ["t:", "(3, 3)", "(1, 3)"]),
    ])
    def test_bad_labels(self, backend, t, exc, words):
        k = K()
        x = rand(3, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "invalid value in cast" on the way
            with raises(exc, *words):
                k.softmax_cross_entropy(x, t)
            with raises(exc, *words):
                k.softmax_cross_entropy_backward(x, t)
            with raises(exc, *words):
                SoftmaxWithLoss().forward(x, t)
            with raises(exc, *words):
                functions.cross_entropy_error(functions.softmax(x), t)

    def test_whole_float_labels_work(self, backend):
        x = rand(3, 4)
        same(K().softmax_cross_entropy(x, [0.0, 3.0, 1.0])[0],
             K().softmax_cross_entropy(x, [0, 3, 1])[0])

    def test_single_sample_label_range(self, backend):
        with raises(ValueError, "t:", "[0, 4)", "4"):
            SoftmaxWithLoss().forward(rand(4), 4)
        with raises(ValueError, "t:", "[0, 4)", "-1"):
            functions.cross_entropy_error(functions.softmax(rand(4)), -1)

    def test_cross_entropy_error_no_broadcast(self, backend):
        """The book's code broadcasts a single label over the batch; fastbp refuses."""
        y = functions.softmax(rand(3, 4))
        with raises(ValueError, "t:", "3 labels", "(1,)"):
            functions.cross_entropy_error(y, [2])

    def test_accuracy_checks_labels(self, backend):
        net = fastbp.TwoLayerNet(4, 3, 2, rng=0)
        x = rand(5, 4)
        with raises(ValueError, "t:", "5 labels", "(1,)"):
            net.accuracy(x, [1])
        with raises(ValueError, "t:", "(5, 2)", "(5, 3)"):
            net.accuracy(x, np.eye(3)[labels(5, 3)])
        with raises(ValueError, "x:", "empty batch"):
            net.accuracy(np.empty((0, 4)), np.empty(0, int))


# --------------------------------------------------------------------------- layouts

def _layouts(x):
    """The same values as ``x`` in other memory layouts: (name, array)."""
    f = np.asfortranarray(x)
    big = np.zeros((x.shape[0] * 2,) + x.shape[1:], x.dtype)
    big[::2] = x
    strided = big[::2]
    ro = x.copy()
    ro.flags.writeable = False
    buf = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = buf[1:].view(x.dtype).reshape(x.shape)
    unaligned[...] = x
    rev = x[::-1].copy()[::-1]
    return [("fortran", f), ("strided", strided), ("readonly", ro), ("unaligned", unaligned),
            ("reversed", rev), ("list", x.tolist())]


@pytest.fixture
def memmapped(tmp_path):
    def make(x):
        path = tmp_path / f"m{RNG.integers(1 << 30)}.dat"
        m = np.memmap(path, dtype=x.dtype, mode="w+", shape=x.shape)
        m[...] = x
        m.flush()
        del m
        return np.memmap(path, dtype=x.dtype, mode="r", shape=x.shape)
    return make


class TestLayouts:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_kernels_any_layout(self, backend, dtype, memmapped):
        k = K()
        x = rand(6, 5, dtype=dtype)
        d = rand(6, 5, dtype=dtype)
        W = rand(5, 5, dtype=dtype)
        t = labels(6, 5)
        ref = {
            "relu": k.relu_forward(x), "relub": k.relu_backward(d, x <= 0),
            "sig": k.sigmoid_forward(x), "sigb": k.sigmoid_backward(d, x),
            "bias": k.bias_grad(d), "aff": k.affine_backward(d, x, W),
            "sce": k.softmax_cross_entropy(x, t), "sceb": k.softmax_cross_entropy_backward(x, t),
        }
        cases = _layouts(x) + [("memmap", memmapped(x))]
        for name, xl in cases:
            if name == "list" and dtype == np.float32:
                continue  # a list of Python floats is float64 by the dtype rule
            got = {
                "relu": k.relu_forward(xl), "relub": k.relu_backward(xl, x <= 0),
                "sig": k.sigmoid_forward(xl), "sigb": k.sigmoid_backward(xl, xl),
                "bias": k.bias_grad(xl), "aff": k.affine_backward(xl, xl, xl[:5]),
                "sce": k.softmax_cross_entropy(xl, t),
                "sceb": k.softmax_cross_entropy_backward(xl, t),
            }
            same(got["relu"][0], ref["relu"][0])
            same(got["relu"][1], ref["relu"][1])
            same(got["relub"], k.relu_backward(x, x <= 0))
            same(got["sig"], ref["sig"])
            same(got["sigb"], k.sigmoid_backward(x, x))
            same(got["bias"], k.bias_grad(x))
            for a, b in zip(got["aff"], k.affine_backward(x, x, x[:5].copy())):
                same(a, b)
            same(got["sce"][0], ref["sce"][0])
            same(got["sce"][1], ref["sce"][1])
            same(got["sceb"], ref["sceb"])

    def test_layers_any_layout(self, backend, memmapped):
        x = rand(6, 5)
        W, b = rand(5, 3), rand(3)
        for name, xl in _layouts(x) + [("memmap", memmapped(x))]:
            for layer_type in (Relu, Sigmoid):
                a, b_ = layer_type(), layer_type()
                same(a.forward(xl), b_.forward(x))
                same(a.backward(xl), b_.backward(x))
            a, b_ = Affine(W, b), Affine(W, b)
            same(a.forward(xl), b_.forward(x))
            d = rand(6, 3)
            same(a.backward(np.asfortranarray(d)), b_.backward(d))
            same(a.dW, b_.dW)
            same(a.db, b_.db)

    def test_params_any_layout(self, backend, memmapped):
        """W and b may be read-only or Fortran: they are only read."""
        x = rand(6, 5)
        W, b = rand(5, 3), rand(3)
        ref = Affine(W, b)
        out = ref.forward(x)
        dx = ref.backward(np.ones((6, 3)))
        for Wl in (np.asfortranarray(W), memmapped(W)):
            layer = Affine(Wl, b)
            np.testing.assert_allclose(layer.forward(x), out, rtol=1e-14, atol=1e-14)
            np.testing.assert_allclose(layer.backward(np.ones((6, 3))), dx, rtol=1e-14, atol=1e-14)

    def test_zero_d(self, backend):
        k = K()
        for v in (-2.0, 0.0, 3.0):
            x = np.array(v)
            out, mask = k.relu_forward(x)
            assert out.shape == mask.shape == ()
            assert k.sigmoid_forward(x).shape == ()
            assert k.sigmoid_backward(x, x).shape == ()
            assert k.relu_backward(x, mask).shape == ()
        layer = Relu()
        assert layer.forward(np.array(1.0)).shape == ()
        assert layer.backward(np.array(1.0)).shape == ()


# --------------------------------------------------------------------------- empty

class TestEmpty:
    @pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0), (0, 0), (2, 0, 3)])
    def test_elementwise_empty(self, backend, shape):
        k = K()
        x = np.empty(shape)
        out, mask = k.relu_forward(x)
        assert out.shape == mask.shape == shape
        assert k.relu_backward(x, mask).shape == shape
        assert k.sigmoid_forward(x).shape == shape
        assert k.sigmoid_backward(x, x).shape == shape
        for layer in (Relu(), Sigmoid()):
            assert layer.forward(x).shape == shape
            assert layer.backward(x).shape == shape

    def test_bias_grad_empty(self, backend):
        same(K().bias_grad(np.empty((0, 3))), np.zeros(3))
        same(K().bias_grad(np.empty((4, 0), np.float32)), np.zeros(0, np.float32))

    def test_affine_empty_batch(self, backend):
        W, b = rand(4, 3), rand(3)
        layer = Affine(W, b)
        out = layer.forward(np.empty((0, 4)))
        assert out.shape == (0, 3)
        dx = layer.backward(np.empty((0, 3)))
        assert dx.shape == (0, 4)
        same(layer.dW, np.zeros((4, 3)))
        same(layer.db, np.zeros(3))
        assert Affine(W, b).forward(np.empty((0, 2, 2))).shape == (0, 3)

    def test_loss_empty_batch_is_an_error(self, backend):
        with raises(ValueError, "x:", "empty batch"):
            SoftmaxWithLoss().forward(np.empty((0, 3)), np.empty(0, int))
        with raises(ValueError, "x:", "no classes", "(2, 0)"):
            K().softmax_cross_entropy(np.empty((2, 0)), [0, 0])
        with raises(ValueError, "y:", "empty batch"):
            K().softmax_cross_entropy_backward(np.empty((0, 3)), np.empty(0, int))
        with raises(ValueError, "y:", "empty batch"):
            functions.cross_entropy_error(np.empty((0, 3)), np.empty(0, int))
        with raises(ValueError, "x:", "(2, 0)"):
            functions.softmax(np.empty((2, 0)))
        assert functions.softmax(np.empty((0, 3))).shape == (0, 3)


# --------------------------------------------------------------------------- non-finite

# backend agreement where a transcendental function is involved (NumPy's own SIMD exp
# and the C library's differ by an ulp or so); rounding-only kernels must agree exactly
TOL = {np.dtype(np.float32): dict(rtol=1e-6, atol=1e-40),
       np.dtype(np.float64): dict(rtol=1e-12, atol=1e-300)}

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310, -1e-310, 1.0, -1.0,
                    1e300, -1e300, 745.0, -745.0, 88.0, -88.0, 1e-40])


class TestNonFinite:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_elementwise_same_on_both_backends(self, dtype):
        if not kernels.HAVE_CYTHON:
            pytest.skip("the compiled kernels are not built")
        with np.errstate(over="ignore", under="ignore"):
            x = SPECIAL.astype(dtype)
        d = x[::-1].copy()
        res = {}
        for name in ("numpy", "cython"):
            with fastbp.use_backend(name) as k, np.errstate(invalid="ignore", over="ignore"):
                res[name] = [*k.relu_forward(x), k.relu_backward(d, x <= 0),
                             k.sigmoid_forward(x), k.sigmoid_backward(d, x)]
        np_, cy = res["numpy"], res["cython"]
        for i in (0, 1, 2):  # ReLU: no arithmetic, bit-identical
            same(np_[i], cy[i])
        for i in (3, 4):     # exp: NumPy's SIMD exp and libm may differ by an ulp
            assert np_[i].dtype == cy[i].dtype
            np.testing.assert_allclose(np_[i], cy[i], **TOL[np.dtype(dtype)])

    def test_contract_values(self, backend):
        k = K()
        out, mask = k.relu_forward(np.array([np.nan, -0.0, -np.inf, np.inf]))
        same(out, np.array([np.nan, 0.0, 0.0, np.inf]))
        same(mask, np.array([False, True, True, False]))
        same(k.sigmoid_forward(np.array([np.nan, np.inf, -np.inf])), np.array([np.nan, 1.0, 0.0]))

    @pytest.mark.parametrize("row", [[np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [0.0, 1.0, np.nan],
                                     [-np.inf, -np.inf, -np.inf]])
    def test_softmax_nan_row(self, backend, row):
        x = np.array([row, [0.0, 1.0, 2.0]])
        with np.errstate(invalid="ignore"):
            loss, y = K().softmax_cross_entropy(x, [1, 2])
        assert np.isnan(loss)
        assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()

    def test_softmax_minus_inf_logit(self, backend):
        x = np.array([[-np.inf, 0.0, 1.0]])
        loss, y = K().softmax_cross_entropy(x, [1])
        assert np.isfinite(loss) and y[0, 0] == 0.0
        loss, _ = K().softmax_cross_entropy(x, [0])
        assert loss == np.inf
        # a zero one-hot weight ignores its logit, even -inf
        loss, _ = K().softmax_cross_entropy(x, [[0.0, 1.0, 0.0]])
        assert np.isfinite(loss)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_no_warnings_for_finite_input(self, backend, dtype):
        info = np.finfo(dtype)
        big = float(info.max) / 4   # beyond this, results themselves overflow
        x = np.array([[big, -big, 0.0, 1.0], [-big, -big, -big, -big],
                      [float(info.tiny), -1e-3, 88.0, -104.0], [700.0, -700.0, 1.0, 2.0]],
                     dtype=dtype)
        t = [0, 1, 2, 3]
        k = K()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            k.sigmoid_forward(x)
            k.sigmoid_backward(x / big, k.sigmoid_forward(x))
            k.relu_forward(x)
            loss, y = k.softmax_cross_entropy(x / 2, t)
            k.softmax_cross_entropy_backward(y, t)
            k.softmax_cross_entropy(x / 2, np.eye(4)[t])
            functions.softmax(x / 2)
            functions.sigmoid_grad(x)
            SoftmaxWithLoss().forward(x / 2, t)
            Sigmoid().forward(x)
        assert np.isfinite(y).all() and np.isfinite(loss)


# --------------------------------------------------------------------------- no surprise writes

def _snapshot(*arrays):
    return [a.copy() for a in arrays]


def _unchanged(before, arrays):
    for a, b in zip(before, arrays):
        same(a, b)


class TestNoSurpriseWrites:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_kernels(self, backend, dtype):
        k = K()
        x, d, W = rand(4, 3, dtype=dtype), rand(4, 3, dtype=dtype), rand(3, 3, dtype=dtype)
        mask, t, oh = x <= 0, labels(4, 3), np.eye(3, dtype=dtype)[labels(4, 3)]
        args = [x, d, W, mask, t, oh]
        before = _snapshot(*args)
        k.relu_forward(x)
        k.relu_backward(d, mask)
        k.sigmoid_forward(x)
        k.sigmoid_backward(d, x)
        k.bias_grad(d)
        k.affine_backward(d, x, W)
        k.affine_backward(d, x, W, need_dx=False)
        _, y = k.softmax_cross_entropy(x, t)
        k.softmax_cross_entropy(x, oh)
        ycopy = y.copy()
        k.softmax_cross_entropy_backward(y, t)
        k.softmax_cross_entropy_backward(y, oh, 2.0)
        _unchanged(before, args)
        same(y, ycopy)

    def test_layers_and_functions(self, backend):
        x, d, W, b = rand(4, 3), rand(4, 3), rand(3, 3), rand(3)
        t = labels(4, 3)
        args = [x, d, W, b, t]
        before = _snapshot(*args)
        for layer in (Relu(), Sigmoid(), Affine(W, b)):
            layer.forward(x)
            layer.backward(d)   # the book's Relu.backward writes into dout; fastbp does not
        loss = SoftmaxWithLoss()
        loss.forward(x, t)
        loss.backward()
        functions.softmax(x)
        functions.sigmoid(x)
        functions.sigmoid_grad(x)
        functions.relu(x)
        functions.relu_grad(x)
        functions.cross_entropy_error(functions.softmax(x), t)
        _unchanged(before, args)

    def test_network(self, backend):
        net = fastbp.TwoLayerNet(3, 4, 3, rng=1)
        params = {k: v.copy() for k, v in net.params.items()}
        x, t = rand(4, 3), labels(4, 3)
        before = _snapshot(x, t)
        net.loss(x, t)
        net.accuracy(x, t)
        net.gradient(x, t)
        net.numerical_gradient(x, t)   # perturbs params in place, restores them
        _unchanged(before, [x, t])
        for key, value in params.items():
            same(net.params[key], value)

    def test_out_aliasing_gives_the_plain_result(self, backend):
        """``out=`` may be exactly an input: the result is as if the inputs were read
        first (as NumPy's ufuncs do). A partial overlap is refused (every kernel and
        every kind of overlap: tests/test_overlap.py)."""
        k = K()
        x, d = rand(4, 5), rand(4, 5)
        t = labels(4, 5)
        oh = np.eye(5)[t]
        expect = {
            "relu": k.relu_forward(x)[0], "relub": k.relu_backward(d, x <= 0),
            "sig": k.sigmoid_forward(x), "sigb": k.sigmoid_backward(d, x),
            "sce": k.softmax_cross_entropy(x, t), "sceo": k.softmax_cross_entropy(x, oh),
            "sceb": k.softmax_cross_entropy_backward(x, t),
            "sceob": k.softmax_cross_entropy_backward(x, oh),
            "bias": k.bias_grad(x[:1]),
        }
        a = x.copy()
        same(k.relu_forward(a, out=a)[0], expect["relu"])
        a = d.copy()
        same(k.relu_backward(a, x <= 0, out=a), expect["relub"])
        a = x.copy()
        same(k.sigmoid_forward(a, out=a), expect["sig"])
        a, b = d.copy(), x.copy()
        same(k.sigmoid_backward(a, b, out=b), expect["sigb"])
        a, b = d.copy(), x.copy()
        same(k.sigmoid_backward(a, b, out=a), expect["sigb"])
        a = x.copy()
        loss, y = k.softmax_cross_entropy(a, t, out=a)
        same(loss, expect["sce"][0])
        same(y, expect["sce"][1])
        a = oh.copy()
        loss, y = k.softmax_cross_entropy(x, a, out=a)
        same(loss, expect["sceo"][0])
        a = x.copy()
        same(k.softmax_cross_entropy_backward(a, t, out=a), expect["sceb"])
        a = oh.copy()
        same(k.softmax_cross_entropy_backward(x, a, out=a), expect["sceob"])
        # partial overlap: a row of the input, the input shifted by one element
        a = x[:1].copy()
        with raises(ValueError, "out:", "overlaps dout"):
            k.bias_grad(a, out=a[0])
        base = np.concatenate([x.ravel(), [0.0]])
        shifted_in, shifted_out = base[:-1].reshape(4, 5), base[1:].reshape(4, 5)
        with raises(ValueError, "out:", "overlaps x without being it"):
            k.relu_forward(shifted_in, out=shifted_out)
        base = np.concatenate([[0.0], x.ravel()])
        shifted_in, shifted_out = base[1:].reshape(4, 5), base[:-1].reshape(4, 5)
        with raises(ValueError, "out:", "overlaps x without being it"):
            k.sigmoid_forward(shifted_in, out=shifted_out)


# --------------------------------------------------------------------------- numerical_gradient

class TestNumericalGradient:
    def test_restores_on_exception(self):
        x = rand(3, 4)
        before = x.copy()
        calls = []

        def f(a):
            calls.append(1)
            if len(calls) == 6:
                raise KeyError("boom")
            return float(a.sum())

        with pytest.raises(KeyError):
            fastbp.numerical_gradient(f, x)
        same(x, before)

    def test_restores_on_keyboard_interrupt(self):
        x = np.asfortranarray(rand(3, 4))[:, ::2]
        before = x.copy()

        def f(a):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            fastbp.numerical_gradient(f, x)
        same(x, before)

    def test_refuses(self):
        f = lambda a: float(a.sum())  # noqa: E731
        with raises(TypeError, "x:", "int64"):
            fastbp.numerical_gradient(f, np.arange(3))
        with raises(TypeError, "x:", "list"):
            fastbp.numerical_gradient(f, [1.0, 2.0])
        with raises(TypeError, "x:", "float16"):
            fastbp.numerical_gradient(f, np.ones(2, np.float16))
        ro = np.ones(3)
        ro.flags.writeable = False
        with raises(ValueError, "x:", "read-only"):
            fastbp.numerical_gradient(f, ro)
        for h in (0.0, -1e-4, np.nan, np.inf):
            with raises(ValueError, "h:"):
                fastbp.numerical_gradient(f, np.ones(3), h=h)

    def test_zero_size_and_zero_d(self):
        f = lambda a: float((a ** 2).sum())  # noqa: E731
        assert fastbp.numerical_gradient(f, np.empty((0, 3))).shape == (0, 3)
        g = fastbp.numerical_gradient(f, np.array(3.0))
        assert g.shape == () and abs(g - 6.0) < 1e-6

    def test_strided_layout(self):
        base = rand(4, 6)
        x = base[:, ::2]
        before = base.copy()
        g = fastbp.numerical_gradient(lambda a: float((a ** 2).sum()), x)
        np.testing.assert_allclose(g, 2 * x, rtol=1e-7)
        same(base, before)


def test_chapter6_kernels_refuse_complex(backend):
    """A complex argument is refused, not cast to its real part (found by the fuzzer)."""
    x = np.ones((3, 2))
    c = np.ones(2, dtype=complex)
    with pytest.raises(TypeError, match="complex"):
        backend.batchnorm_inference(x, c, np.zeros(2), np.zeros(2), np.ones(2), 1e-6)
    with pytest.raises(TypeError, match="complex"):
        backend.batchnorm_backward(x, x, c, np.ones(2))
    with pytest.raises(TypeError, match="complex"):
        backend.dropout_forward(np.ones(2), np.ones(2, dtype=complex), 0.5, 2.0)


@pytest.mark.parametrize("dout", ["1.0", 1j, True, np.ones(2), None])
def test_softmax_backward_kernel_refuses_a_non_real_dout(backend, dout):
    """The kernel itself checks ``dout`` (not only the layer): a string is not
    converted through float()."""
    y = np.full((2, 3), 1 / 3)
    with pytest.raises((TypeError, ValueError), match="dout:"):
        kernels.active().softmax_cross_entropy_backward(y, np.array([0, 1]), dout)
