"""A minimal IDX reader for the tests that need real MNIST digits."""
import gzip
import os

import numpy as np


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder, kind="train"):
    prefix = "train" if kind == "train" else "t10k"
    x = read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"))
    t = read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"))
    return (x.reshape(len(x), -1) / np.float32(255)).astype(np.float32), t.astype(np.intp)
