"""The book's ``common/util.py``: fastbp's ``im2col``, ``col2im``, ``conv_output_size``,
``shuffle_dataset``, ``smooth_curve`` and ``np``."""
import numpy as np  # noqa: F401

from fastbp.util import (col2im, conv_output_size, im2col, shuffle_dataset,  # noqa: F401
                         smooth_curve)
