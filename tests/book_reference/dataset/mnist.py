import gzip
import os

import numpy as np


def _read(name, offset):
    with gzip.open(os.path.join(os.environ["BOOK_REFERENCE_MNIST_DIR"], name + ".gz"), "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    out = []
    for prefix in ("train", "t10k"):
        x = _read(prefix + "-images-idx3-ubyte", 16).reshape(-1, 784)
        t = _read(prefix + "-labels-idx1-ubyte", 8)
        if normalize:
            x = x.astype(np.float32)
            x /= 255.0
        if one_hot_label:
            t = np.eye(10)[t]
        if not flatten:
            x = x.reshape(-1, 1, 28, 28)
        out.append((x, t))
    return tuple(out)
