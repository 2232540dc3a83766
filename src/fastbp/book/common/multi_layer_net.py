"""The book's ``common/multi_layer_net.py``: fastbp's ``MultiLayerNet``, with what the
book's module brings along (the layers, ``numerical_gradient``, ``OrderedDict``, ``np``)."""
from collections import OrderedDict  # noqa: F401

import numpy as np  # noqa: F401

from fastbp.networks import MultiLayerNet  # noqa: F401

from .gradient import numerical_gradient  # noqa: F401
from .layers import *  # noqa: F401,F403
