"""Small deterministic problems shared by the MPI scripts and tests/test_distributed.py.

Imported by the scripts (run under mpirun) and by the tests (which compute the
single-process reference), so both sides build exactly the same data and networks.
"""
import os
import sys

import numpy as np

from fastbp import TwoLayerNet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from _book_reference import optimizer as book  # noqa: E402  (the book's optimizers)

N_IN, N_HIDDEN, N_OUT = 12, 9, 4


def data(n=240, seed=5):
    """``(x, t)``: ``n`` float64 samples of ``N_IN`` features and integer labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_IN))
    t = x[:, :N_OUT].argmax(axis=1).astype(np.intp)  # linearly separable labels
    return x, t


def network(seed=0, dtype=np.float64):
    return TwoLayerNet(N_IN, N_HIDDEN, N_OUT, weight_init_std=0.5, dtype=dtype, rng=seed)


def batches(steps, batch, n=240, seed=11):
    """``steps`` global batches of ``batch`` indices into ``data(n)``."""
    rng = np.random.default_rng(seed)
    return [rng.choice(n, batch, replace=False) for _ in range(steps)]


def Momentum(lr=0.05, momentum=0.9):
    """The book's Momentum (state: ``v``), to check optimizer state across ranks."""
    opt = book.Momentum(lr=lr, momentum=momentum)
    opt.state_names = ("v",)  # what a checkpoint saves (the book's classes do not say)
    return opt


def Adam(lr=0.05, beta1=0.9, beta2=0.999):
    """The book's Adam (state: ``iter``, ``m``, ``v``)."""
    opt = book.Adam(lr=lr, beta1=beta1, beta2=beta2)
    opt.state_names = ("iter", "m", "v")
    return opt


OPTIMIZERS = {"sgd": lambda: None, "momentum": Momentum, "adam": Adam}
