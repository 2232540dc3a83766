"""Saving and loading arrays: networks' ``save_params``/``load_params`` and checkpoints.

One file format for everything fastbp writes: a NumPy ``.npz`` of plain arrays, read
with ``allow_pickle=False`` (a file cannot run code), with two extra entries:
``__format__`` (what the file holds, e.g. ``"fastbp.network"``) and ``__version__``
(an integer). A reader refuses another format or a version it does not know, with a
message naming the file.

What a network saves is what it *declares*: its ``params`` plus, when it has one, the
dict returned by its ``state_arrays()`` (arrays that are not trained by gradient but
are needed to predict, such as batch normalization's ``running_mean``/``running_var``).
Both are held by reference by the layers, so loading copies *into* those arrays
(``np.copyto``) and the layers see the loaded values; rebinding ``net.params[k]`` would
leave the layers with the old arrays. A file must match the network exactly: a missing
or extra key, a wrong shape or a wrong dtype is refused, naming the key, before any
array is changed. The arrays are stored by value, so a file written with one backend
loads with the other.

Writes are atomic: the file is written to a temporary file beside the target,
``fsync``-ed, then renamed over the target with ``os.replace`` (and the folder is
``fsync``-ed where the platform allows), so a failure part-way leaves the previous file
untouched and never a truncated one.

Formats are chosen by file name in one place, :func:`_reader_for`.
"""
import os
import stat
import tempfile

import numpy as np

__all__ = [
    "NETWORK_FORMAT", "VERSION", "network_arrays", "save_params", "load_params",
    "save_arrays", "load_arrays", "copy_into", "atomic_write", "check_writable", "SaveParams",
]

NETWORK_FORMAT = "fastbp.network"
VERSION = 1  # the version this fastbp writes and the only one it reads
_META = ("__format__", "__version__")


# ---------------------------------------------------------------------- writing

def check_writable(path, what="path"):
    """Refuse, before any work is done, a ``path`` that :func:`atomic_write` could not
    write: a directory, a missing folder, a folder without write permission, or an
    existing file that is read-only (replacing it would silently defeat that
    protection). ``what`` names the path in the message (``PermissionError``,
    ``FileNotFoundError`` or ``IsADirectoryError``, all ``OSError``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: {path} is a directory")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what}: no such directory: {folder}")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{what}: cannot write to {folder}")
    if os.path.exists(path):
        mode = os.stat(path).st_mode
        # os.access alone says yes to root; the mode bits are the owner's intent.
        if not os.access(path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"{what}: {path} is read-only")


def _fsync_folder(folder):
    """Make the rename durable; not every platform can open a folder (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, ``fsync`` it, then
    ``os.replace`` it onto ``path``. On any failure the temporary file is removed and
    ``path`` is left as it was. The new file gets the usual permissions (``0o666``
    less the umask), not the private ones of a temporary file."""
    path = os.fspath(path)
    check_writable(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def save_arrays(path, arrays, fmt):
    """Write ``arrays`` (name -> array) to ``path`` as an ``.npz`` of format ``fmt``,
    atomically. The file name is kept as given (``np.savez`` would append ``.npz``)."""
    for name in arrays:
        if name in _META:
            raise ValueError(f"{name}: reserved name in a fastbp file")
    payload = {name: np.asarray(a) for name, a in arrays.items()}
    for name, a in payload.items():
        if a.dtype.hasobject:
            raise TypeError(f"{name}: cannot save an object array (a file must not need pickle)")
    payload["__format__"] = np.array(fmt)
    payload["__version__"] = np.array(VERSION, dtype=np.int64)
    atomic_write(path, lambda f: np.savez(f, **payload))


# ---------------------------------------------------------------------- reading

def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an .npz archive")
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a fastbp file ({exc})") from None


def load_arrays(path, fmt):
    """The arrays of a file of format ``fmt`` and this version (without the two
    metadata entries). Refuses a missing file, another format or an unknown version
    with a ``ValueError`` (``FileNotFoundError`` for a missing file) naming ``path``."""
    path = os.fspath(path)
    arrays = _read_npz(path)
    found = arrays.pop("__format__", None)
    version = arrays.pop("__version__", None)
    if found is None or found.shape != () or found.dtype.kind != "U":
        raise ValueError(f"{path}: not a fastbp file (no __format__ entry); "
                         f"expected a {fmt} file written by fastbp")
    if str(found) != fmt:
        raise ValueError(f"{path}: a {found} file, expected a {fmt} file")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"{path}: no valid __version__ entry")
    if int(version) != VERSION:
        raise ValueError(f"{path}: format version {int(version)}; this fastbp reads version "
                         f"{VERSION} only (written by a {'newer' if int(version) > VERSION else 'older'} fastbp?)")
    return arrays


def copy_into(targets, arrays, source, prefix=""):
    """Copy ``arrays[prefix + name]`` into each ``targets[name]`` in place.

    Every key of ``arrays`` that starts with ``prefix`` must be a target and every
    target must be present, with the target's shape and dtype; the first mismatch is a
    ``ValueError`` naming ``source`` and the key, raised before anything is copied."""
    present = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    missing = [k for k in targets if k not in present]
    extra = [k for k in present if k not in targets]
    if missing:
        raise ValueError(f"{source}: no {prefix}{missing[0]} in the file "
                         f"(missing: {', '.join(prefix + k for k in missing)})")
    if extra:
        raise ValueError(f"{source}: unexpected {prefix}{extra[0]} in the file "
                         f"(the network has no {', '.join(prefix + k for k in extra)})")
    for name, target in targets.items():
        got = present[name]
        if got.shape != np.shape(target):
            raise ValueError(f"{source}: {prefix}{name} has shape {got.shape}, "
                             f"the network's has {np.shape(target)}")
        if got.dtype != target.dtype:
            raise ValueError(f"{source}: {prefix}{name} is {got.dtype}, the network's is "
                             f"{target.dtype}")
    for name, target in targets.items():
        np.copyto(target, present[name])


# ---------------------------------------------------------------------- networks

def network_arrays(network):
    """What a network needs to predict as it did: ``params`` and, if the network has
    ``state_arrays()``, that extra state. The arrays themselves, not copies."""
    params = getattr(network, "params", None)
    if not isinstance(params, dict):
        raise TypeError(f"network: expected an object with a dict `params`, got {type(network).__name__}")
    arrays = dict(params)
    state = network.state_arrays() if hasattr(network, "state_arrays") else {}
    for name, a in state.items():
        if name in arrays:
            raise ValueError(f"{name}: both a parameter and a state array of the network")
        arrays[name] = a
    return arrays


def save_params(network, path):
    """Save ``network``'s parameters and state to ``path`` (see the module docstring)."""
    save_arrays(path, network_arrays(network), NETWORK_FORMAT)


def _read_pickled_weights(path):
    raise ValueError(f"{path}: the book's pickled weights (.pkl) cannot be read by this "
                     "fastbp; save them with save_params (.npz)")


def _reader_for(path):
    """The one place a network file's format is chosen, by its name: ``.pkl`` is the
    book's pickled weights (``{name: array}``, which need a restricted unpickler);
    every other name is fastbp's ``.npz`` format. A reader returns the arrays by the
    network's names."""
    if os.fspath(path).lower().endswith(".pkl"):
        return _read_pickled_weights
    return lambda p: load_arrays(p, NETWORK_FORMAT)


def load_params(network, path):
    """Load a file written by :func:`save_params` into ``network``, in place."""
    path = os.fspath(path)
    copy_into(network_arrays(network), _reader_for(path)(path), path)


class SaveParams:
    """The book's ``save_params``/``load_params`` methods, for any network with
    ``params`` (and optionally ``state_arrays()``)."""

    def save_params(self, file_name="params.npz"):
        """Save the parameters (and state such as batch normalization's running
        statistics) to ``file_name``: a ``.npz`` without pickle, written atomically."""
        save_params(self, file_name)

    def load_params(self, file_name="params.npz"):
        """Load a file written by ``save_params`` into this network, in place (the
        layers see it); refuses missing or extra keys, wrong shapes and dtypes."""
        load_params(self, file_name)
