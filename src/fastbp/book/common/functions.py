"""The book's ``common/functions.py``: ``from common.functions import *`` brings these
functions and ``np``. fastbp's versions (``fastbp.functions``); ``relu_grad`` is 0 at
``x == 0`` as the ``Relu`` layer (the book's function says 1 there)."""
import numpy as np  # noqa: F401 (the book's star import brings np)

from fastbp.functions import (cross_entropy_error, identity_function, relu,  # noqa: F401
                              relu_grad, sigmoid, sigmoid_grad, softmax, softmax_loss,
                              step_function, sum_squared_error)
