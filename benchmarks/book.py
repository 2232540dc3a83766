"""The book's plain-NumPy idiom, for the benchmarks: ``from book import Relu`` etc.

The code itself lives in ``fastbp.bench.book`` (``src/fastbp/bench/book.py``), written
out as the book writes it, so that ``fastbp bench`` has the same baseline on an
installed copy of fastbp, where this folder does not exist.
"""
from fastbp.bench.book import *  # noqa: F401,F403
from fastbp.bench.book import __all__  # noqa: F401
