"""The book's layer API: constructors, attributes, shapes, and where fastbp is stricter."""
import numpy as np
import pytest

import fastbp
from fastbp import (Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss,
                    TwoLayerNet, cross_entropy_error, sigmoid, softmax)


def test_buy_apple_and_orange():
    """The book's computational graph, 5.4: apples and oranges with tax."""
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()
    apple_price = mul_apple.forward(apple, apple_num)
    orange_price = mul_orange.forward(orange, orange_num)
    all_price = add.forward(apple_price, orange_price)
    price = mul_tax.forward(all_price, tax)
    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add.backward(dall_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert price == pytest.approx(715)
    assert (dapple_num, dapple, dorange, dorange_num, dtax) == pytest.approx((110, 2.2, 3.3, 165, 650))


def test_book_module_names():
    from fastbp.functions import cross_entropy_error as ce, sigmoid as s, softmax as sm  # noqa: F401
    from fastbp.gradient import numerical_gradient  # noqa: F401
    from fastbp.layers import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss  # noqa: F401
    from fastbp.networks import TwoLayerNet  # noqa: F401


def test_relu_layer_keeps_callers_dout(backend):
    relu = Relu()
    assert relu.mask is None
    x = np.array([[1.0, -0.5], [-2.0, 3.0]])
    out = relu.forward(x)
    np.testing.assert_array_equal(out, [[1, 0], [0, 3]])
    np.testing.assert_array_equal(relu.mask, [[False, True], [True, False]])
    dout = np.ones((2, 2))
    dx = relu.backward(dout)
    np.testing.assert_array_equal(dx, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(dout, np.ones((2, 2)))  # the book overwrote it
    np.testing.assert_array_equal(x, [[1.0, -0.5], [-2.0, 3.0]])


def test_sigmoid_layer(backend):
    layer = Sigmoid()
    assert layer.out is None
    y = layer.forward(np.array([0.0, 2.0]))
    assert layer.out is y
    np.testing.assert_allclose(y, [0.5, 1 / (1 + np.exp(-2.0))])
    np.testing.assert_allclose(layer.backward(np.ones(2)), y * (1 - y))


def test_affine_layer_attributes(backend, rng):
    W, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    layer = Affine(W, b)
    assert layer.W is W and layer.b is b
    assert layer.x is None and layer.dW is None and layer.db is None
    x = rng.standard_normal((4, 2, 3))  # N-D input: flattened per sample
    out = layer.forward(x)
    np.testing.assert_allclose(out, x.reshape(4, 6) @ W + b)
    assert layer.original_x_shape == (4, 2, 3) and layer.x.shape == (4, 6)
    dout = rng.standard_normal((4, 3))
    dx = layer.backward(dout)
    assert dx.shape == (4, 2, 3)
    np.testing.assert_allclose(dx, (dout @ W.T).reshape(4, 2, 3))
    np.testing.assert_allclose(layer.dW, x.reshape(4, 6).T @ dout)
    np.testing.assert_allclose(layer.db, dout.sum(0))


def test_affine_single_sample(backend, rng):
    W, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    layer = Affine(W, b)
    x = rng.standard_normal(5)
    np.testing.assert_allclose(layer.forward(x), x @ W + b)
    dx = layer.backward(np.ones(3))
    assert dx.shape == (5,)
    np.testing.assert_allclose(dx, W.sum(1))
    np.testing.assert_allclose(layer.dW, np.outer(x, np.ones(3)))


def test_affine_holds_parameters_by_reference(backend, rng):
    """The aliasing contract: in-place updates of W and b reach the layer."""
    net = TwoLayerNet(4, 3, 2, rng=0)
    x = rng.standard_normal((5, 4))
    before = net.predict(x)
    for key in ("W1", "b1", "W2", "b2"):
        assert net.params[key] is net.layers["Affine1" if key[1] == "1" else "Affine2"].__dict__[key[0]]
    net.params["b2"] += 1.0
    np.testing.assert_allclose(net.predict(x), before + 1.0)
    net.params["W1"] *= 0
    np.testing.assert_allclose(net.predict(x), np.zeros((5, 3)) @ net.params["W2"] + net.params["b2"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_stays_float32(backend, rng, dtype):
    net = TwoLayerNet(8, 5, 3, dtype=dtype, rng=1)
    x = rng.standard_normal((4, 8)).astype(dtype)
    t = np.array([0, 2, 1, 1])
    loss = net.loss(x, t)
    assert loss.dtype == dtype
    grads = net.gradient(x, t)
    for key, g in grads.items():
        assert g.dtype == dtype and g.shape == net.params[key].shape


def test_softmax_with_loss_attributes(backend):
    layer = SoftmaxWithLoss()
    assert layer.loss is None and layer.y is None and layer.t is None
    x = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    t = np.array([[0, 0, 1], [1, 0, 0]], dtype=float)
    loss = layer.forward(x, t)
    assert loss == layer.loss
    np.testing.assert_allclose(layer.y, softmax(x))
    np.testing.assert_allclose(loss, cross_entropy_error(softmax(x), t, eps=0), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(), (softmax(x) - t) / 2)
    np.testing.assert_allclose(layer.backward(3.0), 3 * (softmax(x) - t) / 2)
    # labels give the same loss and gradient as one-hot targets
    layer2 = SoftmaxWithLoss()
    assert layer2.forward(x, np.array([2, 0])) == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(layer2.backward(), layer.backward(), rtol=1e-14)


def test_softmax_with_loss_single_sample(backend):
    x = np.array([0.5, -1.0, 2.0])
    for t in (2, np.array([0.0, 0.0, 1.0])):
        layer = SoftmaxWithLoss()
        loss = layer.forward(x, t)
        np.testing.assert_allclose(loss, -np.log(softmax(x)[2]), rtol=1e-13)
        assert layer.y.shape == (3,)
        dx = layer.backward()
        assert dx.shape == (3,)
        np.testing.assert_allclose(dx, softmax(x) - [0, 0, 1], rtol=1e-13)


def test_backward_before_forward(backend):
    for layer, args in [(Relu(), (np.ones(2),)), (Sigmoid(), (np.ones(2),)),
                        (Affine(np.ones((2, 2)), np.ones(2)), (np.ones((1, 2)),)),
                        (SoftmaxWithLoss(), ()), (MulLayer(), (1.0,))]:
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(*args)


def test_functions():
    x = np.array([[1000.0, 0.0], [-1000.0, 0.0]])
    np.testing.assert_allclose(softmax(x), [[1, 0], [0, 1]], atol=1e-300)
    np.testing.assert_allclose(softmax(np.array([0.0, 0.0])), [0.5, 0.5])
    np.testing.assert_allclose(sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0, 0.5, 1])
    y = np.array([[0.1, 0.9], [0.8, 0.2]])
    book = -np.sum(np.log(np.array([0.9, 0.8]) + 1e-7)) / 2
    assert cross_entropy_error(y, np.array([1, 0])) == pytest.approx(book, rel=1e-15)
    assert cross_entropy_error(y, np.array([[0, 1], [1, 0]])) == pytest.approx(book, rel=1e-15)
    assert cross_entropy_error(np.array([0.2, 0.8]), np.array([0, 1]), eps=0) == pytest.approx(-np.log(0.8))
    from fastbp.functions import relu_grad
    np.testing.assert_array_equal(relu_grad(np.array([-1.0, 0.0, 2.0])), [0, 0, 1])


def test_public_names():
    for name in fastbp.__all__:
        assert hasattr(fastbp, name)
