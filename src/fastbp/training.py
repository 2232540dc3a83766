"""The book's training loop (chapter 5): mini-batch SGD on ``TwoLayerNet``.

``train_two_layer`` is what ``fastbp train`` runs; it holds no I/O, so it can be
called from a notebook or a test, and reports through two optional callbacks.

Differences from the book's loop, on purpose:
- an epoch is ``max(train_size // batch_size, 1)`` iterations (the book's
  ``max(train_size, batch_size, 1)`` is a slip: it evaluates once, before learning),
  and accuracy is measured at the *end* of each epoch (plus once at the end of a last,
  partial epoch);
- the batches come from a seeded ``numpy.random.Generator`` (with replacement, as the
  book's ``np.random.choice(train_size, batch_size)``);
- the recorded loss of a step is the batch loss from that step's own forward pass
  (before the update); the book runs a second forward pass after the update to get it.
"""
import time
from dataclasses import dataclass, field
from typing import List

import numpy as np

from .networks import TwoLayerNet
from .optimizers import SGD

__all__ = ["History", "EpochRecord", "TrainResult", "iterations_per_epoch", "train_two_layer"]


def iterations_per_epoch(train_size, batch_size):
    """``max(train_size // batch_size, 1)``: the iterations that make one epoch."""
    return max(int(train_size) // int(batch_size), 1)


@dataclass
class EpochRecord:
    """What is measured at the end of an epoch (``epoch`` counts from 1; a last,
    partial epoch has ``steps`` smaller than the epoch length)."""

    epoch: int
    iteration: int  # iterations done so far
    steps: int  # iterations in this epoch
    loss: float  # mean batch loss over this epoch's iterations
    train_acc: float
    test_acc: float
    seconds: float  # wall time of this epoch, training and evaluation
    elapsed: float  # wall time since the start


@dataclass
class History:
    """``loss``: the batch loss of every iteration; the other lists: one entry per
    epoch (see :class:`EpochRecord`)."""

    loss: List[float] = field(default_factory=list)
    epochs: List[EpochRecord] = field(default_factory=list)

    @property
    def train_acc(self):
        return [e.train_acc for e in self.epochs]

    @property
    def test_acc(self):
        return [e.test_acc for e in self.epochs]

    @property
    def times(self):
        """Wall time since the start at the end of each epoch."""
        return [e.elapsed for e in self.epochs]


@dataclass
class TrainResult:
    network: TwoLayerNet
    history: History
    seconds: float  # total wall time


def _batch_loss(network):
    """The data loss of the last forward pass (without any weight-decay term)."""
    last = getattr(network, "lastLayer", None) or getattr(network, "last_layer")
    return float(last.loss)


def _accuracy(network, x, t, chunk=10000):
    """``network.accuracy`` in chunks, so the full training set needs no big buffers."""
    hits = 0
    for start in range(0, x.shape[0], chunk):
        xs, ts = x[start:start + chunk], t[start:start + chunk]
        hits += network.accuracy(xs, ts) * xs.shape[0]
    return hits / x.shape[0]


def train_two_layer(x_train, t_train, x_test, t_test, *, hidden_size=50, iters=10000,
                    batch_size=100, learning_rate=0.1, dtype=np.float64, seed=None,
                    weight_init_std=0.01, network=None, optimizer=None, on_step=None,
                    on_epoch=None):
    """Train the book's ``TwoLayerNet`` with mini-batch SGD; return a :class:`TrainResult`.

    ``x_*``: (N, D) inputs (float32 from ``load_mnist``); ``t_*``: labels (N,) in
    0..9 or one-hot (N, C); the output layer has 10 units, or C. Defaults are the book's: 50 hidden units, 10,000 iterations,
    batch 100, learning rate 0.1, float64, weights drawn with std 0.01. ``seed``
    (int, ``SeedSequence`` or ``None`` for fresh entropy) seeds one
    ``numpy.random.Generator`` that draws the initial weights and then the batches, so
    a seed gives the same run on either backend. ``network``: train this network
    instead of a new one (``hidden_size``, ``dtype`` and ``weight_init_std`` are then
    ignored): any network with the book's ``params``, ``gradient`` and ``accuracy``, such
    as ``MultiLayerNetExtend``. ``optimizer``: anything with the book's
    ``update(params, grads)`` (default: ``SGD(lr=learning_rate)``, in place). Each batch
    is converted to the network's dtype.

    Callbacks: ``on_step(i)`` after iteration ``i`` (1-based), ``on_epoch(record)`` with
    an :class:`EpochRecord` at the end of each epoch.
    """
    # (N, D); a given network may take other samples (images (N, C, H, W) for the CNNs)
    if (x_train.ndim < 2 or x_test.ndim < 2) or (network is None and x_train.ndim != 2):
        raise ValueError(
            f"x_train, x_test: expected 2-D arrays (N, D), got shapes {x_train.shape} and {x_test.shape}"
        )
    if x_train.shape[0] != t_train.shape[0] or x_test.shape[0] != t_test.shape[0]:
        raise ValueError(
            f"t_train, t_test: expected one target per sample ({x_train.shape[0]} and "
            f"{x_test.shape[0]}), got shapes {t_train.shape} and {t_test.shape}"
        )
    if x_train.shape[0] == 0:
        raise ValueError("x_train: no training samples")
    for name, value in (("iters", iters), ("batch_size", batch_size), ("hidden_size", hidden_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")

    rng = np.random.default_rng(seed)
    if network is None:
        n_classes = t_train.shape[1] if t_train.ndim == 2 else 10
        network = TwoLayerNet(x_train.shape[1], int(hidden_size), n_classes,
                              weight_init_std, dtype=dtype, rng=rng)
    if optimizer is None:
        optimizer = SGD(lr=learning_rate)
    dtype = network.params["W1"].dtype
    train_size = x_train.shape[0]
    per_epoch = iterations_per_epoch(train_size, batch_size)
    history = History()
    start = epoch_start = time.perf_counter()
    epoch_losses = []

    for i in range(1, int(iters) + 1):
        batch = rng.integers(0, train_size, size=int(batch_size))
        x_batch = x_train[batch].astype(dtype, copy=False)
        t_batch = t_train[batch]
        if hasattr(network, "train_step"):  # fastbp's networks: buffers reused, no allocation
            network.train_step(x_batch, t_batch, optimizer)
        else:
            optimizer.update(network.params, network.gradient(x_batch, t_batch))
        loss = _batch_loss(network)  # from this step's forward pass
        history.loss.append(loss)
        epoch_losses.append(loss)
        if on_step is not None:
            on_step(i)
        if i % per_epoch == 0 or i == iters:
            record = EpochRecord(
                epoch=(i - 1) // per_epoch + 1,
                iteration=i,
                steps=len(epoch_losses),
                loss=float(np.mean(epoch_losses)),
                train_acc=float(_accuracy(network, x_train, t_train)),
                test_acc=float(_accuracy(network, x_test, t_test)),
                seconds=0.0,
                elapsed=0.0,
            )
            now = time.perf_counter()
            record.seconds, record.elapsed = now - epoch_start, now - start
            history.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            epoch_losses = []
            epoch_start = time.perf_counter()
    return TrainResult(network, history, time.perf_counter() - start)
