"""Reading the book's pickled parameters without running arbitrary code.

A pickle names the functions that rebuild its objects, and ``pickle.load`` calls
whatever it names (``os.system`` as easily as ``numpy.ndarray``). The book ships its
trained weights as pickles of a dict of arrays (``ch07/params.pkl``,
``ch08/deep_convnet_params.pkl``), so fastbp reads those with an unpickler that resolves
only the names NumPy's array reconstruction needs and refuses any other, naming it.
The loaded object is then checked to hold nothing but dicts, lists, tuples, strings,
numbers and numeric arrays.
"""
import collections
import pickle

import numpy as np

__all__ = ["UnsafePickleError", "load"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something fastbp does not load."""


def _dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject:  # an object array would unpickle arbitrary Python objects
        raise UnsafePickleError(f"refusing a NumPy array of dtype {dt} (it holds Python objects)")
    return dt


# (module, name) -> what it resolves to
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
}
try:  # numpy.core was renamed numpy._core in NumPy 2; pickles name either
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # NumPy 1
    from numpy.core import multiarray as _multiarray, numeric as _numeric
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _multiarray.scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _numeric._frombuffer


def _latin1(text, encoding="latin1"):
    """Protocol 2 stores bytes as ``_codecs.encode(text, "latin1")``: that, only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load the global {module}.{name}: fastbp reads only NumPy "
                "arrays and plain dicts, lists and tuples from a pickle"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a pickle with persistent references")


_SCALARS = (str, bytes, int, float, bool, complex, np.generic, type(None))


def _check(obj, depth=0, done=None, open_=None):
    """Walk what was loaded, visiting each dict, list and tuple once: a pickle's memo
    lets it refer to one object many times, so 40 levels of ``[l, l]`` (a file of 300
    bytes) are 2**40 paths through 41 objects. ``done``: ids of the containers checked
    (all alive, held by the loaded object); ``open_``: those on the current path, where
    meeting one again is a cycle."""
    if done is None:
        done, open_ = set(), set()
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickleError(f"refusing a NumPy array of dtype {obj.dtype}")
    elif isinstance(obj, (dict, list, tuple)):
        key = id(obj)
        if key in done:
            return
        if key in open_:
            raise UnsafePickleError("refusing a pickle that contains itself (a cycle)")
        if depth > 100:
            raise UnsafePickleError("refusing a pickle nested more than 100 levels deep")
        open_.add(key)
        for item in (x for kv in obj.items() for x in kv) if isinstance(obj, dict) else obj:
            _check(item, depth + 1, done, open_)
        open_.discard(key)
        done.add(key)
    elif not isinstance(obj, _SCALARS):
        raise UnsafePickleError(f"refusing an object of type {type(obj).__name__}")


def load(file):
    """The object in the pickle ``file`` (a path or a binary file object), if it holds
    only NumPy arrays, dicts, lists, tuples, strings and numbers; else
    ``UnsafePickleError`` (a ``pickle.UnpicklingError``), before any other code runs."""
    if hasattr(file, "read"):
        obj = _Unpickler(file).load()
    else:
        with open(file, "rb") as f:
            obj = _Unpickler(f).load()
    _check(obj)
    return obj
