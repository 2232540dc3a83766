"""fastbp: the backpropagation layers of "Deep Learning from Scratch" (chapter 5), fast.

The book's Python API, with the hot paths in typed Cython kernels and a pure-NumPy
twin that gives the same results. ``get_backend``/``set_backend``/``use_backend``
choose between them; ``FASTBP_BACKEND=numpy|cython`` chooses at import.
"""
from .datasets import load_mnist
from .functions import cross_entropy_error, sigmoid, softmax
from .gradient import numerical_gradient
from .kernels import (HAVE_CYTHON, get_backend, get_num_threads, set_backend, set_num_threads,
                      use_backend)
from .layers import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from .networks import TwoLayerNet

__version__ = "0.1.0"

__all__ = [
    "MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss",
    "TwoLayerNet", "numerical_gradient", "sigmoid", "softmax", "cross_entropy_error",
    "get_backend", "set_backend", "use_backend", "HAVE_CYTHON", "get_num_threads",
    "set_num_threads", "load_mnist",
]

# Chapter 6: the optimizers (fastbp.optimizers), the deeper networks, their layers, the trainer.
from . import optimizers  # noqa: E402
from .layers import BatchNormalization, Dropout  # noqa: E402
from .networks import MultiLayerNet, MultiLayerNetExtend  # noqa: E402
from .trainer import Trainer  # noqa: E402

__all__ += ["optimizers", "Dropout", "BatchNormalization", "MultiLayerNet", "MultiLayerNetExtend", "Trainer"]
