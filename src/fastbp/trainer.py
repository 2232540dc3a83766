"""The book's training loop (``common/trainer.py``), on fastbp's one loop.

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

``train()`` and ``train_step()`` run :func:`fastbp.loop.run_loop` from
``current_iter``: the sampler is :class:`fastbp.loop.BookSampler` or
:class:`~fastbp.loop.ShuffleSampler` (given one ``Generator`` made from ``rng``, so a
seed is one stream for the whole run, not one per epoch as ``fastbp train`` uses), the
step is the book's gradient, update and second forward pass for the loss, and the
Trainer's hooks keep its counters and lists and print its lines.
"""

import numpy as np

from ._progress import ProgressBar
from .loop import SAMPLERS, run_loop
from .optimizers import get_optimizer

__all__ = ["Trainer"]


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
        # One Generator for the whole run (the loop's samplers would take a plain seed
        # as one stream per epoch); None keeps the book's NumPy global state.
        self.rng = None if rng is None else np.random.default_rng(rng)
        self.progress = bool(progress)

        self.train_size = len(x_train)
        self.sampler = SAMPLERS[sampler](self.train_size, self.batch_size, self.rng)
        # the book's float epoch, or the shuffle's whole one
        self.iter_per_epoch = self.sampler.epoch_length
        self.max_iter = int(self.epochs * self.iter_per_epoch)
        # The book evaluates after the first step of each epoch, by its float check;
        # whole shuffled epochs after their last step (the loop's default).
        self._epoch_end = ((lambda i: i % self.sampler.epoch_length == 0) if sampler == "book"
                           else self.sampler.ends_epoch)
        self.current_iter = 0
        self.current_epoch = 0
        self._bar = None

        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []

    # ------------------------------------------------------- the loop's pieces
    def _step(self, idx):
        """Gradient, update, then the batch loss with the updated parameters (as the book)."""
        x_batch, t_batch = self.x_train[idx], self.t_train[idx]
        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)
        return self.network.loss(x_batch, t_batch)

    def _after_step(self, n, loss):
        self.current_iter = n  # steps done
        self.train_loss_list.append(float(loss))
        if self._bar is not None:
            self._bar.update()
        elif self.verbose:
            print("train loss:" + str(loss))  # str of the network's own scalar, as the book

    def _evaluate(self):
        x_tr, t_tr, x_te, t_te = self.x_train, self.t_train, self.x_test, self.t_test
        k = self.evaluate_sample_num_per_epoch
        if k is not None:
            x_tr, t_tr, x_te, t_te = x_tr[:k], t_tr[:k], x_te[:k], t_te[:k]
        return self.network.accuracy(x_tr, t_tr), self.network.accuracy(x_te, t_te)

    def _on_epoch(self, record):
        self.current_epoch += 1  # the book's count of evaluations, not the sampler's epoch
        self.train_acc_list.append(record.train_acc)
        self.test_acc_list.append(record.test_acc)
        if self.verbose:
            line = (f"=== epoch:{self.current_epoch}, train acc:{record.train_acc}, "
                    f"test acc:{record.test_acc} ===")
            if self._bar is not None:
                self._bar.write(line)  # above the bar
            else:
                print(line)

    def _run(self, steps):
        """``steps`` more steps from ``current_iter``; returns the loop's History."""
        start = self.current_iter
        return run_loop(self.sampler, self._step, start + steps, evaluate=self._evaluate,
                        start=start, on_step=self._after_step, on_epoch=self._on_epoch,
                        epoch_end=self._epoch_end, evaluate_last=False)

    # ------------------------------------------------------------------- the run
    def train_step(self):
        """One mini-batch: the sampler's batch, the step, the hooks. Returns the loss."""
        return self._run(1).loss[-1]

    def train(self):
        """Run ``max_iter`` steps; returns the final accuracy on the whole test set."""
        self._bar = ProgressBar(self.max_iter, label="train", enabled=True) if self.progress else None
        try:
            self._run(self.max_iter)
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
        return test_acc
