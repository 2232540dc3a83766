"""SimpleConvNet (chapter 7) and DeepConvNet (chapter 8): the book's API and attributes,
gradients (the book's ch07/gradient_check.py procedure, and PyTorch's autograd),
float16 inference, and save_params/load_params (.npz, the book's pickles, refused
pickles)."""
import io
import os
import pickle

import numpy as np
import pytest

from fastbp import _pickle
from fastbp.layers import Affine, Convolution, Dropout, Pooling, Relu
from fastbp.networks import DeepConvNet, SimpleConvNet

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
SMALL = dict(input_dim=(1, 10, 10),
             conv_param={"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1},
             hidden_size=10, output_size=10, weight_init_std=0.01)


def test_simple_convnet_has_the_books_structure():
    np.random.seed(0)
    net = SimpleConvNet()
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,),
                      "W3": (100, 10), "b3": (10,)}
    for key, name in (("1", "Conv1"), ("2", "Affine1"), ("3", "Affine2")):
        assert net.layers[name].W is net.params["W" + key]
        assert net.layers[name].b is net.params["b" + key]
    # the book's draws: W1, W2, W3 from the global state, in this order, times 0.01
    np.random.seed(0)
    w1 = 0.01 * np.random.randn(30, 1, 5, 5)
    w2 = 0.01 * np.random.randn(4320, 100)
    np.testing.assert_array_equal(net.params["W1"], w1)
    np.testing.assert_array_equal(net.params["W2"], w2)
    assert isinstance(net.layers["Pool1"], Pooling) and net.last_layer is not None


@pytest.mark.parametrize("trial", range(2))
def test_books_gradient_check_procedure(backend, trial):
    """ch07/gradient_check.py: one random 10x10 image, the label as a (1, 1) array, mean
    absolute difference of numerical and backprop gradients per parameter. With the
    book's weights of std 0.01 its step of 1e-4 crosses ReLU and max-pooling kinks, so
    the parameters before the last ReLU differ by up to about 1e-4 (the book's own code
    gives the same figures: 3.3e-6, 1.4e-5, 7.6e-8, 1.4e-4 for W1, b1, W2, b2 at seed
    1); W3 and b3, after every kink, agree closely. Exact checks: the tests below."""
    np.random.seed(trial)
    net = SimpleConvNet(**SMALL)
    X = np.random.rand(100).reshape((1, 1, 10, 10))
    T = np.array([1]).reshape((1, 1))
    grad_num = net.numerical_gradient(X, T)
    grad = net.gradient(X, T)
    assert sorted(grad_num) == sorted(grad) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    for key in grad:
        diff = np.abs(grad_num[key] - grad[key]).mean()
        assert diff < (1e-6 if key in ("W3", "b3") else 1e-3), (key, diff)


def test_gradient_check_away_from_kinks(backend):
    """Larger weights and a smaller step: every gradient agrees to 1e-6 relative."""
    np.random.seed(4)
    net = SimpleConvNet(**dict(SMALL, weight_init_std=0.3))
    X = np.random.rand(3, 1, 10, 10)
    T = np.array([1, 4, 7])
    grad = net.gradient(X, T)
    from fastbp.gradient import numerical_gradient
    for key in grad:
        num = numerical_gradient(lambda w: net.loss(X, T), net.params[key], h=1e-6)
        err = np.abs(num - grad[key]).max() / max(np.abs(grad[key]).max(), 1e-12)
        assert err < 1e-4, (key, err)


def _torch_simple(net, x, t):
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    h = F.max_pool2d(F.relu(F.conv2d(torch.tensor(x), p["W1"], p["b1"])), 2, 2)
    h = F.relu(h.reshape(x.shape[0], -1) @ p["W2"] + p["b2"])
    loss = F.cross_entropy(h @ p["W3"] + p["b3"], torch.tensor(t))
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in p.items()}


@needs_torch
def test_simple_convnet_gradient_against_torch(backend, rng):
    net = SimpleConvNet(input_dim=(1, 28, 28), weight_init_std=0.1, rng=rng)
    x = rng.random((8, 1, 28, 28))
    t = rng.integers(0, 10, 8)
    grads = net.gradient(x, t)
    loss, ref = _torch_simple(net, x, t)
    assert net.loss(x, t) == pytest.approx(loss, rel=1e-12)
    for key in ref:
        np.testing.assert_allclose(grads[key], ref[key], rtol=1e-9, atol=1e-13, err_msg=key)


def test_float32_end_to_end(backend, rng):
    net = SimpleConvNet(**SMALL, dtype=np.float32, rng=rng)
    x = rng.random((4, 1, 10, 10)).astype(np.float32)
    t = rng.integers(0, 10, 4)
    assert net.predict(x).dtype == np.float32
    grads = net.gradient(x, t)
    assert all(g.dtype == np.float32 for g in grads.values())
    net64 = SimpleConvNet(**SMALL, rng=0)
    for key in net64.params:
        net64.params[key][...] = net.params[key]
    g64 = net64.gradient(x.astype(np.float64), t)
    for key in grads:
        np.testing.assert_allclose(grads[key], g64[key], rtol=2e-3, atol=1e-6)


def test_accuracy_counts_every_sample(backend, rng):
    """The book's accuracy drops a last partial batch; fastbp's counts it."""
    net = SimpleConvNet(**SMALL, rng=rng)
    x = rng.random((25, 1, 10, 10))
    pred = np.argmax(net.predict(x), axis=1)
    t = pred.copy()
    t[:5] = (t[:5] + 1) % 10
    assert net.accuracy(x, t, batch_size=10) == pytest.approx(20 / 25)
    assert net.accuracy(x, np.eye(10)[t]) == pytest.approx(20 / 25)
    with pytest.raises(ValueError, match="batch_size"):
        net.accuracy(x, t, batch_size=0)
    with pytest.raises(ValueError, match="t: expected 25 labels"):
        net.accuracy(x, t[:3])


def test_deep_convnet_has_the_books_structure():
    np.random.seed(1)
    net = DeepConvNet()
    kinds = [type(layer) for layer in net.layers]
    C, R, P, A, D = Convolution, Relu, Pooling, Affine, Dropout
    assert kinds == [C, R, C, R, P, C, R, C, R, P, C, R, C, R, P, A, R, D, A, D]
    for i, idx in enumerate((0, 2, 5, 7, 10, 12, 15, 18), 1):
        assert net.layers[idx].W is net.params[f"W{i}"]
    assert net.params["W7"].shape == (64 * 4 * 4, 50) and net.params["W8"].shape == (50, 10)
    # He initialisation with the book's fan-ins, drawn in its order
    np.random.seed(1)
    w1 = np.sqrt(2.0 / 9) * np.random.randn(16, 1, 3, 3)
    w2 = np.sqrt(2.0 / 144) * np.random.randn(16, 16, 3, 3)
    np.testing.assert_array_equal(net.params["W1"], w1)
    np.testing.assert_array_equal(net.params["W2"], w2)


def test_deep_convnet_gradient_numerically(backend):
    """Dropout at ratio 0 (masks keep everything) makes the loss deterministic; central
    differences at a few coordinates of every parameter."""
    net = DeepConvNet(input_dim=(1, 12, 12), rng=3)
    for layer in net.layers:
        if isinstance(layer, Dropout):
            layer.dropout_ratio = 0.0
    r = np.random.default_rng(5)
    x = r.random((2, 1, 12, 12))
    t = np.array([3, 8])
    grads = net.gradient(x, t)
    assert sorted(grads) == sorted(net.params)
    h = 1e-6
    for key, p in net.params.items():
        assert grads[key].shape == p.shape
        for _ in range(2):
            idx = tuple(r.integers(0, s) for s in p.shape)
            old = p[idx]
            p[idx] = old + h
            up = net.loss(x, t)
            p[idx] = old - h
            down = net.loss(x, t)
            p[idx] = old
            num = (up - down) / (2 * h)
            assert num == pytest.approx(grads[key][idx], rel=1e-4, abs=1e-8), (key, idx)


def test_deep_convnet_train_and_test_modes(backend, rng):
    net = DeepConvNet(rng=rng)
    x = rng.random((3, 1, 28, 28)).astype(np.float32)
    a = net.predict(x)
    np.testing.assert_array_equal(a, net.predict(x, train_flg=False))
    assert a.shape == (3, 10)
    assert not np.array_equal(net.predict(x, train_flg=True), a)


def test_float16_inference(backend, rng):
    """ch08/half_float_network.py: float16 images (and parameters rounded to float16
    in place) give nearly the float64 accuracy; the computation runs in float32 or
    wider, never in float16."""
    net = SimpleConvNet(**dict(SMALL, weight_init_std=0.3), rng=rng)
    x = rng.random((50, 1, 10, 10))
    t = np.argmax(net.predict(x), axis=1)
    assert net.accuracy(x, t) == 1.0
    half = x.astype(np.float16)
    assert net.predict(half).dtype == np.float64  # float16 -> float32, then the weights' dtype
    net32 = SimpleConvNet(**dict(SMALL, weight_init_std=0.3), dtype=np.float32, rng=0)
    for key in net.params:
        net32.params[key][...] = net.params[key].astype(np.float16)
    assert net32.predict(half).dtype == np.float32
    assert net32.accuracy(half, t) >= 0.9


# --------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("name", ["params.npz", "params.pkl", "weights"])
def test_save_and_load_round_trip(tmp_path, name, rng):
    net = SimpleConvNet(**SMALL, rng=rng)
    path = tmp_path / name
    net.save_params(str(path))
    saved = str(path)  # the name is kept as given; a .pkl name holds fastbp's .npz too
    other = SimpleConvNet(**SMALL, rng=1)
    arrays = dict(other.params)
    other.load_params(saved)
    for key in net.params:
        np.testing.assert_array_equal(other.params[key], net.params[key])
        assert other.params[key] is arrays[key]  # loaded in place
    assert other.layers["Conv1"].W is other.params["W1"]
    x = rng.random((2, 1, 10, 10))
    np.testing.assert_array_equal(other.predict(x), net.predict(x))


def test_book_pickle_format_loads(tmp_path, rng):
    """The book's save_params: pickle.dump of a dict of float64 arrays."""
    book = {"W1": rng.standard_normal((10, 1, 3, 3)), "b1": np.zeros(10),
            "W2": rng.standard_normal((160, 10)), "b2": np.zeros(10),
            "W3": rng.standard_normal((10, 10)), "b3": np.zeros(10)}
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:
        pickle.dump(book, f)
    net = SimpleConvNet(**SMALL, rng=0)
    arrays = dict(net.params)
    net.load_params(str(path))
    for key in book:
        assert net.params[key] is arrays[key]  # in place
        np.testing.assert_array_equal(net.params[key], book[key])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo this must not run",))


def test_load_refuses_code_in_a_pickle(tmp_path, rng):
    net = SimpleConvNet(**SMALL, rng=rng)
    before = {k: v.copy() for k, v in net.params.items()}
    payload = {k: v for k, v in net.params.items()}
    payload["W1"] = _Evil()
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load the global (posix|os|nt)\.system"):
        net.load_params(str(path))
    for key in before:
        np.testing.assert_array_equal(net.params[key], before[key])


@pytest.mark.parametrize("obj, message", [
    (np.array([1, "a"], dtype=object), "dtype object"),
    ({"a": {1, 2}}, "object of type set"),
    ({"a": io.BytesIO()}, "refusing"),
])
def test_restricted_unpickler_refuses(obj, message):
    with pytest.raises(_pickle.UnsafePickleError, match=message):
        _pickle.load(io.BytesIO(pickle.dumps(obj)))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_unpickler_reads_arrays(protocol, rng):
    obj = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.asfortranarray(
        rng.standard_normal((2, 3))), "c": [np.arange(3), (1.5, "x")], "d": np.float64(2.0)}
    back = _pickle.load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    for key in ("a", "b"):
        assert back[key].dtype == obj[key].dtype
        np.testing.assert_array_equal(back[key], obj[key])
    np.testing.assert_array_equal(back["c"][0], obj["c"][0])
    assert back["c"][1] == (1.5, "x") and back["d"] == 2.0


def test_load_checks_keys_and_shapes(tmp_path, rng):
    """Book-format pickles with a missing key or a wrong shape: refused, nothing changed."""
    net = SimpleConvNet(**SMALL, rng=rng)
    bad = {k: v.copy() for k, v in net.params.items()}
    bad.pop("b3")
    with open(tmp_path / "missing.pkl", "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(ValueError, match=r"no b3 in the file"):
        net.load_params(str(tmp_path / "missing.pkl"))
    bad = dict(net.params, W1=np.zeros((3, 1, 3, 3)), W2=np.zeros_like(net.params["W2"]))
    with open(tmp_path / "shape.pkl", "wb") as f:
        pickle.dump(bad, f)
    before = net.params["W2"].copy()
    with pytest.raises(ValueError, match=r"W1 has shape \(3, 1, 3, 3\)"):
        net.load_params(str(tmp_path / "shape.pkl"))
    np.testing.assert_array_equal(net.params["W2"], before)


def test_deep_convnet_save_load(tmp_path, rng):
    net = DeepConvNet(rng=rng)
    net.save_params(str(tmp_path / "deep.pkl"))
    other = DeepConvNet(rng=1)
    other.load_params(str(tmp_path / "deep.pkl"))
    x = rng.random((2, 1, 28, 28))
    np.testing.assert_array_equal(other.predict(x), net.predict(x))


# --------------------------------------------------------------------------- MNIST

@pytest.mark.slow
@pytest.mark.mnist
def test_simple_convnet_learns_mnist(mnist_dir):
    """One epoch of the book's recipe (Adam 0.001, batch 100) in float32 on the full
    set: at least 0.96 test accuracy (0.9687 measured; 4 epochs reach 0.985,
    see docs/chapter7.md). About 600 training steps: tens of seconds."""
    from fastbp.datasets import load_mnist
    from fastbp.optimizers import Adam
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, flatten=False,
                                                      data_dir=mnist_dir)
    net = SimpleConvNet(dtype=np.float32, rng=0)
    opt = Adam(lr=0.001)
    r = np.random.default_rng(1)
    for _ in range(600):
        batch = r.integers(0, x_train.shape[0], 100)
        opt.update(net.params, net.gradient(x_train[batch], t_train[batch]))
    assert net.accuracy(x_test, t_test) >= 0.96


# --------------------------------------------------------------------------- CLI

def test_cli_trains_simple_convnet(tmp_path, monkeypatch, capsys):
    """``fastbp train --net conv``: the book's recipe (adam 0.001), offline on the sample."""
    from fastbp import cli
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FASTBP_MNIST_MIRRORS", "")
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--net", "conv", "--iters", "3", "--seed", "1", "--no-plot",
                     "--save", "conv.npz"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SimpleConvNet 1x28x28-100-10, adam lr 0.001, float64")
    assert lines[-1].startswith("done: 3 iterations")
    net = SimpleConvNet()
    net.load_params("conv.npz")
    assert net.params["W1"].shape == (30, 1, 5, 5)


def test_cli_network_builder():
    from fastbp.networks import CONV_RECIPE, build_conv_network
    assert CONV_RECIPE == {"optimizer": "adam", "lr": 0.001, "batch_size": 100, "epochs": 20}
    assert isinstance(build_conv_network("conv", rng=0), SimpleConvNet)
    deep = build_conv_network("deep", 30, dtype=np.float32, rng=0)
    assert isinstance(deep, DeepConvNet) and deep.params["W7"].shape == (1024, 30)
    assert deep.params["W1"].dtype == np.float32
    with pytest.raises(ValueError, match="name: expected one of"):
        build_conv_network("resnet")
