"""The data-parallel step: every rank holds the whole network, trains on its shard of
each global batch, and ONE ``Allreduce`` per step combines the gradients.

Each step, every rank draws the same global batch (the same sampler, the same seed),
computes the gradient on its own contiguous shard of it, and the gradients are combined
with one ``Allreduce`` over a single preallocated contiguous buffer holding all
parameters; every rank then applies the same update, so the parameters stay identical
on every rank without ever being sent again.

The combination is the shard-size-weighted mean ``sum_r n_r * g_r / sum_r n_r``. The
book's losses are means over the batch (plus a weight-decay term that does not depend
on the batch), so this weighted mean is exactly the gradient a single process computes
on the whole batch (to float rounding), even when the shards are uneven. The shard sizes
and the shard losses travel in two extra slots of the same buffer, so a step still costs
a single collective.
"""
import os
import zlib

import numpy as np

from .. import kernels
from ..loop import BookSampler, History, batch_loss, run_loop
from ..networks import output_layer
from .checkpoints import epoch_saver, load_checkpoint, resume_from
from .collectives import (DEFAULT_TIMEOUT, abort_on_error, allreduce, bcast, bcast_arrays,
                          mpi, world)

__all__ = ["DataParallel", "shard", "shard_bounds", "share_cores", "evaluate",
           "broadcast_data", "train_distributed"]


def shard_bounds(n, rank, size):
    """``(start, stop)`` of rank ``rank``'s contiguous share of ``n`` items.

    The first ``n % size`` ranks get one item more (as ``numpy.array_split``), so shard
    sizes differ by at most one; a rank may get an empty shard when ``n < size``.
    """
    n, rank, size = int(n), int(rank), int(size)
    if size < 1:
        raise ValueError(f"size: expected at least 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank: expected 0 <= rank < {size}, got {rank}")
    if n < 0:
        raise ValueError(f"n: expected a count >= 0, got {n}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(batch_indices, rank, size):
    """Rank ``rank``'s contiguous slice of ``batch_indices`` (1-D) among ``size`` ranks."""
    batch_indices = np.asarray(batch_indices)
    if batch_indices.ndim != 1:
        raise ValueError(f"batch_indices: expected a 1-D array, got shape {batch_indices.shape}")
    start, stop = shard_bounds(batch_indices.shape[0], rank, size)
    return batch_indices[start:stop]


class DataParallel:
    """A network trained data-parallel: one gradient ``Allreduce`` per step.

    ``network`` needs ``params`` (dict name -> ndarray, held by reference by its layers)
    and ``gradient(x, t)`` -> dict of the same names; all parameters must share one
    float dtype. ``optimizer`` needs ``update(params, grads)`` (in place); without one,
    plain SGD ``params[k] -= lr * grads[k]``. ``comm`` defaults to ``MPI.COMM_WORLD``.
    ``timeout`` (seconds, ``None`` for none) bounds every collective (see module doc).

    On construction the ranks check that their networks have the same parameter names,
    shapes and dtype, then ``root``'s parameters are broadcast into every rank's arrays
    in place, so every rank starts identical.

    The ``grads`` passed to the optimizer are views into a buffer reused by the next
    step: an optimizer that keeps them must copy them.
    """

    def __init__(self, network, optimizer=None, comm=None, lr=0.01, *,
                 timeout=DEFAULT_TIMEOUT, root=0):
        self.network = network
        self.optimizer = optimizer
        self.comm = world(comm)
        self.lr = float(lr)
        self.timeout = None if timeout is None else float(timeout)
        self.root = int(root)
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        if not 0 <= self.root < self.size:
            raise ValueError(f"root: expected 0 <= root < {self.size}, got {root}")

        params = getattr(network, "params", None)
        if not isinstance(params, dict) or not params:
            raise TypeError("network: expected an object with a non-empty dict `params`")
        self.keys = sorted(params)  # the same order on every rank
        dtypes = {np.asarray(params[k]).dtype for k in self.keys}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
            raise TypeError(
                "network.params: expected float32 or float64 arrays of one dtype, got "
                + ", ".join(f"{k}: {np.asarray(params[k]).dtype}" for k in self.keys)
            )
        self.dtype = next(iter(dtypes))
        offsets, total = {}, 0
        for k in self.keys:
            offsets[k] = (total, total + params[k].size)
            total += params[k].size
        self.n_params = total
        # [all gradients | n_r * loss_r | n_r]: one buffer, one collective per step.
        self._buf = np.zeros(total + 2, dtype=self.dtype)
        self._views = {
            k: self._buf[a:b].reshape(params[k].shape) for k, (a, b) in offsets.items()
        }
        self._check_same_layout()
        self.broadcast_parameters()

    @property
    def bytes_per_step(self):
        """Size of the buffer each rank contributes to the step's ``Allreduce``."""
        return self._buf.nbytes

    # -- collectives -----------------------------------------------------------------
    def _check_same_layout(self):
        params = self.network.params
        sig = ";".join(f"{k}:{params[k].shape}:{self.dtype.str}" for k in self.keys)
        mine = np.array([zlib.crc32(sig.encode()), self.n_params], dtype=np.int64)
        lo, hi = mine.copy(), mine.copy()
        MPI = mpi()
        allreduce(self.comm, lo, MPI.MIN, self.timeout, "the parameter layout check")
        allreduce(self.comm, hi, MPI.MAX, self.timeout, "the parameter layout check")
        if not (np.array_equal(lo, mine) and np.array_equal(hi, mine)):
            raise ValueError(
                f"network.params: the ranks' networks differ (rank {self.rank} has {sig}); "
                "every rank must build the same architecture"
            )

    def _pack_params(self):
        params = self.network.params
        for k in self.keys:
            self._views[k][...] = params[k]

    def broadcast_parameters(self):
        """Copy ``root``'s parameters into every rank's arrays (in place)."""
        if self.rank == self.root:
            self._pack_params()
        bcast(self.comm, self._buf[:self.n_params], self.root, self.timeout,
               "the parameter broadcast")
        if self.rank != self.root:
            params = self.network.params
            for k in self.keys:
                np.copyto(params[k], self._views[k])  # the layers hold these arrays

    def in_sync(self):
        """True when every rank holds bitwise-identical parameters (two collectives)."""
        MPI = mpi()
        self._pack_params()
        lo = self._buf[:self.n_params].copy()
        hi = lo.copy()
        allreduce(self.comm, lo, MPI.MIN, self.timeout, "the parameter comparison")
        allreduce(self.comm, hi, MPI.MAX, self.timeout, "the parameter comparison")
        return bool(np.array_equal(lo, hi))

    # -- training --------------------------------------------------------------------
    def reduce_gradients(self, x, t, *, with_loss=False):
        """The whole batch's gradient from every rank's shard ``(x, t)``.

        Returns ``(grads, loss)``: ``grads`` maps names to views into the step buffer,
        ``loss`` is the whole batch's mean loss when ``with_loss`` (one more forward pass
        per shard, as the book's training loop does) and ``None`` otherwise. A rank
        with an empty shard contributes nothing.
        """
        n = int(np.shape(x)[0]) if np.ndim(x) else 0
        if n != int(np.shape(t)[0] if np.ndim(t) else 0):
            raise ValueError(f"t: expected {n} targets (one per row of x), got shape {np.shape(t)}")
        buf = self._buf
        if n == 0:
            buf[:] = 0
        else:
            grads = self.network.gradient(x, t)
            for k in self.keys:
                g = grads[k]
                if np.shape(g) != self._views[k].shape:
                    raise ValueError(
                        f"network.gradient: {k} has shape {np.shape(g)}, expected "
                        f"{self._views[k].shape}"
                    )
                np.multiply(g, n, out=self._views[k])  # weight by shard size
            buf[-2] = self._shard_loss(x, t) * n if with_loss else 0.0
            buf[-1] = n
        allreduce(self.comm, buf, mpi().SUM, self.timeout, "the gradient Allreduce")
        total = buf[-1]
        if total <= 0:
            raise ValueError("x: the batch is empty on every rank")
        np.divide(buf[:-1], total, out=buf[:-1])
        loss = float(buf[-2]) if with_loss else None
        return self._views, loss

    def _shard_loss(self, x, t):
        """The shard's loss: from the gradient's own forward pass when the network
        keeps it (fastbp's networks; training mode, as ``train_step``), else by
        one more forward pass (``network.loss``)."""
        net = self.network
        if hasattr(net, "_last_loss") or output_layer(net) is not None:
            return batch_loss(net)
        return float(net.loss(x, t))

    def sync_state(self):
        """Average the network's extra state (batch normalization's running
        statistics, ``state_arrays()``) over the ranks, in place: each rank normalizes
        its own shard, so the statistics drift apart; after this every rank predicts
        with the same ones (the mean of the ranks' averages). One collective."""
        state = self.network.state_arrays() if hasattr(self.network, "state_arrays") else {}
        if not state:
            return
        keys = sorted(state)
        buf = np.concatenate([np.asarray(state[k], dtype=np.float64).ravel() for k in keys])
        allreduce(self.comm, buf, mpi().SUM, self.timeout, "the batch-norm statistics")
        buf /= self.size
        start = 0
        for k in keys:
            a = state[k]
            np.copyto(a, buf[start:start + a.size].reshape(a.shape))
            start += a.size

    def make_step(self, x, t):
        """``step(indices) -> loss`` for :func:`fastbp.loop.run_loop`: this rank's shard
        of the global batch ``indices`` (converted to the network's dtype), one
        step; the loss is the whole batch's."""
        def step(indices):
            mine = shard(indices, self.rank, self.size)
            return self.step(x[mine].astype(self.dtype, copy=False), t[mine], with_loss=True)
        return step

    def make_evaluate(self, x_train, t_train, x_test, t_test):
        """``evaluate()`` for :func:`fastbp.loop.run_loop`: each rank scores a share."""
        return lambda: (evaluate(self, x_train, t_train),
                        None if x_test is None else evaluate(self, x_test, t_test))

    def step(self, x, t, *, with_loss=False):
        """One training step on this rank's shard ``(x, t)`` of the global batch.

        Every rank must call it (with a possibly empty shard) the same number of times.
        Returns the batch's mean loss when ``with_loss``, else ``None``.
        """
        grads, loss = self.reduce_gradients(x, t, with_loss=with_loss)
        params = self.network.params
        if self.optimizer is None:
            for k in self.keys:
                params[k] -= self.lr * grads[k]
        else:
            self.optimizer.update(params, grads)
        return loss


def evaluate(dp, x, t, chunk=10000):
    """Global accuracy: each rank scores its contiguous share; counts are summed."""
    MPI = mpi()
    counts = np.zeros(2, dtype=np.float64)
    if x is not None:
        start, stop = shard_bounds(x.shape[0], dp.rank, dp.size)
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            counts[0] += np.rint(dp.network.accuracy(x[a:b], t[a:b]) * (b - a))
        counts[1] = stop - start
    allreduce(dp.comm, counts, MPI.SUM, dp.timeout, "the accuracy reduction")
    return float(counts[0] / counts[1]) if counts[1] else None


def check_data(x, t, name):
    if x is None:
        return None, None
    x = np.asarray(x)
    t = np.asarray(t)
    if x.ndim < 1 or t.ndim < 1 or x.shape[0] != t.shape[0]:
        raise ValueError(
            f"{name}: x and t must have the same number of samples, got shapes "
            f"{x.shape} and {t.shape}"
        )
    return x, t


def share_cores(comm):
    """Give each rank of this node its share of the cores for BLAS threads.

    Several ranks per node each running a full-width BLAS thread pool oversubscribe the
    cores; on this project's 2-core machine that made a 2-rank epoch 10x slower. The
    environment (``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``, e.g. ``mpirun -x``) wins;
    otherwise ``threadpoolctl`` is used when installed. Returns a note for the log.
    """
    MPI = mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    per_node = local.Get_size()
    local.Free()
    if per_node == 1:
        return None
    threads = max(1, (os.cpu_count() or 1) // per_node)
    # fastbp's own threads (the compiled kernels and their matrix products)
    kernels.set_num_threads(min(kernels.get_num_threads(), threads))
    set_by_env = [v for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                  if os.environ.get(v)]
    if set_by_env:
        return None
    try:  # NumPy's BLAS threads, for the NumPy backend's products
        from threadpoolctl import threadpool_limits
    except ImportError:
        return (f"note: {per_node} ranks share this node's {os.cpu_count()} cores; run with "
                f"`mpirun -x OPENBLAS_NUM_THREADS={threads}` (or install threadpoolctl) so their "
                "BLAS threads do not compete")
    threadpool_limits(limits=threads, user_api="blas")
    return None


def broadcast_data(comm, x_train, t_train, x_test, t_test, root=0, timeout=DEFAULT_TIMEOUT):
    """The data on every rank: ``root``'s is broadcast (raw arrays, no pickle) unless
    every rank already holds all of it. Returns ``(x_train, t_train, x_test, t_test)``."""
    MPI = mpi()
    rank = comm.Get_rank()
    x_train, t_train = check_data(x_train, t_train, "train data")
    x_test, t_test = check_data(x_test, t_test, "test data")
    have = np.array([x_train is not None, x_test is not None], dtype=np.int64)
    least, most = have.copy(), have.copy()
    allreduce(comm, least, MPI.MIN, timeout, "the data check")
    allreduce(comm, most, MPI.MAX, timeout, "the data check")
    if not least[0] or least[1] != most[1]:
        if rank == root:
            if x_train is None:
                raise ValueError("x_train: the root rank must have the training data")
            data = {"x_train": x_train, "t_train": t_train}
            if x_test is not None:
                data.update(x_test=x_test, t_test=t_test)
        else:
            data = None
        data = bcast_arrays(comm, data, root, timeout, "the data broadcast")
        x_train, t_train = data["x_train"], data["t_train"]
        x_test, t_test = data.get("x_test"), data.get("t_test")
    n = np.array([x_train.shape[0]], dtype=np.int64)
    lo, hi = n.copy(), n.copy()
    allreduce(comm, lo, MPI.MIN, timeout, "the data check")
    allreduce(comm, hi, MPI.MAX, timeout, "the data check")
    if lo[0] != hi[0]:
        raise ValueError(f"x_train: the ranks hold different numbers of samples ({lo[0]} to {hi[0]})")
    if n[0] == 0:
        raise ValueError("x_train: no training samples")
    return x_train, t_train, x_test, t_test


def resume_collective(comm, checkpoint, network, optimizer, expected, root=0,
                      timeout=DEFAULT_TIMEOUT):
    """:func:`~.checkpoints.resume_from` on every rank: ``root`` reads ``checkpoint``
    (when it exists) and broadcasts its arrays. Returns ``(start, history)``, ``(0,
    None)`` without a checkpoint."""
    MPI = mpi()
    rank = comm.Get_rank()
    exists = np.array([rank == root and os.path.exists(checkpoint)], dtype=np.int64)
    allreduce(comm, exists, MPI.MAX, timeout, "the checkpoint check")
    if not exists[0]:
        return 0, None
    arrays = load_checkpoint(checkpoint) if rank == root else None
    arrays = bcast_arrays(comm, arrays, root, timeout, "the checkpoint broadcast")
    return resume_from(arrays, network, optimizer, checkpoint, expected)


def train_distributed(network, x_train, t_train, x_test=None, t_test=None, iters=10000,
                      batch_size=100, lr=0.1, optimizer=None, seed=0, comm=None,
                      on_epoch=None, checkpoint=None, resume=False, *,
                      timeout=DEFAULT_TIMEOUT, on_iteration=None, root=0):
    """Train ``network`` data-parallel over ``comm``: :func:`fastbp.loop.run_loop` with
    the book's sampler (``BookSampler(train_size, batch_size, seed)``) and a
    :class:`DataParallel` step. Returns the :class:`fastbp.loop.History` (the same on
    every rank, but the times).

    Every rank must call it with the same arguments, except the data: ranks other than
    ``root`` may pass ``None`` for the arrays, and then ``root``'s are broadcast.
    ``on_epoch(record)`` (an ``EpochRecord``) and ``on_iteration(i, loss)`` are called
    on ``root`` only; ``root`` writes ``checkpoint`` after every complete epoch; with
    ``resume`` and an existing checkpoint, training continues after its last epoch.
    Any exception on a rank of a multi-rank job prints a traceback and aborts every
    rank. ``fastbp train --distributed`` puts the same pieces together.
    """
    comm = world(comm)
    with abort_on_error(comm):
        x_train, t_train, x_test, t_test = broadcast_data(
            comm, x_train, t_train, x_test, t_test, root, timeout)
        dp = DataParallel(network, optimizer, comm, lr, timeout=timeout, root=root)
        is_root = dp.rank == root
        sampler = BookSampler(x_train.shape[0], batch_size, int(seed))
        expected = {"seed": int(seed), "batch_size": int(batch_size),
                    "train_size": int(x_train.shape[0]), "sampler": sampler.name}
        start, history = 0, None
        if checkpoint is not None and resume:
            start, history = resume_collective(comm, checkpoint, network, optimizer,
                                               expected, root, timeout)
        history = History() if history is None else history
        hooks = [on_epoch] if is_root and on_epoch is not None else []
        if checkpoint is not None and is_root:
            hooks.append(epoch_saver(checkpoint, network, optimizer, expected, history))

        def at_epoch(record):
            for hook in hooks:
                hook(record)

        return run_loop(
            sampler, dp.make_step(x_train, t_train), iters, start=start,
            history=history, evaluate=dp.make_evaluate(x_train, t_train, x_test, t_test),
            before_evaluate=dp.sync_state, on_epoch=at_epoch,
            on_step=on_iteration if is_root else None)
