"""Data-parallel training over MPI (Open MPI through ``mpi4py``; ``pip install fastbp[mpi]``).

Every rank holds a full copy of the network. Each step, every rank draws the same global
random batch (same seed), computes the gradient on its own shard of it, and the gradients
are combined with ONE ``Allreduce`` over a single preallocated contiguous buffer holding
all parameters; every rank then applies the same update, so the parameters stay
identical on every rank without ever being sent again.

The combination is the shard-size-weighted mean ``sum_r n_r * g_r / sum_r n_r``. The
book's losses are means over the batch (plus, for ``MultiLayerNet``, a weight-decay term
that does not depend on the batch), so this weighted mean is exactly the gradient a single
process computes on the whole batch (to float rounding), even when the shards are
uneven. The shard sizes (and, on request, the shard losses) travel in two extra slots of
the same buffer, so a step still costs a single collective.

Faults: every collective runs with a deadline (non-blocking ``Iallreduce``/``Ibcast``
polled until done); a rank whose collective misses it prints why and calls
``comm.Abort``, which stops all ranks. ``train_distributed`` and ``main`` wrap their
work so that a rank that raises prints its traceback and aborts the job at once instead
of leaving the others waiting. A rank that dies outright is noticed by ``mpirun`` itself.

Checkpoints are ``.npz`` files written with ``allow_pickle=False``-readable contents
only: parameters, optimizer state, counters and the RNG state, as arrays.

Run: ``mpirun -n 2 python -m fastbp.distributed --iters 6000 --batch-size 100``
(see ``docs/distributed.md``). ``mpi4py`` is imported only when a communicator is
needed, so this module imports without it.
"""
import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
import zlib

import numpy as np

from .datasets import load_mnist
from .datasets._idx import read_idx

__all__ = [
    "DataParallel", "CollectiveTimeout", "shard", "shard_bounds", "train_distributed",
    "abort_on_error", "save_checkpoint", "load_checkpoint", "read_idx", "load_mnist_dir",
    "build_parser", "main", "DEFAULT_TIMEOUT",
]

#: Seconds a rank waits for a collective before it aborts the job. It must exceed the
#: longest time one rank can legitimately spend between two collectives (a training
#: step, one shard of the evaluation, writing a checkpoint).
DEFAULT_TIMEOUT = 120.0

_CHECKPOINT_VERSION = 1
_BCAST_CHUNK = 1 << 28  # bytes per Bcast message: MPI counts are 32-bit ints


class CollectiveTimeout(RuntimeError):
    """A collective operation did not complete within its deadline."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fastbp.distributed needs mpi4py and an MPI library: "
            "apt-get install openmpi-bin libopenmpi-dev && pip install 'fastbp[mpi]'"
        ) from exc
    return MPI


def _world(comm):
    return _mpi().COMM_WORLD if comm is None else comm


# --------------------------------------------------------------------------- sharding
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


# --------------------------------------------------------------------------- faults
@contextlib.contextmanager
def abort_on_error(comm=None):
    """Turn an exception on one rank into a clear message and ``comm.Abort(1)``.

    Without it, a rank that raises leaves the other ranks waiting in their next
    collective (until its timeout). With a single rank the exception propagates as usual.
    """
    comm = _world(comm)
    try:
        yield comm
    except BaseException as exc:  # noqa: BLE001 - every failure must stop the job
        if comm.Get_size() == 1 or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            raise
        rank, size = comm.Get_rank(), comm.Get_size()
        sys.stdout.flush()
        sys.stderr.write(
            f"fastbp.distributed: rank {rank} of {size} failed, aborting all ranks:\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
        sys.stderr.flush()
        comm.Abort(1)


def _wait(comm, request, timeout, what):
    """Complete ``request`` or abort the job once ``timeout`` seconds have passed.

    A collective that cannot complete (a peer died, raised or is stuck) cannot be
    cancelled in MPI, so the only clean way out is ``Abort``, after saying why.
    """
    if timeout is None:
        request.Wait()
        return
    if request.Test():
        return
    start = time.monotonic()
    pause = 20e-6
    while not request.Test():
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            msg = (
                f"fastbp.distributed: rank {comm.Get_rank()} of {comm.Get_size()}: {what} "
                f"did not complete within {timeout:g} s; another rank has failed, died or "
                f"is stuck (raise the timeout if steps are legitimately this slow). "
                f"Aborting all ranks."
            )
            sys.stdout.flush()
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
            comm.Abort(1)
            raise CollectiveTimeout(msg)  # only reached with a communicator that returns
        # Spin briefly (a step's allreduce usually lands within microseconds), then back
        # off so a waiting rank does not steal a core from a rank still computing.
        if elapsed > 1e-3:
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)


def _allreduce(comm, buf, op, timeout, what):
    MPI = _mpi()
    if timeout is None:
        comm.Allreduce(MPI.IN_PLACE, buf, op=op)
    else:
        _wait(comm, comm.Iallreduce(MPI.IN_PLACE, buf, op=op), timeout, what)


def _bcast(comm, buf, root, timeout, what):
    """Broadcast a contiguous array in place, in chunks that fit MPI's int counts."""
    if not buf.flags.c_contiguous:
        raise ValueError(f"{what}: the buffer must be C-contiguous")
    flat = buf.reshape(-1).view(np.uint8)
    for start in range(0, max(flat.shape[0], 1), _BCAST_CHUNK):
        part = flat[start:start + _BCAST_CHUNK]
        if timeout is None:
            comm.Bcast(part, root=root)
        else:
            _wait(comm, comm.Ibcast(part, root=root), timeout, what)


_DTYPES = (np.uint8, np.int8, np.int32, np.int64, np.uint32, np.uint64, np.float32,
           np.float64, np.bool_)
_HEADER = 10  # dtype index, ndim, up to 8 dimensions


def _bcast_arrays(comm, arrays, root=0, timeout=DEFAULT_TIMEOUT, what="broadcast"):
    """Broadcast a dict of arrays from ``root`` (``arrays`` ignored elsewhere); no pickle."""
    rank = comm.Get_rank()
    if rank == root:
        names = list(arrays)
        blob = np.frombuffer("\n".join(names).encode(), dtype=np.uint8).copy()
        count = np.array([len(names), blob.shape[0]], dtype=np.int64)
    else:
        count = np.zeros(2, dtype=np.int64)
    _bcast(comm, count, root, timeout, what)
    if rank != root:
        blob = np.empty(int(count[1]), dtype=np.uint8)
    _bcast(comm, blob, root, timeout, what)
    names = blob.tobytes().decode().split("\n") if count[0] else []
    out = {}
    for name in names:
        header = np.zeros(_HEADER, dtype=np.int64)
        if rank == root:
            a = np.require(arrays[name], requirements="C")  # keeps 0-d arrays 0-d
            kinds = [np.dtype(d) for d in _DTYPES]
            if a.dtype not in kinds or a.ndim > _HEADER - 2:
                raise TypeError(f"{name}: cannot broadcast dtype {a.dtype} with {a.ndim} dims")
            header[0], header[1] = kinds.index(a.dtype), a.ndim
            header[2:2 + a.ndim] = a.shape
        _bcast(comm, header, root, timeout, what)
        if rank != root:
            ndim = int(header[1])
            a = np.empty(tuple(int(d) for d in header[2:2 + ndim]), dtype=_DTYPES[header[0]])
        _bcast(comm, a, root, timeout, what)
        out[name] = a
    return out


# --------------------------------------------------------------------------- the wrapper
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
        self.comm = _world(comm)
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
        MPI = _mpi()
        _allreduce(self.comm, lo, MPI.MIN, self.timeout, "the parameter layout check")
        _allreduce(self.comm, hi, MPI.MAX, self.timeout, "the parameter layout check")
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
        _bcast(self.comm, self._buf[:self.n_params], self.root, self.timeout,
               "the parameter broadcast")
        if self.rank != self.root:
            params = self.network.params
            for k in self.keys:
                np.copyto(params[k], self._views[k])  # the layers hold these arrays

    def in_sync(self):
        """True when every rank holds bitwise-identical parameters (two collectives)."""
        MPI = _mpi()
        self._pack_params()
        lo = self._buf[:self.n_params].copy()
        hi = lo.copy()
        _allreduce(self.comm, lo, MPI.MIN, self.timeout, "the parameter comparison")
        _allreduce(self.comm, hi, MPI.MAX, self.timeout, "the parameter comparison")
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
            buf[-2] = float(self.network.loss(x, t)) * n if with_loss else 0.0
            buf[-1] = n
        _allreduce(self.comm, buf, _mpi().SUM, self.timeout, "the gradient Allreduce")
        total = buf[-1]
        if total <= 0:
            raise ValueError("x: the batch is empty on every rank")
        np.divide(buf[:-1], total, out=buf[:-1])
        loss = float(buf[-2]) if with_loss else None
        return self._views, loss

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


# --------------------------------------------------------------------------- checkpoints
def _optimizer_state(optimizer):
    """The optimizer's state as arrays: dict-of-array attributes and integer counters.

    Works with the book's optimizers (``Momentum.v``, ``AdaGrad.h``, ``Adam.m/v/iter``,
    ...). Float attributes are hyperparameters (``lr``, ``momentum``) and are left to the
    constructor.
    """
    state = {}
    if optimizer is None:
        return state
    for attr, value in sorted(vars(optimizer).items()):
        if isinstance(value, dict) and value and all(
                isinstance(v, np.ndarray) for v in value.values()):
            for key, v in value.items():
                state[f"opt/{attr}/{key}"] = v
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            state[f"opt/{attr}"] = np.array(int(value), dtype=np.int64)
    return state


def _restore_optimizer(optimizer, arrays):
    dicts = {}
    for name, value in arrays.items():
        if not name.startswith("opt/"):
            continue
        parts = name.split("/", 2)
        if len(parts) == 3:
            dicts.setdefault(parts[1], {})[parts[2]] = np.array(value)
        elif optimizer is not None:
            setattr(optimizer, parts[1], int(value))
    if dicts and optimizer is None:
        raise ValueError("checkpoint: holds optimizer state but no optimizer was given")
    for attr, d in dicts.items():
        setattr(optimizer, attr, d)


def save_checkpoint(path, network, optimizer=None, **meta):
    """Write parameters, optimizer state and ``meta`` (numbers/arrays) to ``path``.

    The file is a plain ``.npz`` of arrays (readable with ``allow_pickle=False``),
    written to a temporary file first and renamed, so a crash never leaves half a file.
    """
    arrays = {f"param/{k}": np.asarray(v) for k, v in network.params.items()}
    arrays.update(_optimizer_state(optimizer))
    for k, v in meta.items():
        arrays[f"meta/{k}"] = np.asarray(v)
    arrays["meta/version"] = np.array(_CHECKPOINT_VERSION, dtype=np.int64)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_checkpoint(path):
    """The arrays of a checkpoint as a dict (``allow_pickle=False``)."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    version = int(arrays.get("meta/version", -1))
    if version != _CHECKPOINT_VERSION:
        raise ValueError(f"{path}: not a fastbp.distributed checkpoint (version {version})")
    return arrays


def _apply_checkpoint(arrays, network, optimizer):
    params = network.params
    for k in params:
        name = f"param/{k}"
        if name not in arrays:
            raise ValueError(f"checkpoint: no parameter {k!r}")
        if arrays[name].shape != params[k].shape:
            raise ValueError(
                f"checkpoint: parameter {k!r} has shape {arrays[name].shape}, the network "
                f"has {params[k].shape}"
            )
        np.copyto(params[k], arrays[name])  # in place: the layers hold these arrays
    _restore_optimizer(optimizer, arrays)


# --------------------------------------------------------------------------- the loop
def _check_data(x, t, name):
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


def _evaluate(dp, x, t, chunk=10000):
    """Global accuracy: each rank scores its contiguous share; counts are summed."""
    MPI = _mpi()
    counts = np.zeros(2, dtype=np.float64)
    if x is not None:
        start, stop = shard_bounds(x.shape[0], dp.rank, dp.size)
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            counts[0] += np.rint(dp.network.accuracy(x[a:b], t[a:b]) * (b - a))
        counts[1] = stop - start
    _allreduce(dp.comm, counts, MPI.SUM, dp.timeout, "the accuracy reduction")
    return float(counts[0] / counts[1]) if counts[1] else None


def train_distributed(network, x_train, t_train, x_test=None, t_test=None, iters=10000,
                      batch_size=100, lr=0.1, optimizer=None, seed=0, comm=None,
                      on_epoch=None, checkpoint=None, resume=False, *,
                      timeout=DEFAULT_TIMEOUT, on_iteration=None, root=0):
    """Train ``network`` data-parallel over ``comm``, the book's loop split across ranks.

    Every rank must call it with the same arguments, except the data: ranks other than
    ``root`` may pass ``None`` for the arrays, and then ``root``'s are broadcast (no
    pickle). Each of the ``iters`` iterations draws a global batch of ``batch_size``
    indices (with replacement, as the book) from ``default_rng([seed, epoch])``, so
    every rank draws the same batch; rank ``r`` trains on its shard (``shard``).
    An epoch is ``max(len(x_train) // batch_size, 1)`` iterations.

    After every completed epoch the train and test accuracies are computed (each rank
    scores a share; counts are summed), ``on_epoch(epoch, train_acc, test_acc)`` is
    called on ``root`` only (``test_acc`` is ``None`` without test data), and ``root``
    writes ``checkpoint`` (a ``.npz`` path) if given. With ``resume`` and an existing
    checkpoint, training continues after its last completed epoch. ``on_iteration(i,
    loss)`` (root only) gets the global batch's mean loss after each step (one more
    forward pass per shard, as the book).

    Any exception on a rank of a multi-rank job prints a traceback and aborts every rank.
    Returns a dict: ``train_acc``, ``test_acc``, ``epoch_seconds`` (lists per epoch, the
    same on every rank but the times), ``iterations`` (done in all), ``iterations_run``
    and ``train_seconds`` (by this call, evaluation excluded), ``iter_per_epoch``,
    ``ranks``, ``bytes_per_step``.
    """
    comm = _world(comm)
    with abort_on_error(comm):
        return _train(network, x_train, t_train, x_test, t_test, int(iters),
                      int(batch_size), lr, optimizer, int(seed), comm, on_epoch,
                      checkpoint, resume, timeout, on_iteration, int(root))


def _train(network, x_train, t_train, x_test, t_test, iters, batch_size, lr, optimizer,
           seed, comm, on_epoch, checkpoint, resume, timeout, on_iteration, root):
    MPI = _mpi()
    rank = comm.Get_rank()
    if iters < 0:
        raise ValueError(f"iters: expected >= 0, got {iters}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    x_train, t_train = _check_data(x_train, t_train, "train data")
    x_test, t_test = _check_data(x_test, t_test, "test data")

    # The data: root's is broadcast unless every rank already has all of it.
    have = np.array([x_train is not None, x_test is not None], dtype=np.int64)
    least, most = have.copy(), have.copy()
    _allreduce(comm, least, MPI.MIN, timeout, "the data check")
    _allreduce(comm, most, MPI.MAX, timeout, "the data check")
    if not least[0] or least[1] != most[1]:
        if rank == root:
            if x_train is None:
                raise ValueError("x_train: the root rank must have the training data")
            data = {"x_train": x_train, "t_train": t_train}
            if x_test is not None:
                data.update(x_test=x_test, t_test=t_test)
        else:
            data = None
        data = _bcast_arrays(comm, data, root, timeout, "the data broadcast")
        x_train, t_train = data["x_train"], data["t_train"]
        x_test, t_test = data.get("x_test"), data.get("t_test")
    n = np.array([x_train.shape[0]], dtype=np.int64)
    lo, hi = n.copy(), n.copy()
    _allreduce(comm, lo, MPI.MIN, timeout, "the data check")
    _allreduce(comm, hi, MPI.MAX, timeout, "the data check")
    if lo[0] != hi[0]:
        raise ValueError(f"x_train: the ranks hold different numbers of samples ({lo[0]} to {hi[0]})")
    train_size = int(n[0])
    if train_size == 0:
        raise ValueError("x_train: no training samples")

    dp = DataParallel(network, optimizer, comm, lr, timeout=timeout, root=root)
    iter_per_epoch = max(train_size // batch_size, 1)
    history = {"train_acc": [], "test_acc": [], "epoch_seconds": [], "iterations": 0,
               "iterations_run": 0, "train_seconds": 0.0, "iter_per_epoch": iter_per_epoch,
               "ranks": dp.size, "bytes_per_step": dp.bytes_per_step}

    start = 0
    if checkpoint is not None and resume:
        exists = np.array([rank == root and os.path.exists(checkpoint)], dtype=np.int64)
        _allreduce(comm, exists, MPI.MAX, timeout, "the checkpoint check")
        if exists[0]:
            arrays = load_checkpoint(checkpoint) if rank == root else None
            arrays = _bcast_arrays(comm, arrays, root, timeout, "the checkpoint broadcast")
            for key, want in (("batch_size", batch_size), ("seed", seed),
                              ("train_size", train_size)):
                got = int(arrays[f"meta/{key}"])
                if got != want:
                    raise ValueError(
                        f"{key}: the checkpoint {checkpoint} was written with {key}={got}, "
                        f"got {want}"
                    )
            _apply_checkpoint(arrays, network, optimizer)
            start = int(arrays["meta/iteration"])
            for key in ("train_acc", "test_acc", "epoch_seconds"):
                history[key] = [None if np.isnan(v) else float(v)
                                for v in arrays[f"meta/{key}"]]

    i = start
    while i < iters:
        epoch = i // iter_per_epoch
        rng = np.random.default_rng([seed, epoch])  # the RNG state is (seed, epoch)
        stop = min((epoch + 1) * iter_per_epoch, iters)
        tic = time.perf_counter()
        for j in range(i, stop):
            mine = shard(rng.choice(train_size, batch_size), dp.rank, dp.size)
            loss = dp.step(x_train[mine], t_train[mine], with_loss=on_iteration is not None)
            if on_iteration is not None and rank == root:
                on_iteration(j + 1, loss)
        seconds = time.perf_counter() - tic
        history["iterations_run"] += stop - i
        history["train_seconds"] += seconds
        i = stop
        history["iterations"] = i
        train_acc = _evaluate(dp, x_train, t_train)
        test_acc = _evaluate(dp, x_test, t_test) if x_test is not None else None
        history["train_acc"].append(train_acc)
        history["test_acc"].append(test_acc)
        history["epoch_seconds"].append(seconds)
        done = i / iter_per_epoch
        if rank == root and on_epoch is not None:
            on_epoch(int(done) if i % iter_per_epoch == 0 else done, train_acc, test_acc)
        if checkpoint is not None and i % iter_per_epoch == 0 and rank == root:
            save_checkpoint(
                checkpoint, network, optimizer, iteration=i, epoch=i // iter_per_epoch,
                seed=seed, batch_size=batch_size, train_size=train_size,
                train_acc=np.array(history["train_acc"], dtype=np.float64),
                test_acc=np.array([np.nan if a is None else a for a in history["test_acc"]],
                                  dtype=np.float64),
                epoch_seconds=np.array(history["epoch_seconds"], dtype=np.float64),
            )
    return history


# --------------------------------------------------------------------------- MNIST files
def load_mnist_dir(data_dir):
    """``((x_train, t_train), (x_test, t_test))`` from the four IDX files in ``data_dir``.

    As the book's ``load_mnist(normalize=True, flatten=True)``: images float32 in
    [0, 1], shape (N, 784); labels integers (N,). The files are read by fastbp's IDX
    reader (magic, dimensions and sizes checked) without the checksums of the standard
    MNIST files, so any data in that format trains.
    """
    def pair(prefix):
        found = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            for name in (f"{prefix}-{kind}.gz", f"{prefix}-{kind}"):
                p = os.path.join(data_dir, name)
                if os.path.exists(p):
                    found.append(read_idx(p))
                    break
            else:
                raise FileNotFoundError(f"data_dir: no {prefix}-{kind}[.gz] in {data_dir}")
        x, t = found
        if x.shape[0] != t.shape[0]:
            raise ValueError(f"{data_dir}: {x.shape[0]} {prefix} images but {t.shape[0]} labels")
        return (x.reshape(x.shape[0], -1).astype(np.float32) / np.float32(255.0),
                t.astype(np.intp))
    return pair("train"), pair("t10k")


def _load_data(data_dir):
    if data_dir is None:  # fastbp's search: $FASTBP_DATA, the cache, a download, the sample
        return load_mnist(normalize=True, flatten=True, one_hot_label=False)
    return load_mnist_dir(data_dir)


# --------------------------------------------------------------------------- command line
def build_parser(parser=None):
    """The command-line options (added to ``parser`` if given, so ``fastbp train
    --distributed`` can share them)."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="python -m fastbp.distributed",
            description="Train the book's network on MNIST data-parallel over MPI "
                        "(run under mpirun).",
        )
    parser.add_argument("--iters", type=int, default=10000, help="iterations (default 10000)")
    parser.add_argument("--batch-size", type=int, default=100, help="global batch size (default 100)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    parser.add_argument("--hidden", default="50",
                        help="hidden sizes: one (TwoLayerNet) or a comma list (MultiLayerNet)")
    parser.add_argument("--optimizer", default="sgd",
                        help="sgd, or a class of fastbp.optimizers (momentum, adam, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batches")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the MNIST IDX (.gz) files (default: fastbp.datasets "
                             "or $FASTBP_MNIST_DIR)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (.npz), written each epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds before a stuck collective aborts the job (default {DEFAULT_TIMEOUT:g}; 0: none)")
    return parser


def _make_network(hidden, n_in, n_out, seed, dtype):
    sizes = [int(h) for h in str(hidden).split(",") if h.strip()]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--hidden: expected positive sizes, got {hidden!r}")
    if len(sizes) == 1:
        from .networks import TwoLayerNet
        return TwoLayerNet(n_in, sizes[0], n_out, dtype=dtype, rng=seed)
    try:
        from .networks import MultiLayerNet
    except ImportError:
        try:
            from . import MultiLayerNet
        except ImportError:
            raise ValueError("--hidden: several hidden layers need fastbp's MultiLayerNet") from None
    np.random.seed(seed)  # the book's MultiLayerNet draws from NumPy's global state
    return MultiLayerNet(n_in, sizes, n_out)


def _make_optimizer(name, lr):
    if name.lower() == "sgd":
        return None
    try:
        from . import optimizers
    except ImportError:
        raise ValueError(f"--optimizer {name}: fastbp.optimizers is not available") from None
    classes = {k.lower(): v for k, v in vars(optimizers).items() if isinstance(v, type)}
    if name.lower() not in classes:
        raise ValueError(f"--optimizer: unknown {name!r}")
    return classes[name.lower()](lr=lr)


def _share_cores(comm):
    """Give each rank of this node its share of the cores for BLAS threads.

    Several ranks per node each running a full-width BLAS thread pool oversubscribe the
    cores; on this project's 2-core machine that made a 2-rank epoch 10x slower. The
    environment (``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``, e.g. ``mpirun -x``) wins;
    otherwise ``threadpoolctl`` is used when installed. Returns a note for the log.
    """
    MPI = _mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    per_node = local.Get_size()
    local.Free()
    if per_node == 1:
        return None
    set_by_env = [v for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                  if os.environ.get(v)]
    if set_by_env:
        return None
    threads = max(1, (os.cpu_count() or 1) // per_node)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return (f"note: {per_node} ranks share this node's {os.cpu_count()} cores; run with "
                f"`mpirun -x OPENBLAS_NUM_THREADS={threads}` (or install threadpoolctl) so their "
                "BLAS threads do not compete")
    threadpool_limits(limits=threads, user_api="blas")
    return None


def run(args, comm=None):
    """Train as ``args`` (from ``build_parser``) say; progress printed once, by rank 0."""
    comm = _world(comm)
    with abort_on_error(comm):
        rank, size = comm.Get_rank(), comm.Get_size()
        say = print if rank == 0 else (lambda *a, **k: None)
        timeout = args.timeout if args.timeout and args.timeout > 0 else None
        if rank == 0:
            (x_train, t_train), (x_test, t_test) = _load_data(args.data_dir)
            n_in, n_out = x_train.reshape(x_train.shape[0], -1).shape[1], int(t_train.max()) + 1
            shape = np.array([n_in, n_out], dtype=np.int64)
        else:
            x_train = t_train = x_test = t_test = None
            shape = np.zeros(2, dtype=np.int64)
        _bcast(comm, shape, 0, timeout, "the data shape broadcast")
        note = _share_cores(comm)
        if note:
            say(note, flush=True)
        network = _make_network(args.hidden, int(shape[0]), int(shape[1]), args.seed, args.dtype)
        optimizer = _make_optimizer(args.optimizer, args.lr)
        n_params = sum(np.asarray(p).size for p in network.params.values())
        say(f"fastbp.distributed: {size} rank(s), {n_params:,} parameters, "
            f"allreduce of {(n_params + 2) * np.dtype(args.dtype).itemsize:,} bytes per step",
            flush=True)

        def on_epoch(epoch, train_acc, test_acc):
            test = "" if test_acc is None else f", test acc {test_acc:.4f}"
            label = epoch if isinstance(epoch, int) else f"{epoch:.2f}"  # a cut-short epoch
            say(f"epoch {label}: train acc {train_acc:.4f}{test}", flush=True)

        tic = time.perf_counter()
        history = train_distributed(
            network, x_train, t_train, x_test, t_test, args.iters, args.batch_size,
            args.lr, optimizer, args.seed, comm, on_epoch, args.checkpoint, args.resume,
            timeout=timeout,
        )
        ran, secs = history["iterations_run"], history["train_seconds"]
        speed = (f"; training {1e3 * secs / ran:.2f} ms per iteration, "
                 f"{secs / ran * history['iter_per_epoch']:.2f} s per epoch") if ran else ""
        say(f"done: {history['iterations']} iterations on {size} rank(s) in "
            f"{time.perf_counter() - tic:.2f} s{speed}", flush=True)
    return 0


def main(argv=None):
    """``python -m fastbp.distributed [options]`` (under ``mpirun``); returns 0."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
