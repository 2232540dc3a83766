"""The book's functions and layers, from the one copy of the idiom: fastbp's
``src/fastbp/bench/book.py``, loaded here as a plain file.

That file imports NumPy only (``tests/test_bench_smoke.py`` checks), and loading it by
its path runs none of fastbp's code: ``fastbp`` itself is not imported, so this
reference still cannot be reached by a fastbp bug (docs/architecture.md). It is found
in the source tree beside these tests, else where the installed ``fastbp`` package lies
(``find_spec`` locates a top-level package without running it).
"""
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_TREE = os.path.join(_HERE, os.pardir, os.pardir, os.pardir, "src", "fastbp", "bench", "book.py")


def _path():
    if os.path.isfile(_TREE):
        return os.path.normpath(_TREE)
    spec = importlib.util.find_spec("fastbp")
    return os.path.join(os.path.dirname(spec.origin), "bench", "book.py")


def _load():
    name = __name__ + "_book"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _path())
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


book = _load()
