"""One set of checks for every network's loss and accuracy inputs, and the Trainer's.

The targets go through the loss kernels' own check (``kernels._checks.targets``) in
every network, before the first layer runs; the accuracy of an empty batch is a
``ValueError`` (undefined), never NaN with a warning.
"""
import warnings

import numpy as np
import pytest

from fastbp.networks import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet
from fastbp.trainer import Trainer

NETWORKS = {
    "TwoLayerNet": lambda: TwoLayerNet(4, 5, 3, weight_init_std=0.5, rng=0),
    "MultiLayerNet": lambda: MultiLayerNet(4, [5], 3, rng=0),
    "Extend": lambda: MultiLayerNetExtend(4, [5, 5], 3, use_batchnorm=True, use_dropout=True,
                                          rng=0),
}

RNG = np.random.default_rng(5)
X = RNG.standard_normal((6, 4))


@pytest.fixture(params=sorted(NETWORKS))
def net(request):
    return NETWORKS[request.param]()


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
        getattr(net, method)(X, t)


def test_empty_batch_is_a_clear_error(backend, net):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" RuntimeWarning on the way
        with raises(ValueError, "x:", "empty batch", "accuracy is undefined"):
            net.accuracy(np.empty((0, 4)), np.empty(0, int))
        with raises(ValueError, "x:", "empty batch", "mean loss is undefined"):
            net.loss(np.empty((0, 4)), np.empty(0, int))


def test_accuracy_of_labels_and_one_hot(backend, net):
    predicted = np.argmax(net.predict(X), axis=1)
    assert net.accuracy(X, predicted) == 1.0
    assert net.accuracy(X, np.eye(3)[predicted]) == 1.0
    assert net.accuracy(X, predicted.astype(float)) == 1.0  # whole floats are labels
    wrong = (predicted + 1) % 3
    assert net.accuracy(X, wrong) == 0.0
    half = np.where(np.arange(6) < 3, predicted, wrong)
    assert net.accuracy(X, half) == 0.5
    assert net.accuracy(X.tolist(), half.tolist()) == 0.5


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
