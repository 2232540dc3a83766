"""The book's training loop (``common/trainer.py``), with whole epochs.

``Trainer(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None,
verbose=True)`` and ``train()``, filling ``train_loss_list``, ``train_acc_list`` and
``test_acc_list`` as the book does.

Where it differs from the book, on purpose:
- An epoch is ``iter_per_epoch = max(train_size // mini_batch_size, 1)`` steps (an
  integer), over one shuffled pass of the training set: every sample is seen once per
  epoch (the last ``train_size % mini_batch_size`` of the shuffle are left out). The
  book draws every batch independently, with replacement, and compares the step
  counter with a float ``train_size / mini_batch_size``, which never matches when the
  division is not exact, so it then evaluates only once.
- The accuracies are measured at the end of each epoch (the book measures after the
  first step of each epoch), so ``test_acc_list[-1]`` is the trained network's.
- ``verbose`` prints one line per epoch (not the loss of every step) and, on a
  terminal, draws a progress bar on stderr.
- ``rng`` (keyword-only): a seed or ``numpy.random.Generator`` for the shuffles; by
  default NumPy's global state, so ``np.random.seed`` makes a run repeatable.
"""
import sys

import numpy as np

from ._progress import ProgressBar
from .optimizers import get_optimizer

__all__ = ["Trainer"]


class Trainer:
    """Train ``network`` (anything with ``params``, ``gradient``, ``loss`` and
    ``accuracy``, as the book's networks) with mini-batches and an optimizer.

    ``optimizer`` is a name (``'SGD'``, ``'Momentum'``, ``'Nesterov'``, ``'AdaGrad'``,
    ``'RMSprop'``, ``'Adam'``; any case) built with ``optimizer_param``, or an optimizer
    object with ``update(params, grads)``. ``train_loss_list`` gets the batch loss after
    each step's update (as the book); ``train_acc_list``/``test_acc_list`` get one
    entry per epoch, on the first ``evaluate_sample_num_per_epoch`` samples (all when
    None). Keyword-only: ``rng`` (shuffles), ``progress`` (draw the bar: default when
    ``verbose`` and stderr is a terminal).
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20,
                 mini_batch_size=100, optimizer="SGD", optimizer_param={"lr": 0.01},  # noqa: B006 (the book's signature; never mutated)
                 evaluate_sample_num_per_epoch=None, verbose=True, *, rng=None,
                 progress=None):
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

        self.rng = None if rng is None else np.random.default_rng(rng)
        self.progress = (verbose and sys.stderr.isatty()) if progress is None else bool(progress)

        self.train_size = len(x_train)
        self.iter_per_epoch = max(self.train_size // self.batch_size, 1)
        self.max_iter = self.epochs * self.iter_per_epoch
        self.current_iter = 0
        self.current_epoch = 0
        self._order = None
        self._bar = None

        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []

    def _batch_indices(self):
        step = self.current_iter % self.iter_per_epoch
        if step == 0 or self._order is None:  # a new epoch: a new shuffle
            n = self.train_size
            self._order = np.random.permutation(n) if self.rng is None else self.rng.permutation(n)
        return self._order[step * self.batch_size:(step + 1) * self.batch_size]

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

    def train_step(self):
        """One mini-batch: gradient, update, loss; evaluation at the end of an epoch."""
        idx = self._batch_indices()
        x_batch, t_batch = self.x_train[idx], self.t_train[idx]
        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        loss = float(self.network.loss(x_batch, t_batch))
        self.train_loss_list.append(loss)
        self.current_iter += 1
        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            train_acc, test_acc = self._evaluate()
            if self.verbose:
                line = f"=== epoch:{self.current_epoch}, train acc:{train_acc}, test acc:{test_acc} ==="
                if self._bar is not None:
                    self._bar.write(line)  # above the bar
                else:
                    print(line)
        return loss

    def train(self):
        """Run ``epochs`` epochs; returns the final accuracy on the whole test set."""
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
            print(f"test acc:{test_acc}")
        return test_acc
