"""The book's ``common/layers.py``: ``from common.layers import *`` brings fastbp's
layers, the functions of ``common.functions`` and ``np``, as the book's does."""
import numpy as np  # noqa: F401

from fastbp.layers import (Affine, BatchNormalization, Dropout, Relu, Sigmoid,  # noqa: F401
                           SoftmaxWithLoss)

from .functions import *  # noqa: F401,F403
