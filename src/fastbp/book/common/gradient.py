"""The book's ``common/gradient.py``: ``numerical_gradient``, ``numerical_gradient_2d``
(fastbp's, which restore ``x`` even when ``f`` raises) and ``np``."""
import numpy as np  # noqa: F401

from fastbp.gradient import numerical_gradient, numerical_gradient_2d  # noqa: F401
