"""The book's ``common/util.py``: fastbp's ``shuffle_dataset``, ``smooth_curve`` and
``np``."""
import numpy as np  # noqa: F401

from fastbp.util import shuffle_dataset, smooth_curve  # noqa: F401
