"""One network protocol: every network derives gradient, train_step, save/load and
accuracy from its layer list; the optimizer owns the update; a new layer with
parameters plugs in by its declaration; the book's API stays (params aliasing the
layers' arrays, gradient's keys, numerical_gradient perturbing in place)."""
import inspect

import numpy as np
import pytest

import fastbp
from fastbp import layers as layers_module
from fastbp.layers import Affine, Convolution, Relu
from fastbp.networks import (DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet,
                             TwoLayerNet)
from fastbp.optimizers import SGD, AdaGrad, Adam, Momentum

SMALL_CONV = dict(input_dim=(1, 7, 7),
                  conv_param={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
                  hidden_size=6, output_size=4, weight_init_std=0.3)

# name -> (factory of a network seeded by its argument, batch shape, classes)
NETWORKS = {
    "TwoLayerNet": (lambda s: TwoLayerNet(8, 6, 4, weight_init_std=0.5, rng=s), (8,), 4),
    "MultiLayerNet": (lambda s: MultiLayerNet(8, [6, 5], 4, weight_decay_lambda=0.3, rng=s),
                      (8,), 4),
    "Extend": (lambda s: MultiLayerNetExtend(8, [6, 5], 4, use_batchnorm=True, use_dropout=True,
                                             dropout_ration=0.2, weight_decay_lambda=0.3, rng=s),
               (8,), 4),
    "SimpleConvNet": (lambda s: SimpleConvNet(**SMALL_CONV, rng=s), (1, 7, 7), 4),
    "DeepConvNet": (lambda s: DeepConvNet(input_dim=(1, 8, 8), hidden_size=6, output_size=4,
                                          rng=s), (1, 8, 8), 4),
}
OPTIMIZERS = {
    "SGD": lambda: SGD(0.05),
    "Momentum": lambda: Momentum(0.05),
    "AdaGrad": lambda: AdaGrad(0.05),
    "Adam": lambda: Adam(0.01),
}


def _batch(name, n=6, seed=0):
    r = np.random.default_rng(seed)
    _, shape, classes = NETWORKS[name]
    return r.standard_normal((n,) + shape), r.integers(0, classes, n)


def _training_loss(net, x, t):
    """``loss`` in training mode (MultiLayerNet's takes ``train_flg``)."""
    if "train_flg" in inspect.signature(net.loss).parameters:
        return net.loss(x, t, train_flg=True)
    return net.loss(x, t)


# --------------------------------------------------------------------------- train_step

@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_train_step_is_gradient_then_update(backend, name, opt):
    """Every network's train_step follows the book's step (gradient, then the
    optimizer's update) to rtol 1e-10, step after step; the twins draw the same dropout
    masks."""
    make = NETWORKS[name][0]
    stepped, book = make(3), make(3)
    opt_a, opt_b = OPTIMIZERS[opt](), OPTIMIZERS[opt]()
    for i in range(4):
        x, t = _batch(name, seed=i)
        stepped.train_step(x, t, opt_a)
        opt_b.update(book.params, book.gradient(x, t))
    for key in book.params:
        np.testing.assert_allclose(stepped.params[key], book.params[key], rtol=1e-10, atol=1e-13,
                                   err_msg=key)
        assert stepped.params[key] is _layer_array(stepped, key)  # still the layers' arrays


def _layer_array(net, key):
    layers = net.layers.values() if isinstance(net.layers, dict) else net.layers
    for layer in layers:
        for name in ("W", "b", "gamma", "beta", "g"):
            if getattr(layer, name, None) is net.params[key]:
                return net.params[key]
    raise AssertionError(f"{key} is held by no layer")


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_train_step_returns_the_loss_before_the_step(backend, name, opt):
    """The loss at the weights the gradient was taken at: what loss() (training mode)
    gives before the step, weight decay included (it used to add the decay of the
    updated weights to the data loss of the old ones)."""
    make = NETWORKS[name][0]
    stepped, probe = make(5), make(5)
    x, t = _batch(name)
    before = _training_loss(probe, x, t)  # the twin draws the same dropout masks
    assert stepped.train_step(x, t, OPTIMIZERS[opt]()) == before


def test_weight_decay_loss_of_the_issue(backend):
    """MultiLayerNet(6, [5], 3, weight_decay_lambda=0.5): train_step returned 2.8744
    where the loss before the step was 4.3673."""
    net = MultiLayerNet(6, [5], 3, weight_decay_lambda=0.5, rng=0)
    r = np.random.default_rng(1)
    x, t = r.standard_normal((10, 6)), r.integers(0, 3, 10)
    for opt in (SGD(0.1), Adam(0.1)):
        before = net.loss(x, t)
        assert net.train_step(x, t, opt) == before
        assert net.loss(x, t) != before


def test_adam_steps_reuse_their_gradient_buffers(backend):
    """A steady-state step writes the Affine gradients into the arrays of the previous
    step; gradient() still returns new arrays."""
    net = TwoLayerNet(8, 6, 4, rng=0)
    opt = Adam()
    x, t = _batch("TwoLayerNet")
    net.train_step(x, t, opt)
    dW = net.layers["Affine1"].dW
    net.train_step(x, t, opt)
    assert net.layers["Affine1"].dW is dW
    grads = net.gradient(x, t)
    assert grads["W1"] is not dW
    net.train_step(x, t, opt)
    assert grads["W1"] is not net.layers["Affine1"].dW
    # another dtype of input: new arrays of that dtype, no error
    net.train_step(x.astype(np.float32), t, opt)
    assert net.layers["Affine1"].dW.dtype == np.float64


def test_fused_sgd_keeps_no_gradient_array(backend):
    net = TwoLayerNet(8, 6, 4, rng=0)
    x, t = _batch("TwoLayerNet")
    net.train_step(x, t, SGD(0.1))
    assert net.layers["Affine1"].dW is None and net.layers["Affine2"].db is None


def test_sgd_subclass_with_its_own_update_is_not_bypassed(backend):
    """The fused form belongs to SGD's rule: a subclass that overrides update gets its
    update called (no type(optimizer) test in the network)."""
    calls = []

    class Halved(SGD):
        def update(self, params, grads):
            calls.append(sorted(grads))
            super().update(params, {k: g / 2 for k, g in grads.items()})

    assert Halved.layer_step is None and SGD.layer_step is not None
    net, ref = TwoLayerNet(8, 6, 4, rng=0), TwoLayerNet(8, 6, 4, rng=0)
    x, t = _batch("TwoLayerNet")
    net.train_step(x, t, Halved(0.2))
    ref.train_step(x, t, SGD(0.1))
    assert calls == [["W1", "W2", "b1", "b2"]]
    for key in net.params:
        np.testing.assert_allclose(net.params[key], ref.params[key], rtol=1e-12)


def test_cnn_images_are_converted_once_at_the_entry(backend, monkeypatch):
    """float32 images into a float64 SimpleConvNet: every layer sees float64 (no
    conversion per layer call), and the results are those of float64 images."""
    seen = []
    for cls in (Convolution, layers_module.Pooling, Relu, Affine):
        for method in ("forward", "backward"):
            original = getattr(cls, method)

            def spy(self, arg, *a, _original=original, **k):
                seen.append((type(self).__name__, np.asarray(arg).dtype))
                return _original(self, arg, *a, **k)
            monkeypatch.setattr(cls, method, spy)
    x, t = _batch("SimpleConvNet")
    x32 = x.astype(np.float32)
    a, b = SimpleConvNet(**SMALL_CONV, rng=1), SimpleConvNet(**SMALL_CONV, rng=1)
    opt_a, opt_b = Adam(), Adam()
    for _ in range(2):
        la = a.train_step(x32, t, opt_a)
        lb = b.train_step(x32.astype(np.float64), t, opt_b)
        assert la == lb
    assert seen and {dtype for _, dtype in seen} == {np.dtype(np.float64)}
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])


# --------------------------------------------------------------------------- a new layer

class Scale:
    """y = x * g (per feature): a layer with a parameter, written against the protocol
    only (the declaration, forward and backward), in no list of fastbp's."""

    trainable = (("g", "dg"),)
    decayed = ("g",)

    def __init__(self, g):
        self.g, self.x, self.dg = g, None, None

    def forward(self, x):
        self.x = x
        return x * self.g

    def backward(self, dout):
        self.dg = (dout * self.x).sum(axis=0)
        return dout * self.g


def _with_scale(seed):
    net = MultiLayerNet(8, [6], 4, weight_decay_lambda=0.2, rng=seed)
    g = np.linspace(0.5, 1.5, 6)
    net.params["g1"] = g
    layers = list(net.layers.items())
    layers.insert(1, ("Scale1", Scale(g)))
    net.layers.clear()
    net.layers.update(layers)
    return net


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_a_new_layer_with_parameters_plugs_in(backend, opt):
    net = _with_scale(0)
    x, t = _batch("MultiLayerNet")
    grads = net.gradient(x, t)
    assert list(grads) == ["W1", "b1", "g1", "W2", "b2"]
    num = net.numerical_gradient(x, t)
    for key in grads:
        np.testing.assert_allclose(grads[key], num[key], rtol=1e-5, atol=1e-8, err_msg=key)
    # the decay term covers the declared weight g too
    plain = net.layers["Affine1"].dW + 0.2 * net.params["W1"]
    np.testing.assert_array_equal(grads["W1"], plain)
    np.testing.assert_allclose(grads["g1"], net.layers["Scale1"].dg + 0.2 * net.params["g1"])
    stepped, book = _with_scale(1), _with_scale(1)
    opt_a, opt_b = OPTIMIZERS[opt](), OPTIMIZERS[opt]()
    for _ in range(3):
        stepped.train_step(x, t, opt_a)
        opt_b.update(book.params, book.gradient(x, t))
    for key in book.params:
        np.testing.assert_allclose(stepped.params[key], book.params[key], rtol=1e-10, err_msg=key)
    assert not np.array_equal(stepped.params["g1"], np.linspace(0.5, 1.5, 6))


def test_a_layer_array_missing_from_params_is_named(backend):
    net = TwoLayerNet(8, 6, 4, rng=0)
    net.layers["Affine2"] = Affine(net.params["W2"].copy(), net.params["b2"])
    x, t = _batch("TwoLayerNet")
    with pytest.raises(ValueError, match=r"params: Affine\.W is not one of the arrays of params"):
        net.gradient(x, t)
    assert net.predict(x).shape == (6, 4)  # predicting needs no keys


# --------------------------------------------------------------------------- the book's API

@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_book_api_kept(backend, name):
    """params alias the layers' arrays, gradient returns the book's keys, the layer
    list is the book's type, numerical_gradient perturbs in place (and restores)."""
    net = NETWORKS[name][0](0)
    keys = list(net.params)
    x, t = _batch(name, n=2)
    grads = net.gradient(x, t)
    assert sorted(grads) == sorted(keys)
    for key in keys:
        _layer_array(net, key)
    assert isinstance(net.layers, list if name == "DeepConvNet" else dict)
    if name == "DeepConvNet":
        return  # no numerical_gradient in the book's; central differences are slow here
    seen = []
    loss = net.loss

    def watched(*args, **kwargs):
        seen.append(net.params["b1"].copy())
        return loss(*args, **kwargs)

    net.loss = watched  # the book's numerical_gradient calls self.loss: so does fastbp's
    before = {k: v.copy() for k, v in net.params.items()}
    net.numerical_gradient(x, t)
    assert any(not np.array_equal(b, before["b1"]) for b in seen)  # perturbed in place
    for key in keys:
        np.testing.assert_array_equal(net.params[key], before[key])


# --------------------------------------------------------------------------- exports

def test_every_network_and_layer_is_exported_at_the_top():
    from fastbp import networks
    names = set(layers_module.__all__) | {"TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend",
                                          "SimpleConvNet", "DeepConvNet"}
    assert names <= set(fastbp.__all__)
    for name in names:
        assert getattr(fastbp, name) is getattr(layers_module, name, None) or \
            getattr(fastbp, name) is getattr(networks, name)
    from fastbp import Convolution as C, DeepConvNet as D, Pooling as P, SimpleConvNet as S  # noqa: F401
    assert not [n for n in fastbp.__all__ if not hasattr(fastbp, n)]

