"""State on error: a layer's or network's call that raises leaves it exactly as it was
(every network, the CNNs included), and an inference pass (``train_flg=False``) leaves
the last training pass's state alone.

Each case snapshots the whole object (every attribute, arrays by identity *and* content,
layers inside networks, random generators by state), makes a call that must raise, and
compares. Every case runs on both backends.
"""
from collections import OrderedDict

import numpy as np
import pytest

from fastbp.layers import (Affine, AddLayer, BatchNormalization, Dropout, MulLayer, Relu,
                           Sigmoid, SoftmaxWithLoss)
from fastbp.networks import (DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet,
                             TwoLayerNet)
from fastbp.optimizers import SGD, Adam

RNG = np.random.default_rng(11)


def rand(*shape):
    return RNG.standard_normal(shape)


def snapshot(obj, _seen=None):
    """Everything about ``obj`` that a call could change, as a comparable value."""
    seen = set() if _seen is None else _seen
    if isinstance(obj, np.ndarray):
        return ("array", id(obj), obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, np.random.Generator):
        return ("rng", id(obj), repr(obj.bit_generator.state))
    if isinstance(obj, (dict, OrderedDict)):
        return (type(obj).__name__, id(obj),
                tuple((k, snapshot(v, seen)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(snapshot(v, seen) for v in obj))
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("fastbp"):
        if id(obj) in seen:
            return ("seen", id(obj))
        seen.add(id(obj))
        return (type(obj).__name__, id(obj), snapshot(vars(obj), seen))
    return ("value", type(obj).__name__, repr(obj))  # repr: NaN equals NaN here


def assert_refused_unchanged(obj, call, exc=(ValueError, TypeError)):
    before = snapshot(obj)
    with pytest.raises(exc):
        call()
    assert snapshot(obj) == before


# --------------------------------------------------------------------------- layers

def test_snapshot_sees_changes():
    """The comparison has teeth: a new array, a changed element, a new attribute value."""
    layer = Affine(rand(3, 2), rand(2))
    layer.forward(rand(4, 3))
    s = snapshot(layer)
    layer.x[0, 0] += 1
    assert snapshot(layer) != s
    s = snapshot(layer)
    layer.x = layer.x.copy()
    assert snapshot(layer) != s
    s = snapshot(layer)
    layer.original_x_shape = (1,)
    assert snapshot(layer) != s
    d = Dropout(0.5, rng=0)
    s = snapshot(d)
    d.rng.random()
    assert snapshot(d) != s


def test_mul_and_add_layers(backend):
    mul = MulLayer()
    mul.forward(rand(2, 3), rand(2, 3))
    assert_refused_unchanged(mul, lambda: mul.forward(rand(2, 3), rand(4)))
    assert_refused_unchanged(mul, lambda: mul.backward(rand(5, 7)))
    add = AddLayer()
    assert_refused_unchanged(add, lambda: add.forward(rand(2, 3), rand(4)))


@pytest.mark.parametrize("make", [Relu, Sigmoid], ids=["Relu", "Sigmoid"])
def test_elementwise_layers(backend, make):
    layer = make()
    layer.forward(rand(3, 4))
    assert_refused_unchanged(layer, lambda: layer.forward(np.ones(3, complex)))
    assert_refused_unchanged(layer, lambda: layer.forward([[1.0], [2.0, 3.0]]))
    assert_refused_unchanged(layer, lambda: layer.backward(rand(4, 3)))
    assert_refused_unchanged(layer, lambda: layer.backward(np.ones((3, 4), complex)))


@pytest.mark.parametrize("x_dtype", [np.float64, np.float32])
def test_affine(backend, x_dtype):
    layer = Affine(rand(4, 3), rand(3))
    layer.forward(rand(2, 4).astype(x_dtype))
    layer.backward(rand(2, 3))  # dW and db are set too, and must survive
    assert_refused_unchanged(layer, lambda: layer.forward(rand(2, 5)))
    assert_refused_unchanged(layer, lambda: layer.forward(rand(6)))
    assert_refused_unchanged(layer, lambda: layer.forward(np.float64(1.0)))
    assert_refused_unchanged(layer, lambda: layer.forward(np.ones((2, 4), np.float16)))
    assert_refused_unchanged(layer, lambda: layer.backward(rand(3, 3)))
    assert_refused_unchanged(layer, lambda: layer.backward(rand(2, 3), dW_out=np.empty((3, 3))))
    assert_refused_unchanged(layer, lambda: layer.backward(rand(2, 3), db_out=np.empty(3, np.float32)))
    assert layer.backward(rand(2, 3)).shape == (2, 4)


def test_softmax_with_loss(backend):
    layer = SoftmaxWithLoss()
    layer.forward(rand(3, 4), np.array([0, 3, 1]))
    for x, t in [(rand(3, 4), [0, 4, 1]), (rand(3, 4), [0, 1]), (rand(4), 9),
                 (rand(3, 4), [0.5, 1, 2]), (rand(3, 4), [np.nan, 1, 2]),
                 (np.empty((0, 4)), np.empty(0, int)), (rand(3, 4), np.eye(3))]:
        assert_refused_unchanged(layer, lambda: layer.forward(x, t))
    assert_refused_unchanged(layer, lambda: layer.backward("a lot"))
    assert layer.backward().shape == (3, 4)
    single = SoftmaxWithLoss()
    single.forward(rand(4), 2)
    assert_refused_unchanged(single, lambda: single.forward(rand(3, 4), [0, 9, 1]))
    assert single.backward().shape == (4,)


@pytest.mark.parametrize("inverted", [True, False])
def test_dropout(backend, inverted):
    layer = Dropout(0.3, inverted=inverted, rng=1)
    layer.forward(rand(4, 5))
    assert_refused_unchanged(layer, lambda: layer.forward(np.ones((4, 5), complex)))
    assert_refused_unchanged(layer, lambda: layer.forward([["a", "b"]], False))
    assert_refused_unchanged(layer, lambda: layer.backward(rand(5, 4)))
    layer.dropout_ratio = 2.0  # refused at the next call, before a mask is drawn
    assert_refused_unchanged(layer, lambda: layer.forward(rand(4, 5)))
    layer.dropout_ratio = 0.3
    # an inference pass of another shape leaves the training pass's mask and scale
    before = snapshot(layer)
    layer.forward(rand(2, 7), train_flg=False)
    assert snapshot(layer) == before
    assert layer.backward(rand(4, 5)).shape == (4, 5)


def _trained_batchnorm(d=3, n=4, shape=None, dtype=np.float64):
    layer = BatchNormalization(np.ones(d, dtype) * 1.5, np.zeros(d, dtype) + 0.1)
    x = rand(*(shape or (n, d))).astype(dtype)
    layer.forward(x)
    layer.backward(rand(*x.shape).astype(dtype))
    return layer, x.shape


def test_batchnorm_refused_forward_keeps_the_training_pass(backend):
    """A wrong-width forward used to record its input shape, so the next backward
    returned a gradient of the refused input's shape."""
    layer, shape = _trained_batchnorm()
    for x in [rand(4, 5), rand(2, 5), rand(5), np.ones((4, 3), complex), rand(2, 5, 1)]:
        for train_flg in (True, False):
            assert_refused_unchanged(layer, lambda: layer.forward(x, train_flg))
    assert_refused_unchanged(layer, lambda: layer.forward(np.empty((0, 3))))  # no statistics
    assert layer.backward(rand(*shape)).shape == shape


def test_batchnorm_refused_backward_keeps_state(backend):
    layer, shape = _trained_batchnorm()
    for dout in [rand(2, 3), rand(4, 5), rand(4), np.float64(1.0), np.ones(shape, complex)]:
        assert_refused_unchanged(layer, lambda: layer.backward(dout))


def test_batchnorm_bad_hyperparameters_leave_the_running_statistics(backend):
    layer, shape = _trained_batchnorm()
    layer.momentum = "fast"
    assert_refused_unchanged(layer, lambda: layer.forward(rand(*shape)))
    layer.momentum, layer.eps = 0.9, "small"
    assert_refused_unchanged(layer, lambda: layer.forward(rand(*shape)))
    assert_refused_unchanged(layer, lambda: layer.forward(rand(*shape), train_flg=False))
    layer.eps = 1e-6
    layer.running_var = np.ones(5)  # a wrong shape, set from outside
    assert_refused_unchanged(layer, lambda: layer.forward(rand(*shape)))
    assert_refused_unchanged(layer, lambda: layer.forward(rand(*shape), train_flg=False))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 1, 1)])
def test_batchnorm_inference_changes_nothing(backend, dtype, shape):
    """A test-mode forward of another batch size (or dtype) leaves the layer as the
    last training-mode forward left it, so backward still pairs with that one."""
    layer, trained = _trained_batchnorm(shape=shape, dtype=dtype)
    xn, std = layer.xn.copy(), layer.std.copy()
    before = snapshot(layer)
    other = (7,) + shape[1:]
    for x in [rand(*other), rand(*other).astype(np.float32), rand(*other).astype(np.float64)]:
        layer.forward(x, train_flg=False)
        assert snapshot(layer) == before
    dx = layer.backward(np.ones(trained, dtype))
    assert dx.shape == trained and dx.dtype == dtype
    np.testing.assert_array_equal(layer.xn, xn)
    np.testing.assert_array_equal(layer.std, std)


def test_batchnorm_inference_before_training_is_the_books(backend):
    """No running statistics yet: zeros for both, as the book's (which creates them)."""
    gamma, beta = np.full(3, 2.0), np.full(3, 0.5)
    layer = BatchNormalization(gamma, beta)
    x = rand(5, 3)
    before = snapshot(layer)
    out = layer.forward(x, train_flg=False)
    assert snapshot(layer) == before
    np.testing.assert_allclose(out, gamma * x / np.sqrt(1e-6) + beta, rtol=1e-12)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((5, 3)))


# --------------------------------------------------------------------------- networks

NETWORKS = {
    "TwoLayerNet": lambda: TwoLayerNet(6, 5, 3, weight_init_std=0.5, rng=0),
    "MultiLayerNet": lambda: MultiLayerNet(6, [5, 4], 3, weight_decay_lambda=0.1, rng=0),
    "Extend": lambda: MultiLayerNetExtend(6, [5, 4], 3, use_dropout=True, dropout_ration=0.2,
                                          use_batchnorm=True, weight_decay_lambda=0.1, rng=0),
    "Extend-sigmoid": lambda: MultiLayerNetExtend(6, [5], 3, activation="sigmoid",
                                                  use_batchnorm=True, rng=0),
}

BAD_BATCHES = {
    "label too large": (rand(4, 6), [0, 1, 2, 3]),
    "negative label": (rand(4, 6), [0, -1, 2, 1]),
    "fractional label": (rand(4, 6), [0, 0.5, 2, 1]),
    "NaN label": (rand(4, 6), [0, np.nan, 2, 1]),
    "one label for the batch": (rand(4, 6), [1]),
    "too many labels": (rand(4, 6), [0, 1, 2, 1, 0]),
    "one-hot of the wrong width": (rand(4, 6), np.eye(4)),
    "string labels": (rand(4, 6), ["a", "b", "c", "d"]),
    "3-D targets": (rand(4, 6), np.zeros((4, 3, 1))),
    "empty batch": (np.empty((0, 6)), np.empty(0, int)),
    "wrong width": (rand(4, 7), [0, 1, 2, 1]),
    "complex input": (np.ones((4, 6), complex), [0, 1, 2, 1]),
    "single sample, bad label": (rand(6), 3),
}


def _used(name):
    """A network after a training step and an evaluation, so every layer has state."""
    net = NETWORKS[name]()
    x, t = rand(8, 6), RNG.integers(0, 3, 8)
    net.train_step(x, t, SGD(lr=0.1))
    net.accuracy(x, t)
    return net


def _calls(net):
    calls = {
        "loss": net.loss,
        "accuracy": net.accuracy,
        "gradient": net.gradient,
        "train_step": lambda x, t: net.train_step(x, t, SGD(lr=0.1)),
    }
    if not isinstance(net, TwoLayerNet):
        calls["loss(train_flg=True)"] = lambda x, t: net.loss(x, t, train_flg=True)
    return calls


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_call_that_raises_leaves_it_unchanged(backend, name, case):
    net = _used(name)
    x, t = BAD_BATCHES[case]
    for call in _calls(net).values():
        assert_refused_unchanged(net, lambda: call(x, t))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_numerical_gradient_that_raises_leaves_it_unchanged(backend, name):
    net = _used(name)
    assert_refused_unchanged(net, lambda: net.numerical_gradient(rand(4, 6), [0, 1, 5, 1]))


@pytest.mark.parametrize("name", ["Extend", "Extend-sigmoid"])
def test_batchnorm_network_refuses_before_its_first_layer(backend, name):
    """What BatchNormalization refuses (a single sample, an empty training batch) is
    refused before Affine1 records the input."""
    net = _used(name)
    assert_refused_unchanged(net, lambda: net.predict(rand(6)))
    assert_refused_unchanged(net, lambda: net.predict(rand(6), train_flg=True))
    assert_refused_unchanged(net, lambda: net.predict(np.empty((0, 6)), train_flg=True))
    assert_refused_unchanged(net, lambda: net.loss(rand(6), 1))
    assert net.predict(np.empty((0, 6))).shape == (0, 3)  # test mode: fine


def test_network_inference_leaves_batchnorm_and_dropout_training_state(backend):
    net = _used("Extend")
    kept = {k: snapshot(layer) for k, layer in net.layers.items()
            if isinstance(layer, (Dropout, BatchNormalization))}
    net.accuracy(rand(9, 6), RNG.integers(0, 3, 9))
    net.predict(rand(2, 6))
    net.loss(rand(5, 6), RNG.integers(0, 3, 5))
    assert {k: snapshot(net.layers[k]) for k in kept} == kept


# --------------------------------------------------------------------------- CNNs

CNNS = {
    "SimpleConvNet": lambda rng: SimpleConvNet(
        input_dim=(1, 6, 6), conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=5, output_size=3, weight_init_std=0.3, rng=rng),
    "DeepConvNet": lambda rng: DeepConvNet(input_dim=(1, 8, 8), hidden_size=5, output_size=3,
                                           rng=rng),
}


def _images(name, n):
    return rand(n, 1, 6, 6) if name == "SimpleConvNet" else rand(n, 1, 8, 8)


def _bad_cnn_batches(name):
    x = _images(name, 4)
    side = x.shape[-1]
    return {
        "label too large": (x, [0, 1, 2, 3]),
        "negative label": (x, [0, -1, 2, 1]),
        "fractional label": (x, [0, 0.5, 2, 1]),
        "NaN label": (x, [0, np.nan, 2, 1]),
        "one label for the batch": (x, [1]),
        "too many labels": (x, [0, 1, 2, 1, 0]),
        "one-hot of the wrong width": (x, np.eye(4)),
        "column with a bad label": (x, np.array([[0], [1], [2], [3]])),
        "string labels": (x, ["a", "b", "c", "d"]),
        "3-D targets": (x, np.zeros((4, 3, 1))),
        "empty batch": (x[:0], np.empty(0, int)),
        "flattened images": (x.reshape(4, -1), [0, 1, 2, 1]),
        "smaller images": (x[:, :, 1:, 1:], [0, 1, 2, 1]),
        "larger images": (np.pad(x, ((0, 0), (0, 0), (0, 2), (0, 2))), [0, 1, 2, 1]),
        "two channels": (np.concatenate([x, x], axis=1), [0, 1, 2, 1]),
        "complex images": (np.ones((4, 1, side, side), complex), [0, 1, 2, 1]),
    }


def _used_cnn(name, rng=0):
    """A CNN after a training step and an evaluation, so every layer has state."""
    net = CNNS[name](rng)
    x, t = _images(name, 5), RNG.integers(0, 3, 5)
    SGD(lr=0.1).update(net.params, net.gradient(x, t))
    net.accuracy(x, t)
    return net


def _cnn_calls(net):
    calls = {"loss": net.loss, "accuracy": net.accuracy, "gradient": net.gradient}
    if hasattr(net, "train_step"):
        calls["train_step SGD"] = lambda x, t: net.train_step(x, t, SGD(lr=0.1))
        calls["train_step Adam"] = lambda x, t: net.train_step(x, t, Adam())
    if isinstance(net, SimpleConvNet):
        calls["numerical_gradient"] = net.numerical_gradient
    return calls


@pytest.mark.parametrize("case", sorted(_bad_cnn_batches("SimpleConvNet")))
@pytest.mark.parametrize("name", sorted(CNNS))
def test_cnn_call_that_raises_leaves_it_unchanged(backend, name, case):
    """The CNNs check the images and the targets before their first layer runs (they
    used to run every layer, and draw DeepConvNet's dropout masks, first)."""
    net = _used_cnn(name)
    x, t = _bad_cnn_batches(name)[case]
    for call in _cnn_calls(net).values():
        assert_refused_unchanged(net, lambda: call(x, t))
    if case in ("flattened images", "smaller images", "larger images", "two channels",
                "complex images"):
        assert_refused_unchanged(net, lambda: net.predict(x))


def test_deep_convnet_refused_call_leaves_the_global_random_state(backend):
    """Without ``rng`` the dropout masks come from NumPy's global state (as the book):
    a refused call must not draw from it, so the next gradient is the one a network
    that never saw the call computes."""
    np.random.seed(3)
    seen, fresh = CNNS["DeepConvNet"](None), CNNS["DeepConvNet"](None)
    for k in fresh.params:
        fresh.params[k][...] = seen.params[k]
    x, t = _images("DeepConvNet", 4), np.array([0, 1, 2, 1])
    np.random.seed(4)
    state = np.random.get_state()[1].copy()
    with pytest.raises(ValueError):
        seen.gradient(x, [0, 1, 2, 3])
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    got = seen.gradient(x, t)
    np.random.seed(4)
    want = fresh.gradient(x, t)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
