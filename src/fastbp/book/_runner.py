"""Running the book's scripts on fastbp.

The book's scripts are run from their chapter folder (``cd ch05; python
train_neuralnet.py``) and reach the repository's ``common`` and ``dataset`` packages
with ``sys.path.append(os.pardir)``. ``run`` does the same (working directory and
``sys.path[0]`` are the script's folder, ``sys.argv`` is the script and its arguments)
after putting :class:`BookFinder` first on ``sys.meta_path``: it answers for
``common``, ``common.*``, ``dataset`` and ``dataset.*`` (only those names) with the
modules of ``fastbp.book``, so they win over the repository's own files. Everything
else is imported as usual: a chapter file such as ``ch05/two_layer_net.py`` is the
book's, and runs on fastbp's layers through the same hook.
"""
import argparse
import importlib
import importlib.abc
import importlib.util
import os
import runpy
import sys

import numpy as np

__all__ = ["BookFinder", "install", "run", "main"]

_ROOTS = ("common", "dataset")


class _AliasLoader(importlib.abc.Loader):
    """Loads a name as an already existing module (``common.layers`` is
    ``fastbp.book.common.layers``: one module object under two names)."""

    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass  # imported (and executed) under its own name in create_module


class BookFinder(importlib.abc.MetaPathFinder):
    """Maps ``common[.x]`` and ``dataset[.x]`` to ``fastbp.book.common[.x]`` and
    ``fastbp.book.dataset[.x]``. A name under those two that ``fastbp.book`` does not
    have raises ``ModuleNotFoundError`` rather than falling back to the book's file."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in _ROOTS:
            return None
        real = f"{__package__}.{fullname}"
        spec = importlib.util.find_spec(real)
        if spec is None:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (fastbp.book has no {real})", name=fullname)
        return importlib.util.spec_from_loader(
            fullname, _AliasLoader(real), is_package=spec.submodule_search_locations is not None)


def install():
    """Put :class:`BookFinder` first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, BookFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, BookFinder())


def run(script, args=()):
    """Run the book's ``script`` (a path) with ``args`` in this process, as
    ``cd <its folder>; python <script> <args>`` would, with ``common`` and ``dataset``
    resolved to ``fastbp.book``. The working directory, ``sys.argv``, ``sys.path`` and
    the import hook stay as the script leaves them: meant for one script per process."""
    script = os.path.abspath(script)
    if not os.path.isfile(script):
        raise FileNotFoundError(f"script: no such file: {script}")
    folder = os.path.dirname(script)
    install()
    os.chdir(folder)
    sys.argv = [script, *args]
    sys.path.insert(0, folder)
    runpy.run_path(script, run_name="__main__")


def _split(argv):
    """``(fastbp's options, SCRIPT and the script's own arguments)``: the first word
    that is neither an option nor ``--seed``'s value is the script."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        if argv[i] == "--":  # kept: what follows is the script, even if it starts with -
            return argv[:i + 1], argv[i + 1:]
        i += 2 if argv[i] == "--seed" else 1
    return argv[:i], argv[i:]


def main(argv=None, prog="python -m fastbp.book"):
    """``python -m fastbp.book [--seed N] SCRIPT [ARGS]`` (``fastbp book``); returns the
    exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s [-h] [--seed N] SCRIPT [ARGS ...]", allow_abbrev=False,
        description="Run one of the book's scripts (e.g. deep-learning-from-scratch/ch05/"
                    "train_neuralnet.py) unchanged, with its common/ and dataset/ "
                    "modules taken from fastbp.")
    parser.add_argument("--seed", type=_seed, metavar="N",
                        help="np.random.seed(N) before the script runs, as a line at its top "
                             "would: the book's scripts do not seed themselves, and its code "
                             "(weights, batches, dropout) draws from NumPy's global state")
    parser.add_argument("script", metavar="SCRIPT",
                        help="path to the script; what follows it is passed to it as it is")
    argv = sys.argv[1:] if argv is None else list(argv)
    # only what comes before the script is fastbp's; everything after it is the script's
    ours, rest = _split(argv)
    ns = parser.parse_args(ours + rest[:1])
    if not os.path.isfile(ns.script):
        parser.error(f"no such file: {ns.script}")
    if ns.seed is not None:
        np.random.seed(ns.seed)
    run(ns.script, rest[1:])
    return 0


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:  # np.random.seed's range
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**32 - 1, got {text!r}")
    return value
