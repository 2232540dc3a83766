"""The book's ``common/multi_layer_net_extend.py``: fastbp's ``MultiLayerNetExtend``
(the book's dropout and batch normalization), with what the book's module brings along."""
from collections import OrderedDict  # noqa: F401

import numpy as np  # noqa: F401

from fastbp.networks import MultiLayerNetExtend  # noqa: F401

from .gradient import numerical_gradient  # noqa: F401
from .layers import *  # noqa: F401,F403
