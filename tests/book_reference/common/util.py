import numpy as np


def smooth_curve(x):
    # 11-point Kaiser window (beta 2); 10 mirrored points at each end: the start
    # without its first point, the end with its last one
    x = np.asarray(x)
    n = len(x)
    head = [x[i] for i in range(10, 0, -1)]
    tail = [x[n - 1 - i] for i in range(10)]
    s = np.array(head + list(x) + tail)
    w = np.kaiser(11, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:5 + n]


def shuffle_dataset(x, t):
    order = np.random.permutation(x.shape[0])
    return x[order], t[order]
