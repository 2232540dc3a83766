"""Small deterministic problems shared by the MPI scripts and tests/test_distributed.py.

Imported by the scripts (run under mpirun) and by the tests (which compute the
single-process reference), so both sides build exactly the same data and networks.
"""
import numpy as np

from fastbp import TwoLayerNet

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


class Momentum:
    """The book's Momentum (state: ``v``), to check optimizer state across ranks."""

    state_names = ("v",)  # what a checkpoint saves

    def __init__(self, lr=0.05, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for k in params:
            self.v[k] = self.momentum * self.v[k] - self.lr * grads[k]
            params[k] += self.v[k]


class Adam:
    """The book's Adam (state: ``iter``, ``m``, ``v``)."""

    state_names = ("iter", "m", "v")

    def __init__(self, lr=0.05, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter, self.m, self.v = 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for k in params:
            self.m[k] += (1 - self.beta1) * (grads[k] - self.m[k])
            self.v[k] += (1 - self.beta2) * (grads[k] ** 2 - self.v[k])
            params[k] -= lr_t * self.m[k] / (np.sqrt(self.v[k]) + 1e-7)


OPTIMIZERS = {"sgd": lambda: None, "momentum": Momentum, "adam": Adam}
