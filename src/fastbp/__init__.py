"""fastbp: the layers and networks of "Deep Learning from Scratch" (chapters 5 to 8), fast.

The book's Python API, with the hot paths in typed Cython kernels and a pure-NumPy
twin that gives the same results. ``get_backend``/``set_backend``/``use_backend``
choose between them; ``FASTBP_BACKEND=numpy|cython`` chooses at import. Every layer and
network is here: chapter 5's (``Affine``, ``TwoLayerNet``, ...), chapter 6's
(``fastbp.optimizers``, ``Dropout``, ``BatchNormalization``, ``MultiLayerNet``,
``MultiLayerNetExtend``, ``Trainer``), chapters 7 and 8's (``Convolution``, ``Pooling``,
``SimpleConvNet``, ``DeepConvNet``); ``fastbp train`` on the command line.
"""
from . import optimizers
from .datasets import load_mnist
from .functions import cross_entropy_error, sigmoid, softmax
from .gradient import numerical_gradient
from .kernels import (HAVE_CYTHON, get_backend, get_num_threads, set_backend, set_num_threads,
                      use_backend)
from .layers import (Affine, AddLayer, BatchNormalization, Convolution, Dropout, MulLayer,
                     Pooling, Relu, Sigmoid, SoftmaxWithLoss)
from .networks import (DeepConvNet, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet,
                       TwoLayerNet)
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    # chapter 5
    "MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss",
    "TwoLayerNet", "numerical_gradient", "sigmoid", "softmax", "cross_entropy_error",
    "load_mnist",
    # chapter 6
    "optimizers", "Dropout", "BatchNormalization", "MultiLayerNet", "MultiLayerNetExtend",
    "Trainer",
    # chapters 7 and 8
    "Convolution", "Pooling", "SimpleConvNet", "DeepConvNet",
    # backends
    "get_backend", "set_backend", "use_backend", "HAVE_CYTHON", "get_num_threads",
    "set_num_threads",
]
