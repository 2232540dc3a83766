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
import contextlib
import math
import os
import pickle
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npformat

__all__ = [
    "NETWORK_FORMAT", "VERSION", "network_arrays", "save_params", "load_params",
    "save_arrays", "load_arrays", "copy_into", "atomic_write", "check_writable", "SaveParams",
]

NETWORK_FORMAT = "fastbp.network"
VERSION = 1  # the version this fastbp writes and the only one it reads
_META = ("__format__", "__version__")


# ---------------------------------------------------------------------- writing

def _file_kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def check_writable(path, what="path"):
    """Refuse, before any work is done, a ``path`` that :func:`atomic_write` could not
    write: a directory, a missing folder, a folder without write permission, an
    existing file that is read-only (replacing it would silently defeat that
    protection), or anything else than a regular file (a FIFO, a device such as
    ``/dev/null``, a socket: replacing it would leave its readers waiting forever, or
    replace a system's device by a file). ``what`` names the path in the message
    (``PermissionError``, ``FileNotFoundError``, ``IsADirectoryError`` or
    ``FileExistsError``, all ``OSError``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: {path} is a directory")
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise FileExistsError(f"{what}: {path} is {_file_kind(os.stat(path).st_mode)}, not a "
                              "regular file; fastbp replaces regular files only")
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
#
# What a reader takes in is bounded before it is read. The file must be a regular file
# (a FIFO or a device could block or never end). Each member is a .npy, stored or
# deflated (np.savez, np.savez_compressed), whose header (shape and dtype, read without
# the data) must announce exactly the bytes its zip entry holds, so no array is ever
# allocated beyond what the zip's central directory says. The members together may
# expand to a budget: for a network's file, what the network's own arrays take plus
# MEMBER_OVERHEAD per member (and the file itself may be no larger); otherwise, the
# file's own size (fastbp writes uncompressed members). Expected names, shapes and
# dtypes are checked from the headers; only then is an array read.

#: Bytes a member may take beyond its array's data: the .npy header (np.save writes 128
#: for a short key) and the zip entry's own headers, with room for long key names.
MEMBER_OVERHEAD = 1 << 14
_MAX_HEADER = 10000  # the .npy header size NumPy's own reader accepts by default
_HEADER_READERS = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}


def _file_size(path):
    """The size of ``path``, which must be a regular file (reading a FIFO or a device
    could block, or never end)."""
    mode = os.stat(path).st_mode  # FileNotFoundError for a missing file
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: {_file_kind(mode)}, not a regular file")
    return os.stat(path).st_size


@contextlib.contextmanager
def _damaged(path):
    """What the zip and .npy readers raise on a truncated or corrupted file, as a
    ``ValueError`` naming the file."""
    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, struct.error,
            NotImplementedError, RuntimeError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a fastbp file, or a damaged or truncated one ({exc})") from None


class _Archive:
    """An ``.npz`` opened within the bounds above: ``headers`` (key -> zip entry, shape,
    dtype) are known and checked on opening; ``read(key)`` reads one array."""

    def __init__(self, path, budget=None):
        self.path = path
        size = _file_size(path)
        if budget is not None and size > budget:
            raise ValueError(f"{path}: {size} bytes, more than the {budget} that a file of "
                             "these arrays takes")
        limit = size if budget is None else budget
        with _damaged(path):
            self._zip = zipfile.ZipFile(path)
        try:
            infos = self._zip.infolist()
            total = sum(info.file_size for info in infos)
            if total > limit:
                raise ValueError(f"{path}: its members expand to {total} bytes, more than the "
                                 f"{limit} " + ("that these arrays take" if budget is not None
                                                else "of the file itself"))
            self.headers = {}
            for info in infos:
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in self.headers:
                    raise ValueError(f"{path}: two members named {info.filename}")
                self.headers[key] = self._header(info)
        except BaseException:
            self._zip.close()
            raise

    def _header(self, info):
        """``(info, shape, dtype)`` from the member's .npy header, which must announce
        exactly the bytes its zip entry holds; the data is not read."""
        where = f"{self.path}: member {info.filename}"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"{where}: compression method {info.compress_type}; fastbp "
                             "reads stored or deflated members only")
        with _damaged(self.path), self._zip.open(info) as f:
            version = npformat.read_magic(f)
            read = _HEADER_READERS.get(version)
            if read is not None:
                shape, _, dtype = read(f, max_header_size=_MAX_HEADER)
                header = f.tell()
        if read is None:
            raise ValueError(f"{where}: .npy format version {version}")
        if dtype.hasobject:
            raise ValueError(f"{where}: an object array (a fastbp file must not need pickle)")
        data = math.prod(shape) * dtype.itemsize
        if header + data != info.file_size:
            raise ValueError(f"{where}: its header announces {data} bytes of data, the "
                             f"archive holds {info.file_size - header}")
        return info, tuple(shape), dtype

    def read(self, key):
        info = self.headers[key][0]
        with _damaged(self.path), self._zip.open(info) as f:
            a = npformat.read_array(f, allow_pickle=False, max_header_size=_MAX_HEADER)
            f.read()  # nothing is left (the header said so); zipfile checks the CRC at the end
        return a

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._zip.close()


def load_arrays(path, fmt, expected=None):
    """The arrays of a file of format ``fmt`` and this version (without the two
    metadata entries). Refuses a missing file, another format or an unknown version
    with a ``ValueError`` (``FileNotFoundError`` for a missing file) naming ``path``.

    ``expected`` (name -> array), when given, is what the file must hold (as
    :func:`copy_into` checks it): the names, shapes and dtypes are checked from the
    members' headers before any array is read, and the file and its members may take no
    more than those arrays do (plus ``MEMBER_OVERHEAD`` per member). Without it, the
    members may expand to no more than the file's own size."""
    path = os.fspath(path)
    budget = None
    if expected is not None:
        budget = (sum(np.asarray(a).nbytes for a in expected.values())
                  + MEMBER_OVERHEAD * (len(expected) + len(_META)))
    with _Archive(path, budget) as archive:
        meta = {k: archive.read(k) for k in _META if k in archive.headers}
        found, version = meta.get("__format__"), meta.get("__version__")
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
        keys = [k for k in archive.headers if k not in _META]
        if expected is not None:
            _match(expected, {k: archive.headers[k][1:] for k in keys}, path)
        return {k: archive.read(k) for k in keys}


def _match(targets, found, source, prefix=""):
    """Check ``found`` (key -> ``(shape, dtype)``) against ``targets`` (name -> array):
    every key that starts with ``prefix`` must be a target and every target present, with
    its shape and dtype; the first mismatch is a ``ValueError`` naming ``source`` and the
    key. Returns the found entries by target name."""
    present = {k[len(prefix):]: v for k, v in found.items() if k.startswith(prefix)}
    missing = [k for k in targets if k not in present]
    extra = [k for k in present if k not in targets]
    if missing:
        raise ValueError(f"{source}: no {prefix}{missing[0]} in the file "
                         f"(missing: {', '.join(prefix + k for k in missing)})")
    if extra:
        raise ValueError(f"{source}: unexpected {prefix}{extra[0]} in the file "
                         f"(the network has no {', '.join(prefix + k for k in extra)})")
    for name, target in targets.items():
        shape, dtype = present[name]
        if shape != np.shape(target):
            raise ValueError(f"{source}: {prefix}{name} has shape {shape}, "
                             f"the network's has {np.shape(target)}")
        if dtype != target.dtype:
            raise ValueError(f"{source}: {prefix}{name} is {dtype}, the network's is "
                             f"{target.dtype}")
    return present


def copy_into(targets, arrays, source, prefix=""):
    """Copy ``arrays[prefix + name]`` into each ``targets[name]`` in place.

    Every key of ``arrays`` that starts with ``prefix`` must be a target and every
    target must be present, with the target's shape and dtype; the first mismatch is a
    ``ValueError`` naming ``source`` and the key, raised before anything is copied."""
    _match(targets, {k: (v.shape, v.dtype) for k, v in arrays.items()}, source, prefix)
    for name, target in targets.items():
        np.copyto(target, arrays[prefix + name])


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


def _read_pickled_weights(path, expected):
    """The book's weights (``ch07/params.pkl``, ``ch08/deep_convnet_params.pkl``: a
    pickle of ``{name: array}``), read by ``fastbp._pickle`` without running code from
    the file, and only from a file no larger than twice the ``expected`` arrays
    (protocol 2 stores bytes as text, up to two bytes each) plus ``MEMBER_OVERHEAD``
    each. A ``.pkl`` name that holds an ``.npz`` (``save_params("params.pkl")``, as the
    book's scripts call it, writes fastbp's format) is read as one."""
    from . import _pickle

    size = _file_size(path)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":  # a zip archive: an .npz
            return load_arrays(path, NETWORK_FORMAT, expected)
    budget = sum(2 * np.asarray(a).nbytes + MEMBER_OVERHEAD for a in expected.values())
    if size > budget:
        raise ValueError(f"{path}: {size} bytes, more than the {budget} that a pickle of "
                         "the network's arrays takes")
    try:
        loaded = _pickle.load(path)
    except _pickle.UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a pickle of arrays, or a damaged or truncated one "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise ValueError(f"{path}: expected a pickled dict of arrays by name, got "
                         f"{type(loaded).__name__}")
    for name, a in loaded.items():  # (a nested list would become an array of any size)
        if not isinstance(a, (np.ndarray, np.generic)):
            raise ValueError(f"{path}: {name} is a {type(a).__name__}, expected an array")
    return {name: np.asarray(a) for name, a in loaded.items()}


def _reader_for(path):
    """The one place a network file's format is chosen, by its name: ``.pkl`` is the
    book's pickled weights (``{name: array}``, which need a restricted unpickler);
    every other name is fastbp's ``.npz`` format. A reader takes the path and the
    network's arrays (what the file must match) and returns the arrays by name."""
    if os.fspath(path).lower().endswith(".pkl"):
        return _read_pickled_weights
    return lambda p, expected: load_arrays(p, NETWORK_FORMAT, expected)


def load_params(network, path):
    """Load a file written by :func:`save_params` into ``network``, in place: the
    names, shapes and dtypes are checked from the file's headers, and no more is read
    than the network's own arrays take (see "reading" above)."""
    path = os.fspath(path)
    targets = network_arrays(network)
    copy_into(targets, _reader_for(path)(path, targets), path)


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
