"""Data sets for fastbp: MNIST, read from verified IDX files (see ``mnist``)."""
from ._idx import CorruptFileError, read_idx, write_idx
from .mnist import (
    DEFAULT_MIRRORS,
    SAMPLE_DIR,
    DownloadError,
    MnistSource,
    SampleDataWarning,
    cache_dir,
    load_mnist,
    locate_mnist,
    mirrors,
)

__all__ = [
    "load_mnist", "locate_mnist", "MnistSource", "SampleDataWarning", "DownloadError",
    "CorruptFileError", "read_idx", "write_idx", "cache_dir", "mirrors",
    "DEFAULT_MIRRORS", "SAMPLE_DIR",
]
