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
    """A loss curve smoothed with an 11-point Kaiser window (beta 2), same length as ``x``.

    The ends are padded by mirroring 10 points, as the book: without the edge point at
    the start, with it at the end, so the book's smoothed curves are reproduced exactly.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size < 11:
        raise ValueError(f"x: expected a 1-D curve of at least 11 points, got shape {x.shape}")
    window = np.kaiser(11, 2)
    padded = np.concatenate([x[10:0:-1], x, x[:-11:-1]])
    y = np.convolve(window / window.sum(), padded, mode="valid")
    return y[5:-5]


def shuffle_dataset(x, t):
    """``x`` and ``t`` reordered by one ``np.random.permutation`` of the samples (NumPy's
    global state, as the book, so ``np.random.seed`` repeats it); new arrays."""
    x = np.asarray(x)
    t = np.asarray(t)
    if x.ndim == 0 or t.ndim == 0 or len(x) != len(t):
        raise ValueError(f"x, t: expected as many samples in t as in x, got shapes "
                         f"{x.shape} and {t.shape}")
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]


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
