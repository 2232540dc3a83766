"""MPI collectives with a deadline, and what to do when a rank fails.

``mpi4py`` is imported only when a communicator is needed (:func:`mpi`), so fastbp
imports without it; without it, :func:`mpi` raises :class:`MPIUnavailable` saying
what to install. Every collective runs non-blocking (``Iallreduce``/``Ibcast``) and is
polled until done or until its deadline: a rank whose collective misses it prints why
and calls ``comm.Abort``, which stops all ranks (a pending collective cannot be
cancelled in MPI). :func:`abort_on_error` turns an exception on one rank into a
traceback and ``Abort`` instead of leaving the other ranks waiting.
"""
import contextlib
import sys
import time
import traceback

import numpy as np

__all__ = ["DEFAULT_TIMEOUT", "CollectiveTimeout", "MPIUnavailable", "INSTALL_HINT", "mpi",
           "world", "abort_on_error", "allreduce", "bcast", "bcast_arrays", "root_first"]

#: Seconds a rank waits for a collective before it aborts the job. It must exceed the
#: longest time one rank can legitimately spend between two collectives (a training
#: step, one shard of the evaluation, writing a checkpoint).
DEFAULT_TIMEOUT = 120.0

_BCAST_CHUNK = 1 << 28  # bytes per Bcast message: MPI counts are 32-bit ints

INSTALL_HINT = ("--distributed needs Open MPI and mpi4py: apt-get install openmpi-bin "
                "libopenmpi-dev, then pip install \"fastbp[mpi]\"")


class CollectiveTimeout(RuntimeError):
    """A collective operation did not complete within its deadline."""


class MPIUnavailable(ImportError):
    """mpi4py or the MPI library is missing."""


def mpi():
    """``mpi4py.MPI``, or :class:`MPIUnavailable` saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # mpi4py absent, or present without its MPI library
        raise MPIUnavailable(f"{INSTALL_HINT} ({exc})") from None
    return MPI


def world(comm=None):
    """``comm``, or ``MPI.COMM_WORLD``."""
    return mpi().COMM_WORLD if comm is None else comm


@contextlib.contextmanager
def abort_on_error(comm=None, agreed=()):
    """Turn an exception on one rank into a clear message and ``comm.Abort(1)``.

    Without it, a rank that raises leaves the other ranks waiting in their next
    collective (until its timeout). With a single rank the exception propagates as usual,
    and so do the ``agreed`` exception types: those that every rank raises at the same
    point (a check of data they all hold), leaving no rank waiting.
    """
    comm = world(comm)
    try:
        yield comm
    except BaseException as exc:  # noqa: BLE001 - every failure must stop the job
        if (comm.Get_size() == 1 or isinstance(exc, agreed)
                or (isinstance(exc, SystemExit) and exc.code in (0, None))):
            raise
        rank, size = comm.Get_rank(), comm.Get_size()
        sys.stdout.flush()
        sys.stderr.write(
            f"fastbp: rank {rank} of {size} failed, aborting all ranks:\n"
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
                f"fastbp: rank {comm.Get_rank()} of {comm.Get_size()}: {what} "
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


def allreduce(comm, buf, op, timeout, what):
    MPI = mpi()
    if timeout is None:
        comm.Allreduce(MPI.IN_PLACE, buf, op=op)
    else:
        _wait(comm, comm.Iallreduce(MPI.IN_PLACE, buf, op=op), timeout, what)


def bcast(comm, buf, root, timeout, what):
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
           np.float64, np.bool_, np.str_)
_HEADER = 11  # dtype index, item size, ndim, up to 8 dimensions


def bcast_arrays(comm, arrays, root=0, timeout=DEFAULT_TIMEOUT, what="broadcast"):
    """Broadcast a dict of arrays from ``root`` (``arrays`` ignored elsewhere); no pickle."""
    rank = comm.Get_rank()
    if rank == root:
        names = list(arrays)
        blob = np.frombuffer("\n".join(names).encode(), dtype=np.uint8).copy()
        count = np.array([len(names), blob.shape[0]], dtype=np.int64)
    else:
        count = np.zeros(2, dtype=np.int64)
    bcast(comm, count, root, timeout, what)
    if rank != root:
        blob = np.empty(int(count[1]), dtype=np.uint8)
    bcast(comm, blob, root, timeout, what)
    names = blob.tobytes().decode().split("\n") if count[0] else []
    kinds = [np.dtype(d) for d in _DTYPES]
    out = {}
    for name in names:
        header = np.zeros(_HEADER, dtype=np.int64)
        if rank == root:
            a = np.require(arrays[name], requirements="C")  # keeps 0-d arrays 0-d
            kind = next((i for i, k in enumerate(kinds) if k.type == a.dtype.type), None)
            if kind is None or a.dtype.byteorder == ">" or a.ndim > _HEADER - 3:
                raise TypeError(f"{name}: cannot broadcast dtype {a.dtype} with {a.ndim} dims")
            header[:3] = kind, a.dtype.itemsize, a.ndim
            header[3:3 + a.ndim] = a.shape
        bcast(comm, header, root, timeout, what)
        if rank != root:
            kind, itemsize, ndim = (int(v) for v in header[:3])
            dtype = np.dtype(f"U{itemsize // 4}") if _DTYPES[kind] is np.str_ else kinds[kind]
            a = np.empty(tuple(int(d) for d in header[3:3 + ndim]), dtype=dtype)
        bcast(comm, a, root, timeout, what)
        out[name] = a
    return out


def root_first(comm, work, root=0, timeout=DEFAULT_TIMEOUT):
    """Run ``work()`` on ``root`` only, then tell every rank whether it succeeded.

    For the checks and loading that precede training: an error there (a bad path,
    missing data) is the user's to fix, so ``root`` re-raises it for a one-line
    message and the other ranks raise :class:`SystemExit` (status 1) quietly, instead
    of a traceback and an ``Abort`` from every rank. Returns ``work()``'s result on
    ``root``, ``None`` elsewhere."""
    failure, result = None, None
    if comm.Get_rank() == root:
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the others
            failure = exc
    flag = np.array([failure is not None], dtype=np.int64)
    bcast(comm, flag, root, timeout, "the start-up check")
    if failure is not None:
        raise failure
    if flag[0]:
        raise SystemExit(1)
    return result
