"""The book's training loop (``common/trainer.py``).

``Trainer(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None,
verbose=True)`` and ``train()``, filling ``train_loss_list``, ``train_acc_list`` and
``test_acc_list``. By default it does what the book's does, draw for draw, so a script
seeded with ``np.random.seed`` prints the book's numbers:

- every step draws its batch with ``np.random.choice(train_size, mini_batch_size)``
  (independent draws, with replacement);
- an epoch is ``iter_per_epoch = max(train_size / mini_batch_size, 1)`` steps, a float,
  and the run ``int(epochs * iter_per_epoch)`` steps;
- the accuracies are measured after the step ``i`` (counted from 0) for which
  ``i % iter_per_epoch == 0``: after the first step of each epoch. When the division is
  not exact this can fire fewer than ``epochs`` times (e.g. only once for 1000 samples
  in batches of 300), as in the book;
- ``verbose`` prints ``train loss:`` after every step, ``=== epoch:...`` after each
  evaluation and the final test accuracy, with the book's wording.

Keyword-only, not in the book: ``sampler='shuffle'`` runs whole epochs instead:
``max(train_size // mini_batch_size, 1)`` steps over one shuffle of the training set
(every sample at most once per epoch; the last ``train_size % mini_batch_size`` of a
shuffle are left out), evaluated after each epoch's last step, so ``test_acc_list[-1]``
is the trained network's accuracy. ``rng`` (a seed or ``numpy.random.Generator``)
draws the batches instead of NumPy's global state. ``progress=True`` draws a progress
bar on stderr in place of the per-step loss lines.

A run is three parts: a sampler (which samples each step trains on, and after which
steps the epoch's evaluation runs), the step (gradient, update, loss) and the hooks
called after each step and at each evaluation.
"""

import numpy as np

from ._progress import ProgressBar
from .optimizers import get_optimizer

__all__ = ["Trainer", "BookSampler", "ShuffleSampler"]


class BookSampler:
    """The book's batches and evaluation schedule (see the module docstring)."""

    def __init__(self, train_size, batch_size, epochs, rng=None):
        self.train_size, self.batch_size, self.rng = train_size, batch_size, rng
        self.iter_per_epoch = max(train_size / batch_size, 1)  # a float, as the book
        self.max_iter = int(epochs * self.iter_per_epoch)

    def batch(self, i):
        """The sample indices of step ``i``: one ``choice`` call, with replacement."""
        if self.rng is None:
            return np.random.choice(self.train_size, self.batch_size)
        return self.rng.choice(self.train_size, self.batch_size)

    def evaluates_after(self, i):
        """Whether the epoch's evaluation runs after step ``i``: its first step."""
        return i % self.iter_per_epoch == 0


class ShuffleSampler:
    """Whole epochs: one permutation of the training set per epoch."""

    def __init__(self, train_size, batch_size, epochs, rng=None):
        self.train_size, self.batch_size, self.rng = train_size, batch_size, rng
        self.iter_per_epoch = max(train_size // batch_size, 1)
        self.max_iter = epochs * self.iter_per_epoch
        self._order = None

    def batch(self, i):
        step = i % self.iter_per_epoch
        if step == 0 or self._order is None:  # a new epoch: a new shuffle
            n = self.train_size
            self._order = np.random.permutation(n) if self.rng is None else self.rng.permutation(n)
        return self._order[step * self.batch_size:(step + 1) * self.batch_size]

    def evaluates_after(self, i):
        """After the last step of each epoch."""
        return (i + 1) % self.iter_per_epoch == 0


SAMPLERS = {"book": BookSampler, "shuffle": ShuffleSampler}


class Trainer:
    """Train ``network`` (anything with ``params``, ``gradient``, ``loss`` and
    ``accuracy``, as the book's networks) with mini-batches and an optimizer.

    ``optimizer`` is a name (``'SGD'``, ``'Momentum'``, ``'Nesterov'``, ``'AdaGrad'``,
    ``'RMSprop'``, ``'Adam'``; any case) built with ``optimizer_param``, or an optimizer
    object with ``update(params, grads)``. ``train_loss_list`` gets the batch loss after
    each step's update (as the book); ``train_acc_list``/``test_acc_list`` get one
    entry per evaluation, on the first ``evaluate_sample_num_per_epoch`` samples (all
    when None). Keyword-only: ``sampler`` (``'book'``, the default, or ``'shuffle'``),
    ``rng`` (draws the batches), ``progress`` (a bar on stderr instead of the per-step
    loss lines).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20,
                 mini_batch_size=100, optimizer="SGD", optimizer_param={"lr": 0.01},  # noqa: B006 (the book's signature; never mutated)
                 evaluate_sample_num_per_epoch=None, verbose=True, *, sampler="book",
                 rng=None, progress=False):
        self.network = network
        self.verbose = verbose
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        if len(x_train) != len(t_train):
            raise ValueError(
                f"t_train: expected {len(x_train)} targets (one per sample of x_train), got {len(t_train)}")
        if len(x_test) != len(t_test):
            raise ValueError(
                f"t_test: expected {len(x_test)} targets (one per sample of x_test), got {len(t_test)}")
        if len(x_train) == 0:
            raise ValueError("x_train: no training samples")
        if len(x_test) == 0:  # its accuracy, measured every epoch, would be undefined
            raise ValueError("x_test: no test samples")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs: expected a non-negative integer, got {epochs!r}")
        if (isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, (int, np.integer))
                or mini_batch_size < 1):
            raise ValueError(f"mini_batch_size: expected a positive integer, got {mini_batch_size!r}")
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        k = evaluate_sample_num_per_epoch
        # 0 would measure the accuracies on no samples and a negative count would drop
        # samples from the end (a slice [:-5]): neither evaluates the network
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError("evaluate_sample_num_per_epoch: expected None (every sample) or a "
                             f"positive integer, got {k!r}")
        self.evaluate_sample_num_per_epoch = None if k is None else int(k)

        if isinstance(optimizer, str):
            self.optimizer = get_optimizer(optimizer, **dict(optimizer_param or {}))
        elif hasattr(optimizer, "update"):
            self.optimizer = optimizer
        else:
            raise TypeError(f"optimizer: expected a name or an object with update(), got {optimizer!r}")

        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {sorted(SAMPLERS)}, got {sampler!r}")
        self.rng = None if rng is None else np.random.default_rng(rng)
        self.progress = bool(progress)

        self.train_size = len(x_train)
        self.sampler = SAMPLERS[sampler](self.train_size, self.batch_size, self.epochs, self.rng)
        self.iter_per_epoch = self.sampler.iter_per_epoch
        self.max_iter = self.sampler.max_iter
        self.current_iter = 0
        self.current_epoch = 0
        self._bar = None

        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []

    # ------------------------------------------------------------------ the step
    def _step(self, idx):
        """Gradient, update, then the batch loss with the updated parameters (as the book)."""
        x_batch, t_batch = self.x_train[idx], self.t_train[idx]
        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        return self.network.loss(x_batch, t_batch)

    # ----------------------------------------------------------------- the hooks
    def _after_step(self, loss):
        self.train_loss_list.append(float(loss))
        if self.verbose and self._bar is None:
            print("train loss:" + str(loss))  # str of the network's own scalar, as the book

    def _evaluate(self):
        x_tr, t_tr, x_te, t_te = self.x_train, self.t_train, self.x_test, self.t_test
        k = self.evaluate_sample_num_per_epoch
        if k is not None:
            x_tr, t_tr, x_te, t_te = x_tr[:k], t_tr[:k], x_te[:k], t_te[:k]
        train_acc = self.network.accuracy(x_tr, t_tr)
        test_acc = self.network.accuracy(x_te, t_te)
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        return train_acc, test_acc

    def _on_epoch(self):
        self.current_epoch += 1
        train_acc, test_acc = self._evaluate()
        if self.verbose:
            line = f"=== epoch:{self.current_epoch}, train acc:{train_acc}, test acc:{test_acc} ==="
            if self._bar is not None:
                self._bar.write(line)  # above the bar
            else:
                print(line)

    # ------------------------------------------------------------------- the run
    def train_step(self):
        """One mini-batch: the sampler's batch, the step, the hooks. Returns the loss."""
        i = self.current_iter
        loss = self._step(self.sampler.batch(i))
        self._after_step(loss)
        if self.sampler.evaluates_after(i):
            self._on_epoch()
        self.current_iter += 1
        return loss

    def train(self):
        """Run ``max_iter`` steps; returns the final accuracy on the whole test set."""
        self._bar = ProgressBar(self.max_iter, label="train", enabled=True) if self.progress else None
        try:
            for _ in range(self.max_iter):
                self.train_step()
                if self._bar is not None:
                    self._bar.update()
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
        return test_acc
