"""The book's ``common/optimizer.py``: fastbp's optimizers and ``np`` (the book's
scripts use the ``np`` that ``from common.optimizer import *`` brings)."""
import numpy as np  # noqa: F401

from fastbp.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop  # noqa: F401
