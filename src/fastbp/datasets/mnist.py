"""MNIST for fastbp: the book's ``load_mnist``, without its pickle cache.

Where the data comes from, in this order (the first that applies wins):

1. ``data_dir=`` (the ``--data-dir`` of ``fastbp train``): must hold the four files;
2. the ``FASTBP_DATA`` environment variable: the same, for a folder set once
   (``FASTBP_MNIST_DIR``, its former name, is still read, with a ``DeprecationWarning``);
3. the user cache, ``$XDG_CACHE_HOME/fastbp/mnist`` (default ``~/.cache/fastbp/mnist``),
   when it holds the four files;
4. a download of the missing files into that cache, from the mirrors in
   ``FASTBP_MNIST_MIRRORS`` (base URLs separated by spaces or commas; an empty value
   turns downloads off) or else :data:`DEFAULT_MIRRORS`, one after another; a download
   stops at the most bytes the file can take, after an overall deadline per file, and
   when it stays far slower than any real connection (:data:`MIN_RATE`: the mirror is
   then given up for every file, and the next one tried);
5. the small real MNIST sample inside the package (5000 training and 1000 test images,
   stratified), with a :class:`SampleDataWarning` saying so.

Every file is read as gzip or raw IDX, checked (magic number, dimensions, exact size)
and matched against the SHA-256 of the decompressed official file (or of the bundled
sample); nothing else is accepted, and nothing is ever unpickled. Downloads go to a
temporary file beside the target, are verified, then renamed into place: an interrupted
or failed download leaves nothing behind. Nothing is written inside the package.

``locate_mnist`` tells which data would be used (and downloads if needed); the
``fastbp.datasets`` logger records the choice at INFO level.
"""
import collections
import http.client
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from http.client import HTTPException
from typing import NamedTuple

import numpy as np

from ._idx import CorruptFileError, read_idx
from .._progress import ProgressBar, format_bytes

__all__ = [
    "load_mnist", "locate_mnist", "MnistSource", "SampleDataWarning", "DownloadError",
    "cache_dir", "mirrors", "DEFAULT_MIRRORS", "SAMPLE_DIR", "MinRate", "MIN_RATE",
]

log = logging.getLogger("fastbp.datasets")

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NAMES = FILES["train"] + FILES["test"]

# SHA-256 of the decompressed official files (the .gz wrappers differ between mirrors,
# the contents do not).
FULL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FULL_SIZES = {"train": 60000, "test": 10000}
# Bytes of the data of each file (after its header): the most an MNIST file can hold.
FULL_BYTES = {
    "train-images-idx3-ubyte": 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 60000,
    "t10k-images-idx3-ubyte": 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 10000,
}

# The bundled sample (rebuilt by tools/make_mnist_sample.py; it checks these).
SAMPLE_SHA256 = {
    "train-images-idx3-ubyte": "b8eb4f7feee079904bc0bd6b8c6afc98970a49372aa6f78bc5ac757d75b9b2c7",
    "train-labels-idx1-ubyte": "48201b1234b099186ba7cbaa06e710f8c7d1a33e4b9d2b9fdde93df440f948b2",
    "t10k-images-idx3-ubyte": "52af1e12eb08bab30da4de1a1e0078ccf90c5218d0d623432cdb1e5c2e1f7be0",
    "t10k-labels-idx1-ubyte": "6de7a40c356d12d203f0f23bfbe5c94eac05a01c688e670169fa9ddd929d3b0b",
}
SAMPLE_SIZES = {"train": 5000, "test": 1000}
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
DEFAULT_TIMEOUT = 10.0  # seconds, per connection attempt and per read
DEFAULT_DEADLINE = 300.0  # seconds for the whole download of one file


class MinRate(NamedTuple):
    """The slowest a download may go: once ``grace`` seconds have passed since the
    server answered, the bytes received over the last ``window`` seconds (since the
    answer, before that) must average at least ``bytes_per_s``; checked whenever a read
    returns (a read that brings nothing for the connection timeout fails anyway)."""

    bytes_per_s: float
    window: float
    grace: float


#: 1 KiB/s over 20 s, after 10 s: far below any real connection (MNIST's largest file,
#: 9.9 MB, already needs 33 KB/s to meet the deadline), so only a stalled or trickling
#: mirror is given up, within about 15 s; a pause of a few seconds in a real transfer
#: stays well above it.
MIN_RATE = MinRate(bytes_per_s=1024, window=20.0, grace=10.0)


class _RateWatch:
    """:class:`MinRate` over a download: ``check`` after each read."""

    def __init__(self, rule, url):
        self.rule, self.url = rule, url
        self.begun = time.monotonic()
        self.samples = collections.deque([(self.begun, 0)])  # (time, bytes so far)

    def check(self, received):
        now, rule = time.monotonic(), self.rule
        self.samples.append((now, received))
        # keep one sample at or before the window's start, and those after it
        while len(self.samples) > 1 and self.samples[1][0] <= now - rule.window:
            self.samples.popleft()
        if now - self.begun < rule.grace:
            return
        since, before = self.samples[0]
        span = max(now - since, 1e-9)
        if (received - before) / span < rule.bytes_per_s:
            raise DownloadError(
                f"{self.url}: too slow, {received - before} bytes in the last {span:.1f} s "
                f"(a download must keep {rule.bytes_per_s:g} bytes/s over {rule.window:g} s "
                f"after its first {rule.grace:g} s)")


def _max_download(name):
    """The most bytes a mirror may send for ``name``: the uncompressed file (a mirror
    may serve it raw) plus room for the gzip wrapper. Anything longer is not MNIST."""
    return 16 + FULL_BYTES[name] + FULL_BYTES[name] // 100 + 4096


class SampleDataWarning(UserWarning):
    """The full MNIST set was not available: the bundled sample is used instead."""


class DownloadError(OSError):
    """No mirror could deliver a file."""


@dataclass(frozen=True)
class MnistSource:
    """Which MNIST data is used.

    ``kind``: ``"data_dir"``, ``"FASTBP_DATA"``, ``"cache"``, ``"download"`` (just
    downloaded into the cache) or ``"sample"``; ``path``: the folder read; ``reason``:
    for the sample, why the full set was not used.
    """

    kind: str
    path: str
    reason: str = ""

    @property
    def is_sample(self):
        """True when this is the bundled sample, not the full set."""
        return self.kind == "sample"

    def __str__(self):
        if self.is_sample:
            n_train, n_test = SAMPLE_SIZES["train"], SAMPLE_SIZES["test"]
            return (f"the bundled MNIST sample ({n_train} training / {n_test} test images), "
                    f"because {self.reason}")
        where = {
            "data_dir": "the given data directory",
            "FASTBP_DATA": "FASTBP_DATA",
            "cache": "the cache",
            "download": "just downloaded to the cache",
        }[self.kind]
        return f"MNIST from {self.path} ({where})"


def cache_dir():
    """The folder where downloads are kept: ``$XDG_CACHE_HOME/fastbp/mnist``, by default
    ``~/.cache/fastbp/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastbp", "mnist")


def mirrors():
    """The mirror base URLs to try: ``FASTBP_MNIST_MIRRORS`` (split on spaces and commas;
    set but empty: none, downloads off) or :data:`DEFAULT_MIRRORS`."""
    env = os.environ.get("FASTBP_MNIST_MIRRORS")
    if env is None:
        return list(DEFAULT_MIRRORS)
    return [m for m in env.replace(",", " ").split() if m]


def find_file(folder, name):
    """``folder/name.gz`` or ``folder/name`` (the first that exists), else ``None``."""
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _missing(folder):
    return [n for n in NAMES if find_file(folder, n) is None]


def _check_folder(folder, what):
    """An explicitly named folder must exist and hold all four files."""
    folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{what}{folder}: no such directory")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{what}{folder}: not a directory")
    missing = _missing(folder)
    if missing:
        raise FileNotFoundError(
            f"{what}{folder}: no MNIST file {', '.join(missing)} (.gz or raw IDX) there"
        )
    return folder


# ---------------------------------------------------------------------- download

class _Answer:
    """An opener whose connections are closed when the server has not answered (its
    status line and headers) ``seconds`` after connecting: each of their reads waits up
    to the timeout, so a server trickling them would hold a download forever, before
    :class:`MinRate` can see it. (A TLS handshake, during which the socket is not the
    connection's yet, is bounded by the timeout per read only.) ``expired`` says it
    happened; ``done()`` disarms it once the answer is in."""

    def __init__(self, seconds):
        self.seconds, self.timers, self.expired = seconds, [], False
        arm = self._arm

        class HTTP(http.client.HTTPConnection):
            def connect(self):
                arm(self)
                super().connect()

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(HTTP, req)

        handlers = [HTTPHandler]
        if hasattr(http.client, "HTTPSConnection"):
            class HTTPS(http.client.HTTPSConnection):
                def connect(self):
                    arm(self)
                    super().connect()

            class HTTPSHandler(urllib.request.HTTPSHandler):
                def https_open(self, req):
                    return self.do_open(HTTPS, req)
            handlers.append(HTTPSHandler)
        self.opener = urllib.request.build_opener(*handlers)

    def _arm(self, connection):
        timer = threading.Timer(self.seconds, self._hang_up, (connection,))
        timer.daemon = True
        timer.start()
        self.timers.append(timer)

    def _hang_up(self, connection):
        self.expired = True
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the pending read returns at once
            except OSError:
                pass

    def done(self):
        for timer in self.timers:
            timer.cancel()


def _open(url, request, timeout, rule):
    """``urlopen``, with :class:`_Answer`: the server must answer within the rate rule's
    grace and window (30 s by default; a real one answers in well under a second)."""
    answer = _Answer(rule.grace + rule.window)
    try:
        return answer.opener.open(request, timeout=timeout)
    except (OSError, HTTPException) as exc:
        if answer.expired and not isinstance(exc, urllib.error.HTTPError):
            raise DownloadError(f"{url}: no answer within {answer.seconds:g} s") from None
        raise
    finally:
        answer.done()


def _fetch(url, dest, name, *, timeout, progress, deadline=DEFAULT_DEADLINE, min_rate=None):
    """Download ``url`` to ``dest`` atomically; the content must be the official
    ``name``. It stops with :class:`DownloadError` after :func:`_max_download` bytes,
    ``deadline`` seconds, or when slower than ``min_rate`` (default :data:`MIN_RATE`),
    all checked after every read (a read waits at most ``timeout``), and when the
    server has not answered within the rule's grace and window (:func:`_open`). On any failure
    nothing is left at ``dest`` or beside it."""
    folder = os.path.dirname(dest)
    limit = _max_download(name)
    rule = MIN_RATE if min_rate is None else min_rate
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        start = time.monotonic()
        request = urllib.request.Request(url, headers={"User-Agent": "fastbp"})
        with os.fdopen(fd, "wb") as out, _open(url, request, timeout, rule) as r:
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise DownloadError(f"{url}: announces {total} bytes, more than an MNIST "
                                    f"{name} can be ({limit})")
            watch = _RateWatch(rule, url)
            with ProgressBar(total, label=name, unit="B", enabled=progress) as bar:
                while True:
                    # read1: whatever one receive brings, so a trickle still returns here
                    chunk = r.read1(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
                    if out.tell() > limit:
                        raise DownloadError(f"{url}: sent more than the {limit} bytes an "
                                            f"MNIST {name} can be")
                    if time.monotonic() - start > deadline:
                        raise DownloadError(f"{url}: not complete after {deadline:g} s "
                                            f"({out.tell()} bytes)")
                    watch.check(out.tell())
            size = out.tell()
        if total is not None and size != total:
            raise DownloadError(f"{url}: connection closed after {size} of {total} bytes")
        read_idx(tmp, sha256=FULL_SHA256[name], max_bytes=FULL_BYTES[name])  # verify first
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return size


def _host(url):
    return urllib.parse.urlsplit(url).netloc or url


def _why(exc):
    """A short reason: ``Name or service not known`` rather than ``<urlopen error ...>``."""
    reason = getattr(exc, "reason", None) or exc
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def _download_missing(folder, *, mirror_list, timeout, progress, deadline=DEFAULT_DEADLINE):
    """Download every missing file into ``folder``; ``DownloadError`` if one fails."""
    os.makedirs(folder, exist_ok=True)
    dead = set()  # mirrors that could not be reached: not tried again for other files
    for name in _missing(folder):
        errors = []
        for base in mirror_list:
            if base in dead:
                continue
            url = base.rstrip("/") + "/" + name + ".gz"
            log.info("downloading %s", url)
            try:
                size = _fetch(url, os.path.join(folder, name + ".gz"), name,
                              timeout=timeout, progress=progress, deadline=deadline)
            except urllib.error.HTTPError as exc:  # the server answered: try the next file too
                errors.append(f"{_host(url)}: HTTP {exc.code} {exc.reason}")
            except (OSError, HTTPException, CorruptFileError, ValueError) as exc:
                errors.append(f"{_host(url)}: {_why(exc)}")
                if not isinstance(exc, CorruptFileError):
                    dead.add(base)
            else:
                log.info("downloaded %s (%s)", url, format_bytes(size))
                break
        else:
            detail = "; ".join(errors) if errors else "no mirror left to try"
            raise DownloadError(f"could not download {name}: {detail}")


def _data_env():
    """``FASTBP_DATA``, or its former name ``FASTBP_MNIST_DIR`` (deprecated)."""
    value = os.environ.get("FASTBP_DATA")
    if not value and os.environ.get("FASTBP_MNIST_DIR"):
        warnings.warn("FASTBP_MNIST_DIR is deprecated: set FASTBP_DATA instead",
                      DeprecationWarning, stacklevel=4)
        return os.environ["FASTBP_MNIST_DIR"]
    return value


def _locate(data_dir, download, timeout, progress, mirror_list, deadline=DEFAULT_DEADLINE):
    """:func:`locate_mnist` without the warning (callers warn at their own level)."""
    if data_dir is not None:
        return MnistSource("data_dir", _check_folder(data_dir, "MNIST data directory "))
    env = _data_env()
    if env:
        return MnistSource("FASTBP_DATA", _check_folder(env, "FASTBP_DATA="))
    cache = cache_dir()
    if not _missing(cache):
        return MnistSource("cache", cache)
    mirror_list = mirrors() if mirror_list is None else list(mirror_list)
    if not download:
        reason = "the full set is not in the cache and downloading is off"
    elif not mirror_list:
        reason = "the full set is not in the cache and no download mirror is set (FASTBP_MNIST_MIRRORS)"
    else:
        try:
            _download_missing(cache, mirror_list=mirror_list, timeout=timeout, progress=progress,
                              deadline=deadline)
        except (OSError, HTTPException) as exc:
            reason = f"the full set is not in {cache} and could not be downloaded ({exc})"
        else:
            return MnistSource("download", cache)
    return MnistSource("sample", SAMPLE_DIR, reason)


def locate_mnist(data_dir=None, *, download=True, timeout=DEFAULT_TIMEOUT, progress=None,
                 mirror_list=None, deadline=DEFAULT_DEADLINE):
    """Find the MNIST files (downloading them if needed); return a :class:`MnistSource`.

    ``data_dir`` and ``FASTBP_DATA`` name folders that must hold the four files
    (``FileNotFoundError`` otherwise: a typo must not silently switch to other data).
    Otherwise the cache is used, completed by a download when ``download`` is true;
    failing that, the bundled sample, with a :class:`SampleDataWarning`.
    ``timeout``: seconds per connection attempt and per read; ``deadline``: seconds
    for the whole download of one file; ``progress``: show a
    download bar on stderr (default: when stderr is a terminal); ``mirror_list``: base
    URLs to try (default: :func:`mirrors`).
    """
    source = _locate(data_dir, download, timeout, progress, mirror_list, deadline)
    if source.is_sample:
        warnings.warn(f"fastbp: using {source}", SampleDataWarning, stacklevel=2)
    return source


# ---------------------------------------------------------------------- loading

def _read_split(folder, split):
    img_name, lbl_name = FILES[split]
    accepted = lambda name: (FULL_SHA256[name], SAMPLE_SHA256.get(name, ""))  # noqa: E731
    images = read_idx(find_file(folder, img_name), sha256=accepted(img_name),
                      max_bytes=FULL_BYTES[img_name])
    labels = read_idx(find_file(folder, lbl_name), sha256=accepted(lbl_name),
                      max_bytes=FULL_BYTES[lbl_name])
    # The checksums already pin the contents; these checks only give plainer messages.
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise CorruptFileError(
            f"{folder}: {split} images {images.shape} and labels {labels.shape} do not "
            "match (expected (N, 28, 28) and (N,))"
        )
    return images, labels


def _one_hot(labels):
    out = np.zeros((labels.size, 10), dtype=np.float32)
    out[np.arange(labels.size), labels] = 1.0
    return out


def load_mnist(normalize=True, flatten=True, one_hot_label=False, *, data_dir=None,
               download=True, timeout=DEFAULT_TIMEOUT, progress=None, mirror_list=None,
               source=None):
    """The MNIST set, as the book's ``dataset.mnist.load_mnist``.

    Returns ``(x_train, t_train), (x_test, t_test)``:

    - ``x``: ``normalize=True``: float32 in [0, 1] (pixel / 255), else uint8 in [0, 255];
      ``flatten=True``: shape (N, 784), else (N, 1, 28, 28).
    - ``t``: ``one_hot_label=False``: uint8 labels (N,) in 0..9; ``True``: float32 (N, 10)
      one-hot rows (the book gives float64; float32 matches ``x`` and halves the memory,
      and the layers compute in ``x``'s dtype either way).

    N is 60000 / 10000 for the full set, 5000 / 1000 for the bundled sample. The keyword
    arguments choose where the data comes from, as in :func:`locate_mnist` (see the
    module docstring: ``data_dir``, ``FASTBP_DATA``, the user cache, a download, the
    sample); the choice is logged on the ``fastbp.datasets`` logger, and the sample
    comes with a :class:`SampleDataWarning`. ``source``: a :class:`MnistSource` from
    :func:`locate_mnist`, to read exactly that data without searching again.
    Raises ``FileNotFoundError`` for a ``data_dir`` without the files and
    ``CorruptFileError`` (a ``ValueError``) for a damaged or unknown file.
    """
    if source is None:
        source = _locate(data_dir, download, timeout, progress, mirror_list)
        if source.is_sample:
            warnings.warn(f"fastbp: using {source}", SampleDataWarning, stacklevel=2)
    elif not isinstance(source, MnistSource):
        raise TypeError(f"source: expected a MnistSource from locate_mnist, got {type(source).__name__}")
    log.info("using %s", source)
    try:
        (x_train, t_train), (x_test, t_test) = (_read_split(source.path, s) for s in ("train", "test"))
    except CorruptFileError as exc:
        if source.kind in ("cache", "download"):  # ours to fix: say how
            raise CorruptFileError(f"{exc} (delete the file to download it again)") from None
        raise
    kinds = {x_train.shape[0] == FULL_SIZES["train"], x_test.shape[0] == FULL_SIZES["test"]}
    if len(kinds) != 1:
        raise CorruptFileError(
            f"{source.path}: the training and test files come from different sets "
            f"({x_train.shape[0]} and {x_test.shape[0]} images)"
        )

    def images(x):
        if normalize:
            x = x.astype(np.float32)
            x /= 255.0
        return x.reshape(x.shape[0], 784) if flatten else x.reshape(x.shape[0], 1, 28, 28)

    def labels(t):
        return _one_hot(t) if one_hot_label else t

    return (images(x_train), labels(t_train)), (images(x_test), labels(t_test))
