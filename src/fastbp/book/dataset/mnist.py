"""The book's ``dataset/mnist.py``: ``load_mnist(normalize=True, flatten=True,
one_hot_label=False)`` returning what the book's returns, read by fastbp's verified
loader (no pickle cache, nothing written next to the script).

The data comes from where ``fastbp.load_mnist`` finds it: ``$FASTBP_DATA`` (a folder
with the four IDX files, gzipped or not), the user cache, a download, or else the small
sample inside fastbp (with a warning on stderr).
"""
import numpy as np

from fastbp.datasets import load_mnist as _load_mnist

__all__ = ["load_mnist"]


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    """``(x_train, t_train), (x_test, t_test)``, as the book's:

    - images: ``normalize``: float32 pixel / 255, else uint8; ``flatten``: (N, 784),
      else (N, 1, 28, 28);
    - labels: uint8 (N,), or with ``one_hot_label`` float64 (N, 10) one-hot rows.
    """
    (x_train, t_train), (x_test, t_test) = _load_mnist(normalize=normalize, flatten=flatten)
    if one_hot_label:
        t_train, t_test = _one_hot(t_train), _one_hot(t_test)
    return (x_train, t_train), (x_test, t_test)


def _one_hot(labels):
    out = np.zeros((labels.size, 10))  # float64, as the book's
    out[np.arange(labels.size), labels] = 1.0
    return out
