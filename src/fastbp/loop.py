"""fastbp's one training loop: a sampler, a step, and hooks at the end of each epoch.

``fastbp train``, the data-parallel path (``fastbp.distributed``) and the book's
``Trainer`` (``fastbp.trainer``) all run :func:`run_loop`; they differ only in the
pieces they hand it:

- a **sampler** says which samples form the batch of iteration ``i`` and how long an
  epoch is. :class:`BookSampler` is the book's ``np.random.choice(train_size,
  batch_size)`` (with replacement) each step, from NumPy's global state, a
  ``Generator``, or a seed (then epoch ``e`` draws from ``default_rng([seed, e])``, so
  a run can resume at any epoch and every MPI rank draws the same batches); its
  epoch is the book's ``max(train_size / batch_size, 1)`` iterations (a float: when
  the division is not exact, epochs are alternately one iteration longer or shorter).
  :class:`ShuffleSampler` is one shuffled pass per epoch of ``max(train_size //
  batch_size, 1)`` iterations (the last ``train_size % batch_size`` of each shuffle
  are left out).
- a **step** ``step(indices) -> loss`` trains on those samples: :func:`local_step`
  for one process (the network's buffer-reusing ``train_step`` when it has one, else
  the book's ``gradient`` + ``optimizer.update``); ``DataParallel`` builds one that
  trains on this rank's shard with one ``Allreduce``.
- an **evaluate** ``evaluate() -> (train_acc, test_acc)`` called when an epoch ends:
  :func:`accuracies` for one process, a split evaluation across ranks for MPI; and
  optionally an ``evaluate_final`` for the end of the run (:class:`Evaluation`: a
  sample after each epoch, the whole test set at the end).
- hooks: ``on_step(i, loss)`` after each iteration (1-based), ``on_epoch(record)``
  after each evaluation with an :class:`EpochRecord`; ``before_evaluate()`` (MPI:
  synchronize batch-norm statistics) runs just before ``evaluate``.

``Trainer`` (the book's API) runs it with the book's pieces: a ``BookSampler`` (or a
``ShuffleSampler`` for ``sampler='shuffle'``) given NumPy's global state or one
``Generator`` made from its ``rng``; its step is the book's gradient, update and second
forward pass, whose loss is what ``train_loss_list`` gets and ``train loss:`` prints;
its evaluate measures on the first ``evaluate_sample_num_per_epoch`` samples; its
``on_step`` keeps ``current_iter`` and the progress bar, its ``on_epoch`` keeps
``current_epoch``, the accuracy lists and the ``=== epoch:...`` line. The book
evaluates after the *first* iteration of each epoch (``i % iter_per_epoch == 0`` for a
0-based ``i``, a float check that can fire fewer times than there are epochs), so the
Trainer passes ``epoch_end=lambda i: i % sampler.epoch_length == 0`` for the book's
sampler, and ``evaluate_last=False`` with either, in place of the default schedule
(after the last iteration of each epoch and after the last iteration of the run).
``train()`` and ``train_step()`` continue from ``current_iter`` with ``start=``.
"""
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import List

import numpy as np

from .networks import output_layer

__all__ = ["BookSampler", "ShuffleSampler", "SAMPLERS", "EpochRecord", "History",
           "run_loop", "local_step", "accuracies", "Evaluation", "batch_loss", "in_dtype"]


# ---------------------------------------------------------------------- samplers

def _positive(name, value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


class _Sampler:
    """Shared bookkeeping: which epoch iteration ``i`` (0-based) belongs to."""

    epoch_length = 1

    def __init__(self, train_size, batch_size, rng=None):
        self.train_size = _positive("train_size", train_size)
        self.batch_size = _positive("batch_size", batch_size)
        if rng is None or isinstance(rng, np.random.Generator):
            self.seed, self.rng = None, rng
        else:  # a seed: per-epoch generators, so that any epoch can be started afresh
            self.seed, self.rng = int(rng), None

    def epoch_of(self, i):
        """The epoch (0-based) of iteration ``i`` (0-based)."""
        return int(math.floor(i / self.epoch_length))

    def epoch_start(self, epoch):
        """The first iteration (0-based) of ``epoch``."""
        return int(math.ceil(epoch * self.epoch_length))

    def ends_epoch(self, i):
        """True when iteration ``i`` (0-based) is the last of its epoch."""
        return self.epoch_of(i + 1) > self.epoch_of(i)


class BookSampler(_Sampler):
    """The book's batches: ``np.random.choice(train_size, batch_size)`` each step (with
    replacement), from NumPy's global state (``rng=None``, so ``np.random.seed`` works
    as in the book), a ``Generator``, or a seed (``default_rng([seed, epoch])`` per
    epoch). ``epoch_length`` is the book's ``max(train_size / batch_size, 1)``."""

    name = "book"

    def __init__(self, train_size, batch_size, rng=None):
        super().__init__(train_size, batch_size, rng)
        self.epoch_length = max(self.train_size / self.batch_size, 1)
        self._epoch = None  # the epoch self._gen draws for, and how far it has drawn
        self._drawn = 0
        self._gen = None

    def _generator(self, i):
        """The generator to draw iteration ``i``'s batch from, ``None`` for NumPy's
        global state. With a seed, a jump (a resume) replays the epoch's draws."""
        if self.seed is None:
            return self.rng
        epoch = self.epoch_of(i)
        offset = i - self.epoch_start(epoch)
        if epoch != self._epoch or offset < self._drawn:
            self._epoch, self._drawn = epoch, 0
            self._gen = np.random.default_rng([self.seed, epoch])
        while self._drawn < offset:  # only after a jump into the middle of an epoch
            self._draw(self._gen)
            self._drawn += 1
        self._drawn += 1
        return self._gen

    def batch(self, i):
        """The sample indices of iteration ``i`` (0-based; call in increasing order)."""
        return self._draw(self._generator(i))

    def _draw(self, gen):
        if gen is None:
            return np.random.choice(self.train_size, self.batch_size)
        return gen.choice(self.train_size, self.batch_size)


class ShuffleSampler(_Sampler):
    """One shuffled pass per epoch: each epoch is a new permutation, cut into
    ``max(train_size // batch_size, 1)`` batches (every sample at most once per
    epoch). ``rng`` as :class:`BookSampler`."""

    name = "shuffle"

    def __init__(self, train_size, batch_size, rng=None):
        super().__init__(train_size, batch_size, rng)
        self.epoch_length = max(self.train_size // self.batch_size, 1)
        self._order = None
        self._order_epoch = None

    def batch(self, i):
        epoch = self.epoch_of(i)
        if epoch != self._order_epoch:
            if self.seed is not None:
                gen = np.random.default_rng([self.seed, epoch])
            else:
                gen = self.rng
            n = self.train_size
            self._order = np.random.permutation(n) if gen is None else gen.permutation(n)
            self._order_epoch = epoch
        step = i - self.epoch_start(epoch)
        return self._order[step * self.batch_size:(step + 1) * self.batch_size]


SAMPLERS = {"book": BookSampler, "shuffle": ShuffleSampler}


# ---------------------------------------------------------------------- steps and evaluation

def batch_loss(network):
    """The loss of the network's last forward pass: what fastbp's networks' ``loss``
    returned (weight decay included), else the data loss of the output layer
    (``fastbp.networks.output_layer``) of a network written as the book's."""
    if hasattr(network, "_last_loss"):
        return float(network._last_loss())
    return float(output_layer(network).loss)


def _network_dtype(network):
    return getattr(network, "dtype", None) or next(iter(network.params.values())).dtype


# Data converted to a network's dtype, once per array and dtype: {(id, dtype): (weak
# reference to the array, converted copy)}. The step and the evaluation of one run share
# the copy (one float64 copy of float32 images, not one per batch and per evaluation
# chunk); an entry goes when its array does.
_converted = {}


def in_dtype(x, dtype):
    """``x`` as an array of ``dtype``: ``x`` itself when it has that dtype, else a copy
    made once per array (the next call with the same array returns the same copy, so
    write to the data before making a step or an evaluation from it, not after)."""
    if not isinstance(x, np.ndarray):
        return np.asarray(x, dtype=dtype)
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    key = (id(x), dtype)
    hit = _converted.get(key)
    if hit is not None and hit[0]() is x:
        return hit[1]
    copy = x.astype(dtype)
    _converted[key] = (weakref.ref(x, lambda _, key=key: _converted.pop(key, None)), copy)
    return copy


def local_step(network, optimizer, x, t):
    """``step(indices) -> loss`` for one process: the batch ``x[indices]`` (of ``x``
    converted to the network's dtype once, by :func:`in_dtype`) and ``t[indices]``, one
    update; the loss is that of this step's own forward pass, before the update. Every
    fastbp network has ``train_step`` (the optimizer's fused form, or gradients in
    reused buffers); a network written as the book's gets ``gradient`` and
    ``optimizer.update``."""
    x = in_dtype(x, _network_dtype(network))
    train_step = getattr(network, "train_step", None)

    def step(indices):
        x_batch = x[indices]
        t_batch = t[indices]
        if train_step is not None:
            return float(train_step(x_batch, t_batch, optimizer))
        optimizer.update(network.params, network.gradient(x_batch, t_batch))
        return batch_loss(network)
    return step


def accuracies(network, x_train, t_train, x_test, t_test, chunk=10000, *, progress=None):
    """``evaluate()`` for one process: the accuracy on the given training and test sets
    (pass the first ``k`` samples of each to measure on a sample, as the book's
    ``Trainer`` with ``evaluate_sample_num_per_epoch=k``), in chunks so that the full
    set needs no big buffers. ``progress(done, total)``, when given, is called with the
    number of images scored so far, 0 first and then after each chunk (scoring the full
    set with a convolutional network takes long enough to look hung without it)."""
    dtype = _network_dtype(network)  # the data converted once, by :func:`in_dtype`
    x_train = in_dtype(x_train, dtype)
    x_test = None if x_test is None else in_dtype(x_test, dtype)
    total = x_train.shape[0] + (0 if x_test is None else x_test.shape[0])

    def accuracy(x, t, done):
        hits = 0.0
        for start in range(0, x.shape[0], chunk):
            xs, ts = x[start:start + chunk], t[start:start + chunk]
            hits += network.accuracy(xs, ts) * xs.shape[0]
            if progress is not None:
                progress(done + start + xs.shape[0], total)
        return float(hits / x.shape[0])

    def evaluate():
        if progress is not None:
            progress(0, total)
        return (accuracy(x_train, t_train, 0),
                None if x_test is None else accuracy(x_test, t_test, x_train.shape[0]))
    return evaluate


class Evaluation:
    """An evaluation policy for :func:`run_loop`: ``epoch()`` (its ``evaluate``) scores
    the first ``samples`` images of each set (None: all), as the book's ``Trainer`` with
    ``evaluate_sample_num_per_epoch``; ``final()`` (its ``evaluate_final``) scores the
    same training images and the whole test set, as the ``Trainer``'s final test
    accuracy. ``make(x_train, t_train, x_test, t_test) -> evaluate`` builds a scorer
    (:func:`accuracies`, or a data-parallel one). ``sampled``: whether ``samples`` is
    smaller than a set; ``n_train``, ``n_test``: the images ``epoch()`` scores,
    ``n_final``: the test images ``final()`` scores; ``seconds``: how long the last call
    took; ``after()``, when given, runs after every call, even one that raised."""

    def __init__(self, make, x_train, t_train, x_test, t_test, samples=None, *, after=None):
        if samples is not None:
            _positive("samples", samples)
        self.sampled = samples is not None and (samples < x_train.shape[0]
                                                or samples < x_test.shape[0])
        k = samples if self.sampled else None
        self.n_train, self.n_test, self.n_final = (
            x_train[:k].shape[0], x_test[:k].shape[0], x_test.shape[0])
        self._epoch = make(x_train[:k], t_train[:k], x_test[:k], t_test[:k])
        self._final = make(x_train[:k], t_train[:k], x_test, t_test) if self.sampled else self._epoch
        self._after = after
        self.seconds = None

    def _timed(self, evaluate):
        tic = time.perf_counter()
        try:
            return evaluate()
        finally:
            self.seconds = time.perf_counter() - tic
            if self._after is not None:
                self._after()

    def epoch(self):
        return self._timed(self._epoch)

    def final(self):
        return self._timed(self._final)


# ---------------------------------------------------------------------- the loop

@dataclass
class EpochRecord:
    """What is measured at the end of an epoch (``epoch`` counts from 1; a last,
    partial epoch has ``complete`` False)."""

    epoch: int
    iteration: int  # iterations done so far
    steps: int  # iterations in this epoch (run by this call)
    loss: float  # mean batch loss over those iterations
    train_acc: float
    test_acc: float  # None without test data
    seconds: float  # wall time of this epoch, training and evaluation
    complete: bool = True


@dataclass
class History:
    """``loss``: the batch loss of every iteration; ``epochs``: an
    :class:`EpochRecord` per evaluation."""

    loss: List[float] = field(default_factory=list)
    epochs: List[EpochRecord] = field(default_factory=list)

    @property
    def train_acc(self):
        return [e.train_acc for e in self.epochs]

    @property
    def test_acc(self):
        return [e.test_acc for e in self.epochs]


def run_loop(sampler, step, iters, *, evaluate, start=0, history=None, on_step=None,
             on_epoch=None, before_evaluate=None, epoch_end=None, evaluate_last=True,
             evaluate_final=None):
    """Run iterations ``start`` .. ``iters - 1`` (0-based) and return the
    :class:`History` (``history``, extended, when given: a resumed run).

    Each iteration calls ``step(sampler.batch(i))``; after the last iteration of an
    epoch (``epoch_end(i)``, default ``sampler.ends_epoch``) and after the very last
    iteration (unless ``evaluate_last`` is false: the book's ``Trainer`` does not),
    ``before_evaluate()``, then ``evaluate()``, then ``on_epoch(record)``. After the
    very last iteration ``evaluate_final()``, when given, runs in place of
    ``evaluate()`` (the book's ``Trainer`` scores a sample after each epoch and the
    whole test set at the end). See the module docstring for the pieces.
    """
    iters, start = int(iters), int(start)
    if iters < 0 or not 0 <= start:
        raise ValueError(f"iters, start: expected 0 <= start, 0 <= iters, got {start} and {iters}")
    history = History() if history is None else history
    epoch_end = sampler.ends_epoch if epoch_end is None else epoch_end
    losses = []
    tic = time.perf_counter()
    for i in range(start, iters):
        loss = step(sampler.batch(i))
        history.loss.append(loss)
        losses.append(loss)
        if on_step is not None:
            on_step(i + 1, loss)
        complete = epoch_end(i)
        if complete or (evaluate_last and i == iters - 1):
            if before_evaluate is not None:
                before_evaluate()
            last = evaluate_final is not None and i == iters - 1
            train_acc, test_acc = (evaluate_final if last else evaluate)()
            record = EpochRecord(
                epoch=sampler.epoch_of(i) + 1, iteration=i + 1, steps=len(losses),
                loss=float(np.mean(losses)), train_acc=train_acc, test_acc=test_acc,
                seconds=time.perf_counter() - tic, complete=bool(complete))
            history.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            losses = []
            tic = time.perf_counter()
    return history
