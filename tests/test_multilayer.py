"""MultiLayerNet and MultiLayerNetExtend: the book's structure, gradient checks, float32,
and the MNIST proof (Adam, 5 epochs)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from _mnist import FULL_DIR

import fastbp
from fastbp import MultiLayerNet, MultiLayerNetExtend, Trainer, kernels, load_mnist
from fastbp.layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid
from fastbp.optimizers import Adam

BACKENDS = ["numpy"] + (["cython"] if kernels.HAVE_CYTHON else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastbp.use_backend(request.param):
        yield request.param


def _data(n=5, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, c, n)


# --------------------------------------------------------------------------- structure

def test_multilayernet_has_the_books_names_and_shares_its_params():
    net = MultiLayerNet(6, [5, 4], 3, rng=0)
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert list(net.layers) == ["Affine1", "Activation_function1", "Affine2",
                                "Activation_function2", "Affine3"]
    assert isinstance(net.layers["Activation_function1"], Relu)
    for i in (1, 2, 3):
        assert net.layers[f"Affine{i}"].W is net.params[f"W{i}"]
        assert net.layers[f"Affine{i}"].b is net.params[f"b{i}"]
    assert net.params["W2"].shape == (5, 4) and net.params["b3"].shape == (3,)
    assert isinstance(MultiLayerNet(6, [5], 3, activation="sigmoid").layers["Activation_function1"], Sigmoid)


def test_extend_has_the_books_names():
    net = MultiLayerNetExtend(6, [5, 4], 3, use_dropout=True, dropout_ration=0.2,
                              use_batchnorm=True, rng=0)
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
                                "Affine2", "BatchNorm2", "Activation_function2", "Dropout2",
                                "Affine3"]
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3",
                                "gamma1", "beta1", "gamma2", "beta2"]
    assert isinstance(net.layers["BatchNorm2"], BatchNormalization)
    assert net.layers["BatchNorm2"].gamma is net.params["gamma2"]
    assert isinstance(net.layers["Dropout1"], Dropout) and net.layers["Dropout1"].dropout_ratio == 0.2
    assert np.all(net.params["gamma1"] == 1) and np.all(net.params["beta1"] == 0)


@pytest.mark.parametrize("init,factor", [("relu", 2.0), ("he", 2.0), ("sigmoid", 1.0),
                                          ("xavier", 1.0), (0.01, None)])
def test_initialisation_draws_what_the_book_draws(init, factor):
    np.random.seed(3)
    net = MultiLayerNet(20, [10, 8], 4, weight_init_std=init)
    np.random.seed(3)
    sizes = [20, 10, 8, 4]
    for i in range(1, 4):
        scale = np.sqrt(factor / sizes[i - 1]) if factor else init
        np.testing.assert_array_equal(net.params[f"W{i}"],
                                      scale * np.random.randn(sizes[i - 1], sizes[i]))
        assert np.all(net.params[f"b{i}"] == 0)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="activation"):
        MultiLayerNet(4, [3], 2, activation="tanh")
    with pytest.raises(ValueError, match="weight_init_std"):
        MultiLayerNet(4, [3], 2, weight_init_std="lecun")
    with pytest.raises(TypeError, match="dtype"):
        MultiLayerNet(4, [3], 2, dtype=np.int32)


def test_rng_makes_networks_repeatable():
    a = MultiLayerNetExtend(6, [5], 3, use_dropout=True, rng=7)
    b = MultiLayerNetExtend(6, [5], 3, use_dropout=True, rng=7)
    x, t = _data()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    ga, gb = a.gradient(x, t), b.gradient(x, t)
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k])


# --------------------------------------------------------------------------- gradients

def _check(net, x, t, tol=1e-6, reseed=None):
    """Backprop against central differences (training mode), every parameter."""
    if reseed is not None:  # dropout: the same masks at every evaluation
        loss = net.loss

        def fixed(x_, t_, train_flg=False):
            np.random.seed(reseed)
            return loss(x_, t_, train_flg)

        net.loss = fixed
    num = net.numerical_gradient(x, t)
    grad = net.gradient(x, t)
    assert set(grad) == set(num)
    for k in num:
        # relative error, with a floor: a bias before batch norm has a zero gradient
        err = np.max(np.abs(grad[k] - num[k])) / max(np.max(np.abs(num[k])), 1e-3)
        assert err < tol, (k, err)
    return grad


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("decay", [0, 0.1])
def test_multilayernet_gradient_check(backend, activation, decay):
    x, t = _data()
    net = MultiLayerNet(6, [5, 4], 3, activation=activation, weight_init_std=activation,
                        weight_decay_lambda=decay, rng=1)
    grads = _check(net, x, t)
    if decay:  # the decay term is in the gradient, and the layer's dW stays the raw one
        np.testing.assert_allclose(grads["W2"] - net.layers["Affine2"].dW,
                                   decay * net.params["W2"], rtol=1e-12)


def test_weight_decay_is_in_the_loss(backend):
    x, t = _data()
    plain = MultiLayerNet(6, [5], 3, rng=2)
    decayed = MultiLayerNet(6, [5], 3, weight_decay_lambda=0.3, rng=2)
    penalty = 0.5 * 0.3 * sum(np.sum(decayed.params[k] ** 2) for k in ("W1", "W2"))
    assert decayed.loss(x, t) == pytest.approx(plain.loss(x, t) + penalty, rel=1e-14)


@pytest.mark.parametrize("decay", [0, 0.05])
def test_extend_batchnorm_gradient_check(backend, decay):
    x, t = _data(n=6)
    net = MultiLayerNetExtend(6, [5, 4], 3, weight_decay_lambda=decay, use_batchnorm=True, rng=3)
    grads = _check(net, x, t)
    assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(grads)


def test_extend_dropout_and_batchnorm_gradient_check(backend):
    x, t = _data(n=6)
    net = MultiLayerNetExtend(6, [5, 4], 3, use_dropout=True, dropout_ration=0.3,
                              use_batchnorm=True, weight_decay_lambda=0.05)
    _check(net, x, t, reseed=4)


def test_single_sample_input(backend):
    net = MultiLayerNet(6, [5], 3, rng=0)
    x, _ = _data(n=1)
    np.testing.assert_allclose(net.predict(x[0]), net.predict(x)[0], rtol=1e-15)


def test_predict_modes(backend):
    x, _ = _data(n=8)
    net = MultiLayerNetExtend(6, [5], 3, use_dropout=True, use_batchnorm=True, rng=0)
    a = net.predict(x)
    np.testing.assert_array_equal(a, net.predict(x))  # test mode is deterministic
    assert not np.allclose(net.predict(x, train_flg=True), net.predict(x, train_flg=True))


def test_accuracy_takes_labels_or_one_hot(backend):
    x, t = _data(n=20)
    net = MultiLayerNet(6, [5], 3, rng=0)
    onehot = np.eye(3)[t]
    assert net.accuracy(x, t) == net.accuracy(x, onehot)
    assert net.accuracy(x, np.argmax(net.predict(x), axis=1)) == 1.0


@pytest.mark.parametrize("extend", [False, True])
def test_float32_end_to_end(backend, extend):
    x, t = _data(n=30, d=12, c=4)
    x = x.astype(np.float32)
    if extend:
        net = MultiLayerNetExtend(12, [10, 8], 4, dtype=np.float32, use_batchnorm=True,
                                  use_dropout=True, weight_decay_lambda=0.01, rng=0)
    else:
        net = MultiLayerNet(12, [10, 8], 4, dtype=np.float32, weight_decay_lambda=0.01, rng=0)
    assert all(p.dtype == np.float32 for p in net.params.values())
    opt = Adam(lr=0.01)
    first = net.loss(x, t)
    for _ in range(30):
        grads = net.gradient(x, t)
        assert all(g.dtype == np.float32 for g in grads.values()), {k: g.dtype for k, g in grads.items()}
        opt.update(net.params, grads)
    assert all(p.dtype == np.float32 for p in net.params.values())
    assert all(s.dtype == np.float32 for s in opt.m.values())
    assert net.predict(x).dtype == np.float32
    last = net.loss(x, t)
    assert np.isfinite(last) and last < first


def test_float32_network_starts_from_the_float64_draws():
    a = MultiLayerNet(12, [10, 8], 4, rng=0)
    b = MultiLayerNet(12, [10, 8], 4, dtype=np.float32, rng=0)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k].astype(np.float32), b.params[k])


def test_gradient_does_not_need_the_input_gradient(backend):
    """The first layer's dx is skipped; the parameter gradients are unchanged."""
    x, t = _data(n=7)
    net = MultiLayerNet(6, [5, 4], 3, rng=5)
    grads = net.gradient(x, t)
    dout = net.last_layer.backward(1)
    for layer in reversed(list(net.layers.values())):
        dout = layer.backward(dout)
    assert isinstance(net.layers["Affine1"], Affine)
    np.testing.assert_array_equal(grads["W1"], net.layers["Affine1"].dW)
    assert dout.shape == x.shape


# --------------------------------------------------------------------------- MNIST

def _mnist(root):
    """The full set through fastbp's checked loader; pixels / 255 in float64."""
    (x_tr, t_tr), (x_te, t_te) = load_mnist(normalize=False, data_dir=root)
    assert x_tr.shape == (60000, 784) and x_te.shape == (10000, 784)
    return x_tr / 255.0, t_tr.astype(np.intp), x_te / 255.0, t_te.astype(np.intp)


def _mnist_run(root):
    """Train 784-100-100-100-10 with Adam for 5 epochs; print the result as JSON."""
    x_tr, t_tr, x_te, t_te = _mnist(root)
    net = MultiLayerNet(784, [100, 100, 100], 10, rng=0)
    trainer = Trainer(net, x_tr, t_tr, x_te, t_te, epochs=5, mini_batch_size=100,
                      optimizer="Adam", optimizer_param={"lr": 0.001}, verbose=False,
                      sampler="shuffle", rng=0)
    start = time.perf_counter()
    acc = trainer.train()
    print(json.dumps({"acc": float(acc), "seconds": time.perf_counter() - start,
                      "backend": fastbp.get_backend(),
                      "test_acc_list": [float(a) for a in trainer.test_acc_list]}))


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.skipif(not FULL_DIR, reason="FASTBP_DATA is not set (full MNIST)")
def test_mnist_multilayernet_adam_5_epochs():
    """784-100-100-100-10, Adam (lr 0.001), batch 100, 5 epochs on the full MNIST.

    Runs in a child process with one BLAS thread: on a shared machine, BLAS threads
    fighting for the cores made this run take 164 s instead of 20 s. Over the seeds 0 to 7
    the final accuracy was 0.9716 to 0.9788 (mean 0.9750); seed 0 gives 0.9755 on both
    backends and in float32 too.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_multilayer as m; "
            "m._mnist_run(sys.argv[2])")
    proc = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)),
         FULL_DIR],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"MNIST 784-100-100-100-10 Adam, 5 epochs ({result['backend']}): "
          f"test accuracy {result['acc']:.4f}, {result['seconds']:.1f} s")
    assert len(result["test_acc_list"]) == 5 and result["test_acc_list"][-1] == result["acc"]
    assert result["acc"] >= 0.975
