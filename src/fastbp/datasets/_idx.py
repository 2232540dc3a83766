"""The IDX file format of the MNIST distribution: read (gzip or raw) and write.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the values, big-endian, C order. MNIST uses type
0x08 (unsigned byte). The reader checks the magic number, the dimensions and the exact
size, and (when given) the SHA-256 of the decompressed bytes, and refuses anything else
with :class:`CorruptFileError` naming the file. A header announcing more than
``max_bytes`` is refused before anything is allocated, and the data is decompressed in
chunks, so memory follows what the file really holds: a damaged or hostile ``.gz``
(a small file announcing gigabytes) is refused at once and cannot exhaust memory.
"""
import gzip
import hashlib
import math
import os
import struct
import zlib

import numpy as np

__all__ = ["CorruptFileError", "read_idx", "write_idx", "sha256_of_idx"]

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian NumPy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}

# The default bound of read_idx: any larger array is certainly not what the caller
# wants (MNIST's largest is 47 MB; fastbp.datasets.mnist passes its exact sizes).
MAX_BYTES = 1 << 28
_CHUNK = 1 << 20  # decompressed bytes read at a time


class CorruptFileError(ValueError):
    """A data file is damaged, truncated, of the wrong kind or fails its checksum."""


def _open(path):
    """A binary stream of the decompressed contents of ``path`` (gzip or raw)."""
    f = open(path, "rb")
    head = f.read(2)
    f.seek(0)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    return f, f


def _read_exact(stream, n, path, what):
    """Exactly ``n`` bytes, read in chunks: a stream that ends early costs only what it
    held, never the ``n`` its header promised."""
    parts, got = [], 0
    try:
        while got < n:
            data = stream.read(min(_CHUNK, n - got))
            if not data:
                break
            parts.append(data)
            got += len(data)
    except (OSError, EOFError, zlib.error) as exc:  # bad gzip stream, CRC error, cut off
        raise CorruptFileError(f"{path}: cannot decompress ({exc})") from None
    if got != n:
        raise CorruptFileError(
            f"{path}: truncated: expected {n} bytes of {what}, got {got}"
        )
    return b"".join(parts)


def read_idx(path, *, sha256=None, max_bytes=MAX_BYTES):
    """Read the IDX file ``path`` (gzip-compressed or raw) into a NumPy array.

    Returns a C-contiguous array of the file's dimensions in native byte order
    (``uint8`` for MNIST). ``sha256``: a hex digest, or a collection of accepted
    digests, of the *decompressed* file; when given, any other content is refused.
    ``max_bytes``: the largest data size accepted (default 256 MiB); a header that
    announces more is refused before any allocation.
    Raises ``FileNotFoundError`` when ``path`` is missing and :class:`CorruptFileError`
    (a ``ValueError``) for a wrong magic number, bad dimensions, a truncated file,
    trailing bytes, a broken gzip stream or a checksum mismatch.
    """
    path = os.fspath(path)
    stream, raw = _open(path)
    try:
        header = _read_exact(stream, 4, path, "header")
        zero, code, ndim = struct.unpack(">HBB", header)
        if zero != 0 or code not in _DTYPES:
            raise CorruptFileError(
                f"{path}: not an IDX file (magic number 0x{header.hex()}; expected "
                "0x0000 followed by a type code such as 08 and the number of dimensions)"
            )
        if ndim == 0:
            raise CorruptFileError(f"{path}: IDX header announces 0 dimensions")
        dims_bytes = _read_exact(stream, 4 * ndim, path, "dimensions")
        dims = struct.unpack(f">{ndim}I", dims_bytes)
        dtype = _DTYPES[code]
        nbytes = math.prod(dims) * dtype.itemsize  # exact: no int64 overflow on junk
        if nbytes > max_bytes:
            raise CorruptFileError(f"{path}: IDX header announces shape {dims} ({nbytes} bytes), "
                                   f"more than the {max_bytes} bytes this file can hold")
        body = _read_exact(stream, nbytes, path, f"data for shape {dims}")
        try:
            extra = stream.read(1)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFileError(f"{path}: cannot decompress ({exc})") from None
        if extra:
            raise CorruptFileError(
                f"{path}: trailing bytes after the {nbytes} bytes of data for shape {dims}"
            )
    finally:
        stream.close()
        raw.close()
    if sha256 is not None:
        accepted = {sha256} if isinstance(sha256, str) else set(sha256)
        digest = hashlib.sha256(header + dims_bytes + body).hexdigest()
        if digest not in accepted:
            raise CorruptFileError(
                f"{path}: SHA-256 of the decompressed contents is {digest}, which is not "
                f"the known checksum of this file: the file is damaged or is not the one expected"
            )
    arr = np.frombuffer(body, dtype=dtype).reshape(dims)
    # frombuffer over bytes is read-only; give callers an ordinary, writable array.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _encode(array):
    a = np.ascontiguousarray(array)
    dt = a.dtype.newbyteorder("=")
    if dt not in _CODES:
        raise TypeError(f"array: IDX cannot store dtype {a.dtype}")
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"array: IDX needs 1 to 255 dimensions, got shape {a.shape}")
    code = _CODES[dt]
    header = struct.pack(">HBB", 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(_DTYPES[code], copy=False).tobytes()


def sha256_of_idx(array):
    """The SHA-256 hex digest of ``array`` encoded as an (uncompressed) IDX file."""
    return hashlib.sha256(_encode(array)).hexdigest()


def write_idx(path, array, *, compress=None):
    """Write ``array`` to ``path`` as an IDX file; gzip it when ``compress`` is true
    (default: when ``path`` ends in ``.gz``). The gzip header carries no file name and
    no time stamp, so the same array always gives the same bytes."""
    path = os.fspath(path)
    data = _encode(array)
    if compress is None:
        compress = path.endswith(".gz")
    with open(path, "wb") as f:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
                g.write(data)
        else:
            f.write(data)
