"""The book's ``common`` and ``dataset`` packages, on fastbp.

``fastbp.book.common.layers``, ``.functions``, ``.gradient``, ``.util``, ``.optimizer``,
``.multi_layer_net``, ``.multi_layer_net_extend``, ``.trainer`` and
``fastbp.book.dataset.mnist`` have the names and exports of the book repository's
modules (``from common.layers import *`` brings the layers, the functions and ``np``,
as there), backed by fastbp's own layers, kernels and MNIST loader.

``python -m fastbp.book [--seed N] SCRIPT [ARGS]`` (or ``fastbp book ...``) runs one of
the book's scripts as the book says to, from its chapter folder, with ``common`` and
``dataset`` imported from here: the book's repository runs on fastbp unchanged, with
nothing copied into it; ``--seed N`` seeds NumPy's global state first, as
``np.random.seed(N)`` at the script's top would. See ``fastbp.book._runner``.
"""
from ._runner import BookFinder, install, main, run

__all__ = ["run", "main", "install", "BookFinder"]
