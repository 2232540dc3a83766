"""fastbp.training: the book's SGD loop on TwoLayerNet, on both backends."""
import numpy as np
import pytest

import fastbp
from fastbp import TwoLayerNet
from fastbp.datasets import SAMPLE_DIR, load_mnist
from fastbp.optimizers import SGD
from fastbp.training import iterations_per_epoch, train_two_layer

BACKENDS = ["numpy"] + (["cython"] if fastbp.HAVE_CYTHON else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastbp.use_backend(request.param):
        yield request.param


@pytest.fixture(scope="module")
def sample():
    return load_mnist(data_dir=SAMPLE_DIR)


def test_iterations_per_epoch():
    assert iterations_per_epoch(60000, 100) == 600
    assert iterations_per_epoch(5000, 100) == 50
    assert iterations_per_epoch(5050, 100) == 50
    assert iterations_per_epoch(50, 100) == 1  # never 0


def test_sgd_update_is_in_place():
    net = TwoLayerNet(4, 3, 2, rng=0)
    w1 = net.params["W1"]
    before = w1.copy()
    grads = {k: np.ones_like(v) for k, v in net.params.items()}
    SGD(lr=0.5).update(net.params, grads)
    assert net.params["W1"] is w1 and net.layers["Affine1"].W is w1
    np.testing.assert_array_equal(w1, before - 0.5)


def test_training_learns_and_keeps_references(sample, backend):
    (x, t), (xt, tt) = sample
    steps, epochs = [], []
    result = train_two_layer(x, t, xt, tt, iters=120, seed=0,
                             on_step=steps.append, on_epoch=epochs.append)
    net, h = result.network, result.history
    assert steps == list(range(1, 121))
    # 50 iterations per epoch on the sample: two full epochs, then a partial one.
    assert [(e.epoch, e.iteration, e.steps) for e in h.epochs] == [(1, 50, 50), (2, 100, 50), (3, 120, 20)]
    assert epochs == h.epochs
    assert len(h.loss) == 120 and all(np.isfinite(h.loss))
    assert np.mean(h.loss[:10]) > 2.2 and np.mean(h.loss[-10:]) < 1.5  # it learns
    assert h.test_acc[-1] > 0.65 and h.train_acc[-1] > 0.65
    assert h.times == sorted(h.times) and result.seconds >= h.times[-1]
    assert net.layers["Affine1"].W is net.params["W1"] and net.layers["Affine2"].b is net.params["b2"]
    # The recorded accuracies are the network's.
    assert h.test_acc[-1] == pytest.approx(net.accuracy(xt, tt))
    # The recorded epoch loss is the mean of that epoch's batch losses.
    assert h.epochs[2].loss == pytest.approx(np.mean(h.loss[100:120]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(sample, backend, dtype):
    (x, t), (xt, tt) = sample
    net = train_two_layer(x, t, xt, tt, iters=5, dtype=dtype, seed=1).network
    assert all(p.dtype == dtype for p in net.params.values())


def test_seed_makes_runs_repeatable(sample):
    (x, t), (xt, tt) = sample
    runs = {}
    for name in BACKENDS:
        with fastbp.use_backend(name):
            runs[name] = train_two_layer(x, t, xt, tt, iters=30, seed=42)
    a = runs["numpy"]
    b = train_two_layer(x, t, xt, tt, iters=30, seed=42) if len(runs) == 1 else runs["cython"]
    for k in a.network.params:
        np.testing.assert_allclose(a.network.params[k], b.network.params[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.history.loss, b.history.loss, rtol=1e-10)
    c = train_two_layer(x, t, xt, tt, iters=30, seed=43)
    assert not np.array_equal(a.network.params["W1"], c.network.params["W1"])


def test_one_hot_targets_and_given_network(sample):
    (x, t), (xt, tt) = sample
    onehot = np.eye(10, dtype=np.float32)[t]
    net = TwoLayerNet(784, 20, 10, rng=0)
    w1 = net.params["W1"]
    result = train_two_layer(x[:500], onehot[:500], xt[:100], tt[:100], iters=10, network=net, seed=0)
    assert result.network is net and net.params["W1"] is w1
    assert 0.0 <= result.history.test_acc[-1] <= 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"iters": 0}, "iters"),
    ({"batch_size": 0}, "batch_size"),
    ({"hidden_size": 2.5}, "hidden_size"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
])
def test_bad_arguments(sample, kwargs, match):
    (x, t), (xt, tt) = sample
    with pytest.raises(ValueError, match=match):
        train_two_layer(x, t, xt, tt, **kwargs)


def test_bad_shapes(sample):
    (x, t), (xt, tt) = sample
    with pytest.raises(ValueError, match="x_train"):
        train_two_layer(x.reshape(-1, 1, 28, 28), t, xt, tt, iters=1)
    with pytest.raises(ValueError, match="t_train"):
        train_two_layer(x, t[:10], xt, tt, iters=1)
