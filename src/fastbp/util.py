"""The book's ``common/util.py``: ``im2col``, ``col2im``, ``conv_output_size``,
``shuffle_dataset`` and ``smooth_curve``, with the book's signatures and results.

``im2col`` and ``col2im`` run on the active kernel backend (see ``fastbp.kernels``);
unlike the book's, they keep a float32 input float32 (the book's always return float64)
and return C-contiguous arrays.
"""
import numpy as np

from . import kernels as _kernels

__all__ = ["im2col", "col2im", "conv_output_size", "shuffle_dataset", "smooth_curve"]


def smooth_curve(x):
    """A loss curve smoothed by an 11-point Kaiser window (beta 2), the same length as
    ``x``: the ends are mirrored so that the window has data on both sides."""
    n = 11
    head = x[n - 1:0:-1]   # x[10], ..., x[1]
    tail = x[-1:-n:-1]     # x[-1], ..., x[-10]
    kernel = np.kaiser(n, 2)
    smoothed = np.convolve(kernel / kernel.sum(), np.r_[head, x, tail], mode="valid")
    return smoothed[5:len(smoothed) - 5]


def shuffle_dataset(x, t):
    """``(x, t)`` in one random order along the first axis (NumPy's global state)."""
    order = np.random.permutation(x.shape[0])
    return x[order], t[order]


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """``(input_size + 2 * pad - filter_size) / stride + 1``: a float, as in the book."""
    return (input_size + 2 * pad - filter_size) / stride + 1


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """The windows of ``input_data`` (N, C, H, W) as rows of a 2-D array
    (N * out_h * out_w, C * filter_h * filter_w); padding is zeros."""
    return _kernels.active().im2col(input_data, filter_h, filter_w, stride, pad)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The inverse direction of ``im2col``: an (N, C, H, W) array of ``input_shape``
    where every element of ``col`` is added to the position it was taken from."""
    return _kernels.active().col2im(col, input_shape, filter_h, filter_w, stride, pad)
