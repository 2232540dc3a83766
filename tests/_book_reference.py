"""Modules of ``tests/book_reference`` for tests that run in fastbp's own process.

Loaded by their path under names of their own (``book_reference.<module>``), so the
name ``common`` stays free for the book-script tests, which run the book's own layout.
Only modules that import nothing of ``common`` can be loaded this way (the optimizers).
"""
import importlib.util
import os
import sys

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "book_reference")


def load(relpath):
    """The module at ``tests/book_reference/<relpath>``, loaded once."""
    name = "book_reference." + relpath[:-len(".py")].replace("/", ".")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REFERENCE, relpath))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


#: The book's six optimizers (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam).
optimizer = load("common/optimizer.py")
