"""The book's helpers (``common/util.py``): dataset shuffling and curve smoothing."""
import numpy as np

__all__ = ["shuffle_dataset", "smooth_curve"]


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
