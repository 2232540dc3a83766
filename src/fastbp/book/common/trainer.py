"""The book's ``common/trainer.py``: fastbp's ``Trainer`` (the book's batches, schedule
and printed lines by default), the optimizers and ``np``."""
import numpy as np  # noqa: F401

from fastbp.trainer import Trainer  # noqa: F401

from .optimizer import *  # noqa: F401,F403
