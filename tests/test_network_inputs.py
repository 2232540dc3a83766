"""One set of checks for every network's loss and accuracy inputs, and the Trainer's.

The targets go through the loss kernels' own check (``kernels._checks.targets``) in
every network (the CNNs included), before the first layer runs; labels as a column
(N, 1) are labels everywhere; the accuracy of an empty batch is a ``ValueError``
(undefined), never NaN with a warning. The CNNs refuse images that are not of their
``input_dim`` by that name, and a flattened batch with a pointer to
``load_mnist(flatten=False)``.
"""
import warnings

import numpy as np
import pytest

from fastbp.networks import (DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet,
                             TwoLayerNet)
from fastbp.trainer import Trainer

NETWORKS = {
    "TwoLayerNet": lambda: TwoLayerNet(4, 5, 3, weight_init_std=0.5, rng=0),
    "MultiLayerNet": lambda: MultiLayerNet(4, [5], 3, rng=0),
    "Extend": lambda: MultiLayerNetExtend(4, [5, 5], 3, use_batchnorm=True, use_dropout=True,
                                          rng=0),
    "SimpleConvNet": lambda: SimpleConvNet(
        input_dim=(1, 6, 6), conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
        hidden_size=5, output_size=3, weight_init_std=0.3, rng=0),
    "DeepConvNet": lambda: DeepConvNet(input_dim=(1, 8, 8), hidden_size=5, output_size=3, rng=0),
}

RNG = np.random.default_rng(5)
X = RNG.standard_normal((6, 4))
IMAGES = {"SimpleConvNet": RNG.random((6, 1, 6, 6)), "DeepConvNet": RNG.random((6, 1, 8, 8))}


class _Case:
    """A network and a batch of six samples it takes."""

    def __init__(self, name):
        self.name, self.net, self.x = name, NETWORKS[name](), IMAGES.get(name, X)

    def __getattr__(self, attr):
        return getattr(self.net, attr)


@pytest.fixture(params=sorted(NETWORKS))
def net(request):
    return _Case(request.param)


def raises(exc, *words):
    """``pytest.raises`` that also checks every word is in the message."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            suppressed = self.ctx.__exit__(*args)
            for word in words:
                assert word in str(self.info.value), (word, str(self.info.value))
            return suppressed
    return _Check()


@pytest.mark.parametrize("t,exc,words", [
    ([1], ValueError, ["t:", "6 labels", "(1,)"]),            # would broadcast: accuracy 1.0
    ([0, 1, 2], ValueError, ["t:", "6 labels", "(3,)"]),      # a raw broadcasting error
    ([0, 1, 2, 0, 1, 2, 0], ValueError, ["t:", "6 labels", "(7,)"]),
    ([0, -1, 2, 0, 1, 2], ValueError, ["t:", "[0, 3)", "-1"]),
    ([0, 7, 2, 0, 1, 2], ValueError, ["t:", "[0, 3)", "7"]),
    ([0, np.nan, 2, 0, 1, 2], ValueError, ["t:", "whole numbers", "NaN"]),
    ([0, 0.5, 2, 0, 1, 2], ValueError, ["t:", "whole numbers"]),
    (np.eye(4)[[0, 1, 2, 0, 1, 2]], ValueError, ["t:", "(6, 3)", "(6, 4)"]),
    (np.zeros((6, 3, 1)), ValueError, ["t:", "(6,)", "(6, 3, 1)"]),
    (np.array(["a"] * 6), TypeError, ["t:"]),
    (np.ones(6, bool), TypeError, ["t:", "bool"]),
])
@pytest.mark.parametrize("method", ["accuracy", "loss"])
def test_bad_targets_are_refused_alike(backend, net, method, t, exc, words):
    with raises(exc, *words):
        getattr(net, method)(net.x, t)


def test_empty_batch_is_a_clear_error(backend, net):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" RuntimeWarning on the way
        with raises(ValueError, "x:", "empty batch", "accuracy is undefined"):
            net.accuracy(net.x[:0], np.empty(0, int))
        with raises(ValueError, "x:", "empty batch", "mean loss is undefined"):
            net.loss(net.x[:0], np.empty(0, int))


def test_accuracy_of_labels_and_one_hot(backend, net):
    x = net.x
    predicted = np.argmax(net.predict(x), axis=1)
    assert net.accuracy(x, predicted) == 1.0
    assert net.accuracy(x, np.eye(3)[predicted]) == 1.0
    assert net.accuracy(x, predicted.astype(float)) == 1.0  # whole floats are labels
    wrong = (predicted + 1) % 3
    assert net.accuracy(x, wrong) == 0.0
    half = np.where(np.arange(6) < 3, predicted, wrong)
    assert net.accuracy(x, half) == 0.5
    assert net.accuracy(x.tolist(), half.tolist()) == 0.5


def test_label_columns_are_labels_everywhere(backend, net):
    """(N, 1) labels, as the book's ch07/gradient_check.py passes them: the same loss,
    gradient and accuracy as (N,) labels, for every network (the CNNs' accuracy read
    the column as one-hot and said 0.0; TwoLayerNet and MultiLayerNet refused it)."""
    x = net.x
    predicted = np.argmax(net.predict(x), axis=1)
    column = predicted.reshape(-1, 1)
    assert net.accuracy(x, column) == net.accuracy(x, predicted) == 1.0
    assert net.accuracy(x, ((predicted + 1) % 3).reshape(-1, 1)) == 0.0
    if net.name not in ("Extend", "DeepConvNet"):  # no dropout masks drawn in between
        assert net.loss(x, column) == net.loss(x, predicted)
        g1, g2 = net.gradient(x, column), net.gradient(x, predicted)
        for key in g1:
            np.testing.assert_array_equal(g1[key], g2[key])
    with raises(ValueError, "t:", "[0, 3)"):
        net.accuracy(x, np.full((6, 1), 3))
    with raises(ValueError, "t:", "[0, 3)"):
        net.loss(x, np.full((6, 1), -1))


def test_a_single_class_takes_its_column_as_one_hot(backend):
    """With one class, (N, 1) is also the one-hot shape: it is read as one-hot, as by
    SoftmaxWithLoss, and a label column cannot be told apart."""
    net = TwoLayerNet(4, 5, 1, rng=0)
    assert net.accuracy(X, np.ones((6, 1))) == 1.0
    assert net.loss(X, np.ones((6, 1))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["SimpleConvNet", "DeepConvNet"])
def test_cnn_image_shape_errors_name_input_dim(backend, name):
    """A wrongly sized image names the network's input_dim (it used to name an inner
    Affine's feature count, 4320 for the book's SimpleConvNet); a flattened batch
    points at load_mnist(flatten=False)."""
    net = NETWORKS[name]()
    side = 6 if name == "SimpleConvNet" else 8
    x = IMAGES[name]
    t = np.zeros(6, int)
    for method in ("predict", "loss", "accuracy", "gradient"):
        call = getattr(net, method)
        args = (x.reshape(6, -1),) if method == "predict" else (x.reshape(6, -1), t)
        with raises(ValueError, "x:", f"(N, 1, {side}, {side})", f"input_dim (1, {side}, {side})",
                    f"(6, {side * side})", "load_mnist(flatten=False)"):
            call(*args)
        small = x[:, :, 1:, 1:]
        args = (small,) if method == "predict" else (small, t)
        with raises(ValueError, "x:", f"input_dim (1, {side}, {side})",
                    f"(6, 1, {side - 1}, {side - 1})") as info:
            call(*args)
        assert "load_mnist" not in str(info.value)


def test_book_simple_convnet_image_error_names_input_dim(backend):
    net = SimpleConvNet(rng=0)
    with raises(ValueError, "input_dim (1, 28, 28)", "(2, 1, 24, 24)") as info:
        net.predict(np.zeros((2, 1, 24, 24)))
    assert "4320" not in str(info.value)
    with raises(ValueError, "(2, 784)", "load_mnist(flatten=False)"):
        net.loss(np.zeros((2, 784)), [1, 2])


@pytest.mark.parametrize("make, words", [
    (lambda: DeepConvNet(input_dim=(1, 2, 2)), ["input_dim", "(1, 2, 2)", "pooling"]),
    (lambda: DeepConvNet(input_dim=(1, 1, 1)), ["input_dim", "(1, 1, 1)", "conv_param_2"]),
    (lambda: SimpleConvNet(input_dim=(1, 3, 3)), ["input_dim", "(1, 3, 3)", "conv_param"]),
    (lambda: SimpleConvNet(input_dim=(1, 5, 5)), ["input_dim", "(1, 5, 5)", "pooling"]),
    (lambda: SimpleConvNet(conv_param={"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 0}),
     ["conv_param", "stride", "0"]),
    (lambda: DeepConvNet(conv_param_3={"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 0}),
     ["conv_param_3", "stride", "0"]),
    (lambda: SimpleConvNet(conv_param={"filter_num": 3, "filter_size": 3, "pad": -1, "stride": 1}),
     ["conv_param", "pad", "-1"]),
    (lambda: SimpleConvNet(conv_param={"filter_num": 0, "filter_size": 3, "pad": 0, "stride": 1}),
     ["conv_param", "filter_num"]),
    (lambda: SimpleConvNet(conv_param={"filter_num": 3, "pad": 0, "stride": 1}),
     ["conv_param", "missing filter_size"]),
    (lambda: SimpleConvNet(input_dim=(1, 28)), ["input_dim", "(1, 28)"]),
    (lambda: DeepConvNet(input_dim=(0, 28, 28)), ["input_dim"]),
])
def test_cnn_constructor_errors_name_the_argument(make, words):
    """A stride of 0 or an input too small for the network's windows used to raise
    ZeroDivisionError (or build a network that fails at its first batch)."""
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_cnn_constructor_type_errors():
    with raises(TypeError, "conv_param", "stride"):
        SimpleConvNet(conv_param={"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1.5})
    with raises(TypeError, "conv_param_1"):
        DeepConvNet(conv_param_1=[16, 3, 1, 1])


def test_single_sample(backend):
    """A 1-D ``x`` is one sample, as for the layers: a label or a one-hot row."""
    for name in ("TwoLayerNet", "MultiLayerNet"):
        net = NETWORKS[name]()
        label = int(np.argmax(net.predict(X[0])))
        assert net.accuracy(X[0], label) == 1.0
        assert net.accuracy(X[0], np.eye(3)[label]) == 1.0
        assert net.accuracy(X[0], (label + 1) % 3) == 0.0
        with raises(ValueError, "t:", "[0, 3)", "3"):
            net.accuracy(X[0], 3)
        assert np.isfinite(net.loss(X[0], label))


# --------------------------------------------------------------------------- Trainer

class _Net:
    params = {}

    def gradient(self, x, t):
        return {}

    def loss(self, x, t):
        return 0.0

    def accuracy(self, x, t):
        return 1.0


@pytest.mark.parametrize("k", [0, -5, 2.5, True, "10"])
def test_trainer_evaluate_sample_num_per_epoch_is_checked(k):
    x, t = np.zeros((10, 2)), np.zeros(10, int)
    with raises(ValueError, "evaluate_sample_num_per_epoch", repr(k)):
        Trainer(_Net(), x, t, x, t, evaluate_sample_num_per_epoch=k, verbose=False)


def test_trainer_evaluate_sample_num_per_epoch_accepts_none_and_counts():
    x, t = np.zeros((10, 2)), np.zeros(10, int)
    assert Trainer(_Net(), x, t, x, t, verbose=False).evaluate_sample_num_per_epoch is None
    tr = Trainer(_Net(), x, t, x, t, evaluate_sample_num_per_epoch=np.int64(3), verbose=False)
    assert tr.evaluate_sample_num_per_epoch == 3 and type(tr.evaluate_sample_num_per_epoch) is int
    assert Trainer(_Net(), x, t, x, t, evaluate_sample_num_per_epoch=100,
                   verbose=False).evaluate_sample_num_per_epoch == 100  # more than there are


def test_trainer_refuses_an_empty_test_set():
    x, t = np.zeros((10, 2)), np.zeros(10, int)
    with raises(ValueError, "x_test", "no test samples"):
        Trainer(_Net(), x, t, x[:0], t[:0], verbose=False)


def test_trainer_with_a_real_network_and_bad_labels_changes_nothing(backend):
    """Bad training labels are refused by the network's check at the first step,
    before any parameter is updated."""
    x, t = RNG.standard_normal((20, 4)), RNG.integers(3, 5, 20)  # every label too large
    net = NETWORKS["TwoLayerNet"]()
    before = {k: v.copy() for k, v in net.params.items()}
    tr = Trainer(net, x, t, x, t, epochs=1, mini_batch_size=20, verbose=False)
    with raises(ValueError, "t:", "[0, 3)"):
        tr.train()
    for k, v in net.params.items():
        np.testing.assert_array_equal(v, before[k])
