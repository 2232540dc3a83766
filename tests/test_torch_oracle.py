"""An independent oracle: PyTorch's autograd (CPU), when it is installed.

PyTorch is never a runtime dependency; `.ci/run` installs it for these tests.
"""
import numpy as np
import pytest

from fastbp import Sigmoid, TwoLayerNet

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")


def torch_two_layer(params, x, t):
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.relu(torch.as_tensor(x) @ p["W1"] + p["b1"])
    logits = h @ p["W2"] + p["b2"]
    target = torch.as_tensor(t)
    loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in p.items()}


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-4)])
@pytest.mark.parametrize("target", ["labels", "onehot"])
def test_two_layer_net_matches_autograd(backend, rng, dtype, rtol, target):
    net = TwoLayerNet(784, 50, 10, weight_init_std=0.1, dtype=dtype, rng=7)
    x = rng.random((32, 784)).astype(dtype)
    labels = rng.integers(0, 10, 32)
    t = labels if target == "labels" else np.eye(10, dtype=dtype)[labels]
    grads = net.gradient(x, t)
    loss = net.lastLayer.loss
    ref_loss, ref = torch_two_layer(net.params, x, labels if target == "labels" else t)
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    for k in ref:
        scale = np.max(np.abs(ref[k]))
        np.testing.assert_allclose(grads[k], ref[k], rtol=rtol, atol=rtol * scale, err_msg=k)


def test_sigmoid_matches_autograd(backend, rng):
    x = rng.standard_normal((6, 7)) * 20
    g = rng.standard_normal((6, 7))
    layer = Sigmoid()
    y = layer.forward(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.sigmoid(xt)
    (yt * torch.as_tensor(g)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-13, atol=1e-300)
