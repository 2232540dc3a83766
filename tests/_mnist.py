"""Real MNIST digits for the tests that need them, through fastbp's own verified loader.

``FULL_DIR``: the full MNIST folder when the machine has one, from ``FASTBP_DATA`` (as
fastbp itself; ``FASTBP_MNIST_DIR``, its former name, is still honoured). conftest.py
removes both variables from every test's environment, so a test sees the full set only
when it asks for it.
"""
import functools
import os

from fastbp.datasets import load_mnist


FULL_DIR = os.environ.get("FASTBP_DATA") or os.environ.get("FASTBP_MNIST_DIR") or None


@functools.lru_cache(maxsize=2)
def _load(folder):
    return load_mnist(normalize=True, flatten=True, data_dir=folder)


def load(folder, kind="train"):
    """``(x, t)``: float32 images in [0, 1], (N, 784), and uint8 labels."""
    train, test = _load(folder)
    return train if kind == "train" else test
