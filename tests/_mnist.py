"""Real MNIST digits for the tests that need them, through fastbp's own verified loader."""
import functools

from fastbp.datasets import load_mnist


@functools.lru_cache(maxsize=2)
def _load(folder):
    return load_mnist(normalize=True, flatten=True, data_dir=folder)


def load(folder, kind="train"):
    """``(x, t)``: float32 images in [0, 1], (N, 784), and uint8 labels."""
    train, test = _load(folder)
    return train if kind == "train" else test
