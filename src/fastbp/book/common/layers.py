"""The book's ``common/layers.py``: ``from common.layers import *`` brings fastbp's
layers, the functions of ``common.functions``, ``im2col``/``col2im`` and ``np``, as the
book's does."""
import numpy as np  # noqa: F401

from fastbp.layers import (Affine, BatchNormalization, Convolution, Dropout,  # noqa: F401
                           Pooling, Relu, Sigmoid, SoftmaxWithLoss)
from fastbp.util import col2im, im2col  # noqa: F401

from .functions import *  # noqa: F401,F403
