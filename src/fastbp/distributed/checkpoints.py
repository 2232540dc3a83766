"""Checkpoints: the network, the optimizer's state and the progress of a run, in one file.

A checkpoint is a ``fastbp.checkpoint`` file of :mod:`fastbp.serialization` (an
``.npz`` of plain arrays, written atomically, versioned):

- ``net/<name>``: what ``save_params`` saves (parameters and batch-norm statistics);
- ``opt/<attr>/<param>`` and ``opt/<attr>``: the optimizer's state, exactly the
  attributes its class declares in ``state_names`` (``Momentum``: ``v``; ``Adam``:
  ``iter``, ``m``, ``v``; ``SGD``: none). Hyperparameters (``lr``, ...) are not state:
  they come from the command line, never from the file;
- ``meta/<name>``: the run (iteration, seed, batch size, ...) and its history.

On reading, every key is accounted for: an ``opt/`` entry the optimizer does not
declare (``opt/lr``, ``opt/update``), a missing one, a wrong shape or dtype, a
negative counter or a non-finite state value is refused with a ``ValueError`` naming
the file and the key, before anything is changed.
"""
import os

import numpy as np

from .. import serialization
from ..loop import EpochRecord, History

__all__ = ["CHECKPOINT_FORMAT", "optimizer_state", "save_checkpoint", "load_checkpoint",
           "restore", "resume_from", "epoch_saver"]

CHECKPOINT_FORMAT = "fastbp.checkpoint"


def _declared(optimizer):
    """The state attribute names the optimizer's class declares (none for ``None``)."""
    if optimizer is None:
        return ()
    names = getattr(optimizer, "state_names", None)
    if names is None:
        raise TypeError(f"optimizer: {type(optimizer).__name__} does not declare its state "
                        "(a state_names attribute), so it cannot be checkpointed")
    return tuple(names)


def optimizer_state(optimizer, params):
    """The optimizer's declared state as arrays named ``opt/...``. A state not created
    yet (before the first update) is saved as what it stands for: zeros, or 0."""
    state = {}
    for attr in _declared(optimizer):
        value = getattr(optimizer, attr)
        if isinstance(value, dict) or value is None:
            value = value or {}
            for key, p in params.items():
                v = value.get(key)
                state[f"opt/{attr}/{key}"] = np.zeros_like(p) if v is None else np.asarray(v)
        else:
            state[f"opt/{attr}"] = np.array(int(value), dtype=np.int64)
    return state


def save_checkpoint(path, network, optimizer=None, /, **meta):
    """Write ``network``, ``optimizer``'s declared state and ``meta`` (numbers, strings,
    arrays) to ``path``, atomically."""
    arrays = {f"net/{k}": v for k, v in serialization.network_arrays(network).items()}
    arrays.update(optimizer_state(optimizer, network.params))
    arrays.update({f"meta/{k}": np.asarray(v) for k, v in meta.items()})
    serialization.save_arrays(path, arrays, CHECKPOINT_FORMAT)


def load_checkpoint(path):
    """The arrays of the checkpoint ``path`` (format and version checked)."""
    return serialization.load_arrays(path, CHECKPOINT_FORMAT)


def _restore_optimizer(optimizer, params, arrays, source):
    """Validate and set the declared state; returns it (attr -> value) without setting
    when anything is wrong."""
    expected = optimizer_state(optimizer, params)  # names, shapes and dtypes wanted
    present = {k for k in arrays if k.startswith("opt/")}
    extra = sorted(present - set(expected))
    if extra:
        name = type(optimizer).__name__ if optimizer is not None else "plain SGD"
        raise ValueError(f"{source}: unexpected {extra[0]}: {name} keeps "
                         f"{', '.join(_declared(optimizer)) or 'no state'} (hyperparameters "
                         "such as lr come from the command line, not the checkpoint)")
    for key, want in expected.items():
        if key not in arrays:
            raise ValueError(f"{source}: no {key} (the optimizer's state) in the checkpoint")
        got = arrays[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ValueError(f"{source}: {key} is {got.dtype} {got.shape}, expected "
                             f"{want.dtype} {want.shape}")
        if got.dtype.kind == "f" and not np.isfinite(got).all():
            raise ValueError(f"{source}: {key} holds non-finite values")
        if got.dtype.kind in "iu" and int(got) < 0:
            raise ValueError(f"{source}: {key} is {int(got)}, expected a count >= 0")
    values = {}
    for attr in _declared(optimizer):
        if f"opt/{attr}" in expected:
            values[attr] = int(arrays[f"opt/{attr}"])
        else:
            values[attr] = {k: np.array(arrays[f"opt/{attr}/{k}"]) for k in params}
    return values


def restore(arrays, network, optimizer, source):
    """Copy a checkpoint's network into ``network`` (in place) and set ``optimizer``'s
    declared state; ``source`` (the file) names errors. Everything is validated first."""
    source = os.fspath(source)
    net = {k: v for k, v in arrays.items() if k.startswith("net/")}
    targets = serialization.network_arrays(network)
    values = _restore_optimizer(optimizer, network.params, arrays, source)
    serialization.copy_into(targets, net, source, prefix="net/")
    for attr, value in values.items():
        setattr(optimizer, attr, value)


# The history of a run, as arrays: the batch loss of every iteration and one entry per
# evaluation (test_acc NaN for none).
_EPOCH_FIELDS = {"epoch": np.int64, "iteration": np.int64, "steps": np.int64,
                 "loss": np.float64, "train_acc": np.float64, "test_acc": np.float64,
                 "seconds": np.float64, "complete": np.bool_}


def _history_arrays(history):
    arrays = {"loss": np.array(history.loss, dtype=np.float64)}
    for name, dtype in _EPOCH_FIELDS.items():
        values = [getattr(e, name) for e in history.epochs]
        if name == "test_acc":
            values = [np.nan if v is None else v for v in values]
        arrays[f"epochs/{name}"] = np.array(values, dtype=dtype)
    return arrays


def _history(arrays, source):
    try:
        columns = {name: arrays[f"meta/epochs/{name}"] for name in _EPOCH_FIELDS}
        loss = arrays["meta/loss"]
    except KeyError as exc:
        raise ValueError(f"{source}: no {exc.args[0]} in the checkpoint") from None
    lengths = {c.shape for c in columns.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1 or loss.ndim != 1:
        raise ValueError(f"{source}: meta/epochs/*: inconsistent history")
    records = []
    for row in zip(*(columns[name] for name in _EPOCH_FIELDS)):
        values = dict(zip(_EPOCH_FIELDS, row))
        values = {k: (bool(v) if k == "complete" else int(v) if _EPOCH_FIELDS[k] is np.int64
                      else float(v)) for k, v in values.items()}
        if np.isnan(values["test_acc"]):
            values["test_acc"] = None
        records.append(EpochRecord(**values))
    return History(loss=[float(v) for v in loss], epochs=records)


def epoch_saver(path, network, optimizer, run, history):
    """An ``on_epoch`` hook writing the checkpoint ``path`` after every complete epoch:
    the network, the optimizer's state, ``run`` (the settings :func:`resume_from`
    checks: seed, batch size, ...) and ``history``."""
    def save(record):
        if record.complete:
            meta = dict(run, iteration=record.iteration, **_history_arrays(history))
            save_checkpoint(path, network, optimizer, **meta)
    return save


def resume_from(arrays, network, optimizer, source, run):
    """Restore a checkpoint's ``arrays`` (from :func:`load_checkpoint`) into
    ``network`` and ``optimizer``; returns ``(iteration, history)`` to continue from.
    ``run``: the settings of this run, each of which must equal the checkpoint's
    ``meta/<name>`` (the batches would differ otherwise)."""
    source = os.fspath(source)
    for name, want in run.items():
        key = f"meta/{name}"
        if key not in arrays:
            raise ValueError(f"{source}: no {key} in the checkpoint")
        got = arrays[key]
        got = str(got) if got.dtype.kind == "U" else int(got) if got.dtype.kind in "iu" else got
        if got != want:
            raise ValueError(f"{name}: the checkpoint {source} was written with {name}={got}, "
                             f"this run has {name}={want}")
    if "meta/iteration" not in arrays:
        raise ValueError(f"{source}: no meta/iteration in the checkpoint")
    iteration = int(arrays["meta/iteration"])
    history = _history(arrays, source)
    if iteration < 0 or len(history.loss) != iteration:
        raise ValueError(f"{source}: meta/iteration is {iteration} but the history has "
                         f"{len(history.loss)} iterations")
    restore(arrays, network, optimizer, source)
    return iteration, history
