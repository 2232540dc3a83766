"""Every kernel's call with its array arguments, and placing two of them in one buffer:
shared by the overlap tests and the aliasing property tests."""
import numpy as np


def _floats(rng, shape, dt, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape).astype(dt)


def specs(N, D):
    """kernel -> (arrays in call order: name -> maker(rng, dtype), the names it writes, call);
    arrays of N rows and D columns (affine_backward's are N x N)."""
    return {
        "relu_forward": (
            {"x": lambda r, dt: _floats(r, (N, D), dt), "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.relu_forward(a["x"], out=a["out"])),
        "relu_backward": (
            {"dout": lambda r, dt: _floats(r, (N, D), dt), "mask": lambda r, dt: r.random((N, D)) < 0.5,
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.relu_backward(a["dout"], a["mask"], out=a["out"])),
        "sigmoid_forward": (
            {"x": lambda r, dt: _floats(r, (N, D), dt), "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.sigmoid_forward(a["x"], out=a["out"])),
        "sigmoid_backward": (
            {"dout": lambda r, dt: _floats(r, (N, D), dt), "y": lambda r, dt: _floats(r, (N, D), dt, 0, 1),
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.sigmoid_backward(a["dout"], a["y"], out=a["out"])),
        "bias_grad": (
            {"dout": lambda r, dt: _floats(r, (N, D), dt), "out": lambda r, dt: np.zeros(D, dt)},
            ["out"], lambda k, a: k.bias_grad(a["dout"], out=a["out"])),
        "affine_backward": (  # square x, so that dW_out can be exactly dout or x as well as W
            {"dout": lambda r, dt: _floats(r, (N, N), dt), "x": lambda r, dt: _floats(r, (N, N), dt),
             "W": lambda r, dt: _floats(r, (N, N), dt), "dW_out": lambda r, dt: np.zeros((N, N), dt),
             "db_out": lambda r, dt: np.zeros(N, dt)},
            ["dW_out", "db_out"],
            lambda k, a: k.affine_backward(a["dout"], a["x"], a["W"], dW_out=a["dW_out"],
                                           db_out=a["db_out"])),
        "affine_forward": (  # square, so that out can be exactly x or W
            {"x": lambda r, dt: _floats(r, (N, N), dt), "W": lambda r, dt: _floats(r, (N, N), dt),
             "b": lambda r, dt: _floats(r, (N,), dt), "out": lambda r, dt: np.zeros((N, N), dt)},
            ["out"], lambda k, a: k.affine_forward(a["x"], a["W"], a["b"], out=a["out"])),
        "affine_backward_sgd": (  # square, so that W can be exactly dout or x
            {"dout": lambda r, dt: _floats(r, (N, N), dt), "x": lambda r, dt: _floats(r, (N, N), dt),
             "W": lambda r, dt: _floats(r, (N, N), dt), "b": lambda r, dt: _floats(r, (N,), dt)},
            ["W", "b"],
            lambda k, a: k.affine_backward_sgd(a["dout"], a["x"], a["W"], a["b"], 0.1, 0.01)),
        "softmax_cross_entropy[targets]": (
            {"x": lambda r, dt: _floats(r, (N, D), dt), "t": lambda r, dt: np.eye(D, dtype=dt)[r.integers(0, D, N)],
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.softmax_cross_entropy(a["x"], a["t"], out=a["out"])),
        "softmax_cross_entropy[labels]": (
            {"x": lambda r, dt: _floats(r, (N, D), dt), "t": lambda r, dt: r.integers(0, D, N).astype(np.intp),
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.softmax_cross_entropy(a["x"], a["t"], out=a["out"])),
        "softmax_cross_entropy_backward[targets]": (
            {"y": lambda r, dt: _floats(r, (N, D), dt, 0, 1), "t": lambda r, dt: np.eye(D, dtype=dt)[r.integers(0, D, N)],
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.softmax_cross_entropy_backward(a["y"], a["t"], 0.5, out=a["out"])),
        "softmax_cross_entropy_backward[labels]": (
            {"y": lambda r, dt: _floats(r, (N, D), dt, 0, 1), "t": lambda r, dt: r.integers(0, D, N).astype(np.intp),
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.softmax_cross_entropy_backward(a["y"], a["t"], 0.5, out=a["out"])),
        "sgd_update": (
            {"param": lambda r, dt: _floats(r, (N, D), dt), "grad": lambda r, dt: _floats(r, (N, D), dt)},
            ["param"], lambda k, a: k.sgd_update(a["param"], a["grad"], 0.1)),
        "momentum_update": (
            {"param": lambda r, dt: _floats(r, (N, D), dt), "grad": lambda r, dt: _floats(r, (N, D), dt),
             "v": lambda r, dt: _floats(r, (N, D), dt)},
            ["param", "v"], lambda k, a: k.momentum_update(a["param"], a["grad"], a["v"], 0.1, 0.9)),
        "nesterov_update": (
            {"param": lambda r, dt: _floats(r, (N, D), dt), "grad": lambda r, dt: _floats(r, (N, D), dt),
             "v": lambda r, dt: _floats(r, (N, D), dt)},
            ["param", "v"], lambda k, a: k.nesterov_update(a["param"], a["grad"], a["v"], 0.1, 0.9)),
        "adagrad_update": (
            {"param": lambda r, dt: _floats(r, (N, D), dt), "grad": lambda r, dt: _floats(r, (N, D), dt),
             "h": lambda r, dt: _floats(r, (N, D), dt, 0, 2)},
            ["param", "h"], lambda k, a: k.adagrad_update(a["param"], a["grad"], a["h"], 0.1, 1e-7)),
        "rmsprop_update": (
            {"param": lambda r, dt: _floats(r, (N, D), dt), "grad": lambda r, dt: _floats(r, (N, D), dt),
             "h": lambda r, dt: _floats(r, (N, D), dt, 0, 2)},
            ["param", "h"],
            lambda k, a: k.rmsprop_update(a["param"], a["grad"], a["h"], 0.1, 0.99, 1e-7)),
        "adam_update": (
            {"param": lambda r, dt: _floats(r, (N, D), dt), "grad": lambda r, dt: _floats(r, (N, D), dt),
             "m": lambda r, dt: _floats(r, (N, D), dt), "v": lambda r, dt: _floats(r, (N, D), dt, 0, 2)},
            ["param", "m", "v"],
            lambda k, a: k.adam_update(a["param"], a["grad"], a["m"], a["v"], 0.01, 0.9, 0.999, 1e-7)),
        "dropout_forward": (
            {"x": lambda r, dt: _floats(r, (N, D), dt), "u": lambda r, dt: _floats(r, (N, D), dt, 0, 1),
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.dropout_forward(a["x"], a["u"], 0.5, 2.0, out=a["out"])),
        "dropout_backward": (
            {"dout": lambda r, dt: _floats(r, (N, D), dt), "mask": lambda r, dt: r.random((N, D)) < 0.5,
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.dropout_backward(a["dout"], a["mask"], 2.0, out=a["out"])),
        "batchnorm_forward": (
            {"x": lambda r, dt: _floats(r, (N, D), dt), "gamma": lambda r, dt: _floats(r, D, dt),
             "beta": lambda r, dt: _floats(r, D, dt), "running_mean": lambda r, dt: _floats(r, D, dt),
             "running_var": lambda r, dt: _floats(r, D, dt, 0.5, 2), "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out", "running_mean", "running_var"],
            lambda k, a: k.batchnorm_forward(a["x"], a["gamma"], a["beta"], a["running_mean"],
                                             a["running_var"], 0.9, 1e-5, out=a["out"])),
        "batchnorm_inference": (
            {"x": lambda r, dt: _floats(r, (N, D), dt), "gamma": lambda r, dt: _floats(r, D, dt),
             "beta": lambda r, dt: _floats(r, D, dt), "running_mean": lambda r, dt: _floats(r, D, dt),
             "running_var": lambda r, dt: _floats(r, D, dt, 0.5, 2), "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"],
            lambda k, a: k.batchnorm_inference(a["x"], a["gamma"], a["beta"], a["running_mean"],
                                               a["running_var"], 1e-5, out=a["out"])),
        "batchnorm_backward": (
            {"dout": lambda r, dt: _floats(r, (N, D), dt), "xn": lambda r, dt: _floats(r, (N, D), dt),
             "std": lambda r, dt: _floats(r, D, dt, 0.5, 2), "gamma": lambda r, dt: _floats(r, D, dt),
             "out": lambda r, dt: np.zeros((N, D), dt)},
            ["out"], lambda k, a: k.batchnorm_backward(a["dout"], a["xn"], a["std"], a["gamma"], out=a["out"])),
        # chapter 7: images (1, 2, N, N), 2x2 windows
        "im2col": (
            {"x": lambda r, dt: _floats(r, (1, 2, N, N), dt),
             "out": lambda r, dt: np.zeros(((N - 1) ** 2, 8), dt)},
            ["out"], lambda k, a: k.im2col(a["x"], 2, 2, out=a["out"])),
        "col2im": (
            {"col": lambda r, dt: _floats(r, ((N - 1) ** 2, 8), dt),
             "out": lambda r, dt: np.zeros((1, 2, N, N), dt)},
            ["out"], lambda k, a: k.col2im(a["col"], (1, 2, N, N), 2, 2, out=a["out"])),
        "maxpool_forward": (
            {"x": lambda r, dt: _floats(r, (1, 2, N, N), dt),
             "out": lambda r, dt: np.zeros((1, 2, N // 2, N // 2), dt)},
            ["out"], lambda k, a: k.maxpool_forward(a["x"], 2, 2, out=a["out"])),
        "maxpool_backward": (
            {"dout": lambda r, dt: _floats(r, (1, 2, N // 2, N // 2), dt),
             "arg_max": lambda r, dt: r.integers(0, 4, 2 * (N // 2) ** 2).astype(np.intp),
             "out": lambda r, dt: np.zeros((1, 2, N, N), dt)},
            ["out"], lambda k, a: k.maxpool_backward(a["dout"], a["arg_max"], (1, 2, N, N), 2, 2,
                                                     out=a["out"])),
        # the convolution kernels: (1, D, N, N) images, D 3x3 filters, pad 1 (so that out
        # has x's shape and can be exactly x)
        "conv_forward": (
            {"x": lambda r, dt: _floats(r, (1, D, N, N), dt), "W": lambda r, dt: _floats(r, (D, D, 3, 3), dt),
             "b": lambda r, dt: _floats(r, (D,), dt), "out": lambda r, dt: np.zeros((1, D, N, N), dt)},
            ["out"], lambda k, a: k.conv_forward(a["x"], a["W"], a["b"], 1, 1, out=a["out"])),
        "conv_backward": (
            {"dout": lambda r, dt: _floats(r, (1, D, N, N), dt), "x": lambda r, dt: _floats(r, (1, D, N, N), dt),
             "W": lambda r, dt: _floats(r, (D, D, 3, 3), dt),
             "dW_out": lambda r, dt: np.zeros((D, D, 3, 3), dt), "db_out": lambda r, dt: np.zeros(D, dt)},
            ["dW_out", "db_out"],
            lambda k, a: k.conv_backward(a["dout"], a["x"], a["W"], 1, 1, dW_out=a["dW_out"],
                                         db_out=a["db_out"])),
        "maxpool2_forward": (
            {"x": lambda r, dt: _floats(r, (1, 2, 2 * N, 2 * N), dt),
             "out": lambda r, dt: np.zeros((1, 2, N, N), dt)},
            ["out"], lambda k, a: k.maxpool2_forward(a["x"], out=a["out"])),
        "relu_maxpool2_forward": (
            {"x": lambda r, dt: _floats(r, (1, 2, 2 * N, 2 * N), dt),
             "out": lambda r, dt: np.zeros((1, 2, N, N), dt)},
            ["out"], lambda k, a: k.relu_maxpool2_forward(a["x"], out=a["out"])),
        "maxpool2_backward": (
            {"dout": lambda r, dt: _floats(r, (1, 2, N, N), dt),
             "index": lambda r, dt: r.integers(0, 5, (1, 2, N, N)).astype(np.uint8),
             "out": lambda r, dt: np.zeros((1, 2, 2 * N, 2 * N), dt)},
            ["out"], lambda k, a: k.maxpool2_backward(a["dout"], a["index"], (1, 2, 2 * N, 2 * N),
                                                      out=a["out"])),
        "conv_bias_grad": (
            {"dout": lambda r, dt: _floats(r, (2, D, N, N), dt), "out": lambda r, dt: np.zeros(D, dt)},
            ["out"], lambda k, a: k.conv_bias_grad(a["dout"], out=a["out"])),
    }


def aligned_bytes(n):
    raw = np.zeros(n + 128, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + n]


def view(buf, offset, like):
    """``like``'s shape and dtype, C-contiguous, at byte ``offset`` of ``buf``."""
    return buf[offset:offset + like.nbytes].view(like.dtype).reshape(like.shape)


def placed(base, w, a, kind):
    """``base`` with arrays ``w`` and ``a`` replaced by views into one buffer, placed as
    ``kind`` says: ``"exact"`` (``a`` another view of ``w``'s memory), ``"strided"`` (``a``
    a strided view over it; None when ``a`` has a single element), or shifted from it
    by ``"+1 element"``, ``"-1 element"``, ``"+1 row"`` or ``"-1 row"``. ``w`` is filled
    first, then ``a`` (so ``a`` keeps its values where they meet)."""
    args = {k: v.copy() for k, v in base.items()}  # fresh arrays at every call
    W, A = base[w], base[a]
    if kind == "exact":
        buf = aligned_bytes(W.nbytes)
        args[w] = view(buf, 0, W)
        args[w][...] = W
        args[a] = args[w][...]  # another view of the same memory
        return args
    if kind == "strided":
        n = max(W.nbytes, 2 * A.nbytes)
        buf = aligned_bytes(n)
        args[w] = view(buf, 0, W)
        args[w][...] = W
        strided = buf[:2 * A.nbytes].view(A.dtype)[::2].reshape(A.shape)
        if strided.flags.c_contiguous:  # a single element is contiguous whatever its step
            return None
        assert np.shares_memory(strided, buf)
        strided[...] = A
        args[a] = strided
        return args
    step = max(W.itemsize, A.itemsize)
    row = W.shape[-1] * W.itemsize if W.ndim else step
    shift = {"+1 element": step, "-1 element": -step, "+1 row": row, "-1 row": -row}[kind]
    ow, oa = (shift, 0) if shift > 0 else (0, -shift)
    buf = aligned_bytes(max(ow + W.nbytes, oa + A.nbytes))
    args[w], args[a] = view(buf, ow, W), view(buf, oa, A)
    args[w][...] = W
    args[a][...] = A
    return args
