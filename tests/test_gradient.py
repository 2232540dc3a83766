"""Backpropagation against numerical differentiation, layer by layer and for TwoLayerNet."""
import numpy as np
import pytest

from fastbp import (Affine, Relu, Sigmoid, SoftmaxWithLoss, TwoLayerNet, kernels,
                    numerical_gradient, use_backend)

from _mnist import load


def check_layer_gradient(forward, backward, x, rng, atol=1e-8):
    """dL/dx from backward vs central differences, for L = sum(forward(x) * G)."""
    G = rng.standard_normal(np.shape(forward(x)))
    numeric = numerical_gradient(lambda z: np.sum(forward(z) * G), x)
    forward(x)
    np.testing.assert_allclose(backward(G), numeric, atol=atol, rtol=1e-6)


def test_numerical_gradient_of_a_quadratic():
    x = np.array([3.0, -4.0])
    g = numerical_gradient(lambda z: np.sum(z ** 2), x)
    np.testing.assert_allclose(g, [6.0, -8.0], rtol=1e-9)
    np.testing.assert_array_equal(x, [3.0, -4.0])  # restored


def test_numerical_gradient_restores_on_error():
    x = np.array([1.0, 2.0])
    calls = []

    def f(z):
        calls.append(z.copy())
        if len(calls) == 2:
            raise KeyError("boom")
        return z.sum()

    with pytest.raises(KeyError):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])


def test_numerical_gradient_refuses_integer_arrays():
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array.*int64"):
        numerical_gradient(lambda z: z.sum(), np.array([1, 2]))
    with pytest.raises(TypeError, match="ndarray"):
        numerical_gradient(lambda z: z, 3.0)


def test_relu_gradient(backend, rng):
    layer = Relu()
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink, where h would straddle it
    check_layer_gradient(layer.forward, layer.backward, x, rng)


def test_sigmoid_gradient(backend, rng):
    layer = Sigmoid()
    check_layer_gradient(layer.forward, layer.backward, rng.standard_normal((4, 5)) * 3, rng)


def test_affine_gradients(backend, rng):
    W, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    layer = Affine(W, b)
    x = rng.standard_normal((4, 2, 3))
    G = rng.standard_normal((4, 3))
    loss = lambda _: np.sum(layer.forward(x) * G)  # noqa: E731
    num_W, num_b = numerical_gradient(loss, W), numerical_gradient(loss, b)
    layer.forward(x)
    dx = layer.backward(G)
    np.testing.assert_allclose(layer.dW, num_W, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(layer.db, num_b, rtol=1e-7, atol=1e-9)
    check_layer_gradient(layer.forward, layer.backward, x, rng)
    assert dx.shape == x.shape


@pytest.mark.parametrize("target", ["labels", "onehot"])
def test_softmax_with_loss_gradient(backend, rng, target):
    layer = SoftmaxWithLoss()
    x = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, 5)
    t = labels if target == "labels" else np.eye(4)[labels]
    numeric = numerical_gradient(lambda z: layer.forward(z, t), x)
    layer.forward(x, t)
    np.testing.assert_allclose(layer.backward(), numeric, atol=1e-10, rtol=1e-6)


def two_layer_gradient_diffs(x, t):
    np.random.seed(0)  # the book's global-state initialisation
    net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    numeric = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    return {k: float(np.mean(np.abs(backprop[k] - numeric[k]))) for k in numeric}


def test_two_layer_net_gradient_check_mnist(backend, mnist_dir):
    """The book's check on three real digits: well under 1e-7 for every parameter."""
    x, t = load(mnist_dir, "train")
    diffs = two_layer_gradient_diffs(x[:3], np.eye(10)[t[:3]])
    assert max(diffs.values()) < 1e-9, diffs


def test_two_layer_net_gradient_check_synthetic(backend, rng):
    x = rng.random((3, 784)).astype(np.float32)
    diffs = two_layer_gradient_diffs(x, np.array([3, 1, 4]))
    assert max(diffs.values()) < 1e-9, diffs


@pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")
def test_backends_agree_on_a_whole_gradient(rng):
    """float64, relative to the largest entry of each gradient: 1e-10."""
    x = rng.random((100, 784))
    t = rng.integers(0, 10, 100)
    net = TwoLayerNet(784, 50, 10, rng=3)
    grads = {}
    for name in ("numpy", "cython"):
        with use_backend(name):
            grads[name] = {k: v.copy() for k, v in net.gradient(x, t).items()}
            grads[name]["loss"] = np.array(net.lastLayer.loss)
    for k, ref in grads["numpy"].items():
        err = np.max(np.abs(grads["cython"][k] - ref)) / np.max(np.abs(ref))
        assert err < 1e-10, (k, err)
