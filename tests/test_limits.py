"""Bounded time and memory: what a call costs is bounded by the arrays it is given and
returns, and what a file costs to load by the network it is loaded into.

- Empty arrays with large extents (an (N, 0, H, W) batch, a (2**30, 0) column matrix):
  every kernel and layer returns at once, on both backends, with the same shapes,
  dtypes and values (the compiled loops used to walk the empty extents: seconds; NumPy's
  pooling built index arrays as long as N: hundreds of megabytes).
- ``load_params``' restricted unpickler visits each object of a pickle once, however
  often the pickle refers to it (a 300-byte DAG is 2**40 paths).
- ``.npz`` bombs: a member that would expand beyond what the network's arrays take is
  refused from the zip entry and the .npy header, before its data is read.

Each case runs in a child process with a time limit and a memory limit (``_limits``),
so a regression fails instead of hanging or swapping.
"""
import io
import json
import os
import pickle
import re
import struct
import zlib

import numpy as np
import pytest

from fastbp import TwoLayerNet, _pickle, kernels, serialization

from _limits import needs_limits, run_limited

pytestmark = needs_limits

BACKENDS = ["numpy"] + (["cython"] if kernels.HAVE_CYTHON else [])


# ---------------------------------------------------------------------- empty extents

# Each case is an expression of ``k`` (the kernel module), ``L`` (fastbp.layers, under
# the backend) and ``Z(shape)`` (zeros of the dtype); tuples of results are compared.
EMPTY_CASES = {
    "im2col, no channels, 2**32 windows": "k.im2col(Z((1, 0, 2**16, 2**16)), 1, 1)",
    "im2col, no channels, 2**26 images, padded": "k.im2col(Z((2**26, 0, 4, 4)), 3, 3, 1, 1)",
    "col2im, (2**30, 0) columns": "k.col2im(Z((2**30, 0)), (2**30, 0, 1, 1), 1, 1)",
    "col2im, no images of 2**30 pixels": "k.col2im(Z((0, 4)), (0, 1, 2**15, 2**15), 2, 2, 2)",
    "col2im, empty images, padded": "k.col2im(Z((2**10 * 4, 1)), (2**10, 1, 0, 0), 1, 1, 1, 1)",
    "maxpool_forward, 2**26 images": "k.maxpool_forward(Z((2**26, 0, 2, 2)), 2, 2)",
    "maxpool_forward, 2**30 pixels": "k.maxpool_forward(Z((1, 0, 2**15, 2**15)), 2, 2)",
    "maxpool_backward, 2**26 images":
        "k.maxpool_backward(Z((2**26, 0, 1, 1)), np.zeros(0, np.intp), (2**26, 0, 2, 2), 2, 2)",
    "conv_bias_grad, 2**15 x 2**15 empty planes": "k.conv_bias_grad(Z((2**15, 2**15, 0, 0)))",
    "conv_bias_grad, 2**30 empty images": "k.conv_bias_grad(Z((2**30, 1, 0, 0)))",
    "conv_bias_grad, no images": "k.conv_bias_grad(Z((0, 2**16, 4, 4)))",
    "bias_grad, (2**30, 0)": "k.bias_grad(Z((2**30, 0)))",
    "affine, (2**30, 0)":
        "(k.affine_forward(Z((2**30, 0)), Z((0, 0)), Z(0)), "
        "k.affine_backward(Z((2**30, 0)), Z((2**30, 0)), Z((0, 0))), "
        "k.affine_backward_sgd(Z((2**30, 0)), Z((2**30, 0)), Z((0, 0)), Z(0), 0.1, 0.5))",
    "batchnorm, (2**30, 0)":
        "(k.batchnorm_forward(Z((2**30, 0)), Z(0), Z(0), Z(0), Z(0), 0.9, 1e-6), "
        "k.batchnorm_inference(Z((2**30, 0)), Z(0), Z(0), Z(0), Z(0), 1e-6), "
        "k.batchnorm_backward(Z((2**30, 0)), Z((2**30, 0)), Z(0), Z(0)))",
    "elementwise, (2**40, 0)":
        "(k.relu_forward(Z((2**40, 0))), k.relu_backward(Z((2**40, 0)), Z((2**40, 0)) > 0), "
        "k.sigmoid_forward(Z((2**40, 0))), k.sigmoid_backward(Z((2**40, 0)), Z((2**40, 0))), "
        "k.dropout_forward(Z((2**40, 0)), Z((2**40, 0)), 0.5, 2.0), "
        "k.adam_update(Z((2**40, 0)), Z((2**40, 0)), Z((2**40, 0)), Z((2**40, 0)), 0.1, 0.9, 0.99, 1e-8))",
    "Pooling layer, 2**26 images":
        "(lambda p: (p.forward(Z((2**26, 0, 2, 2))), p.backward(Z((2**26, 0, 1, 1)))))(L.Pooling(2, 2))",
    "Convolution layer, no input channels":
        "(lambda c: (c.forward(Z((2**10, 0, 3, 3))), c.backward(Z((2**10, 3, 2, 2)) + 1), c.dW, c.db))"
        "(L.Convolution(Z((3, 0, 2, 2)), Z(3) + 1))",
    "Convolution layer, no images of 2**30 pixels":
        "(lambda c: (c.forward(Z((0, 1, 2**15, 2**15))), c.backward(Z((0, 2, 2**14, 2**14))), c.dW, c.db))"
        "(L.Convolution(Z((2, 1, 2, 2)), Z(2), stride=2))",
}

_EMPTY_CHILD = """
import hashlib, json, time
from fastbp import kernels, layers as L
from fastbp.kernels import _numpy

def describe(r):
    if isinstance(r, tuple):
        return [describe(x) for x in r]
    a = np.asarray(r)
    return [list(a.shape), a.dtype.str, hashlib.sha1(a.tobytes()).hexdigest()[:12]]

expr = sys.argv[1]
for backend in sys.argv[2:]:
    k = _numpy if backend == "numpy" else kernels._cython
    for dtype in (np.float32, np.float64):
        Z = lambda shape: np.zeros(shape, dtype)
        tic = time.perf_counter()
        try:
            with kernels.use_backend(backend):
                result = describe(eval(expr))
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
        print(json.dumps([backend, np.dtype(dtype).name, time.perf_counter() - tic, result]),
              flush=True)
"""


@pytest.mark.parametrize("expr", EMPTY_CASES.values(), ids=EMPTY_CASES.keys())
def test_empty_extents_cost_nothing_and_agree(expr):
    r = run_limited(_EMPTY_CHILD, expr, *BACKENDS, budget=64 << 20, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 * len(BACKENDS), r.stdout
    by_dtype = {}
    for backend, dtype, seconds, result in rows:
        assert not isinstance(result, str), f"{backend} {dtype}: {result}"
        # microseconds; the compiled loops took 2 to 12 s over the empty extents
        assert seconds < 1.0, f"{backend} {dtype}: {seconds:.2f} s"
        by_dtype.setdefault(dtype, []).append(result)
    for dtype, results in by_dtype.items():
        assert all(res == results[0] for res in results), f"{dtype}: backends differ: {results}"


# ---------------------------------------------------------------------- pickles

def _dag(depth, make):
    node = make(None)
    for _ in range(depth):
        node = make(node)
    return node


DAGS = {
    "list": lambda n: [] if n is None else [n, n],
    "tuple": lambda n: () if n is None else (n, n),
    "dict": lambda n: {} if n is None else {"a": n, "b": n},
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("kind", DAGS)
def test_a_pickled_dag_is_checked_in_linear_time(tmp_path, kind, protocol):
    """40 levels of ``[l, l]``: about 300 bytes, 41 objects, 2**40 paths. The check
    visits each object once (it visited every path: hours)."""
    data = pickle.dumps(_dag(40, DAGS[kind]), protocol=protocol)
    assert len(data) < 1000
    (tmp_path / "dag.pkl").write_bytes(data)
    (tmp_path / "params.pkl").write_bytes(pickle.dumps({"W1": _dag(40, DAGS[kind])}, protocol))
    r = run_limited("""
        import time
        from fastbp import TwoLayerNet, _pickle
        tic = time.perf_counter()
        obj = _pickle.load(sys.argv[1])  # accepted: plain lists, tuples and dicts
        try:  # the book's format wants arrays: refused, not turned into 2**40 elements
            TwoLayerNet(4, 3, 2).load_params(sys.argv[2])
        except ValueError as exc:
            print(exc)
        print(type(obj).__name__, time.perf_counter() - tic)
        """, tmp_path / "dag.pkl", tmp_path / "params.pkl", timeout=20)
    assert r.returncode == 0, r.stderr
    refusal, last = r.stdout.splitlines()
    assert "W1 is a" in refusal and "expected an array" in refusal and "params.pkl" in refusal
    name, seconds = last.split()
    assert name == type(DAGS[kind](None)).__name__ and float(seconds) < 1.0


def test_a_pickle_that_contains_itself_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(_pickle.UnsafePickleError, match="contains itself"):
        _pickle.load(io.BytesIO(pickle.dumps({"W1": loop})))


def test_a_pickle_larger_than_the_network_is_refused_unread(tmp_path):
    net = TwoLayerNet(4, 3, 2)
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps({"W1": b"\0" * (1 << 20)}))
    with pytest.raises(ValueError, match=r"params.pkl: \d+ bytes, more than the \d+ that a pickle"):
        net.load_params(path)


# ---------------------------------------------------------------------- .npz bombs

def _npy_header(shape, descr="<f8"):
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False,
                                             "shape": tuple(shape)})
    return f.getvalue()


_MIB_OF_ZEROS = None


def _deflated_zeros(mib):
    """A raw deflate stream of ``mib`` MiB of zeros, built from one compressed MiB
    repeated (each ends with a full flush, so none refers to the one before): about a
    kilobyte per MiB, without compressing a gigabyte in the test."""
    global _MIB_OF_ZEROS
    if _MIB_OF_ZEROS is None:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        _MIB_OF_ZEROS = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return _MIB_OF_ZEROS * mib


def _member(name, head, zeros_mib=0, data=b""):
    """(name, compressed bytes, size, crc) of a deflated member: ``head`` + ``data`` +
    ``zeros_mib`` MiB of zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(head + data) + c.flush(zlib.Z_FULL_FLUSH) + _deflated_zeros(zeros_mib)
    body += zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the final, empty block
    crc = zlib.crc32(head + data)
    zero = bytes(1 << 20)
    for _ in range(zeros_mib):
        crc = zlib.crc32(zero, crc)
    return name, body, len(head) + len(data) + (zeros_mib << 20), crc


def _write_zip(path, members):
    """A zip of deflated members, written by hand (zipfile compresses what it writes)."""
    out, central = io.BytesIO(), []
    for name, body, size, crc in members:
        offset, n = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(body),
                              size, len(n), 0) + n + body)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21,
                                   crc, len(body), size, len(n), 0, 0, 0, 0, 0, offset) + n)
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          out.tell() - start, start, 0))
    path.write_bytes(out.getvalue())


def _network_members(net, skip=(), zeros=True):
    """The members of ``net``'s own file, deflated (with zeros for the arrays, so that
    the file is small), but for the keys in ``skip``."""
    arrays = dict(serialization.network_arrays(net))
    arrays["__format__"] = np.array(serialization.NETWORK_FORMAT)
    arrays["__version__"] = np.array(serialization.VERSION, dtype=np.int64)
    members = []
    for key, a in arrays.items():
        if key not in skip:
            a = np.array(a, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
            if zeros and a.dtype.kind == "f":
                a = np.zeros_like(a)
            members.append(_member(key + ".npy", _npy_header(a.shape, a.dtype.str), data=a.tobytes()))
    return members


def _net():
    return TwoLayerNet(784, 300, 10, rng=0)  # W1: 1.9 MB, larger than the bombs' files


def _bomb(kind):
    """The members of a file for ``_net()`` with one bad member."""
    net = _net()
    w1 = net.params["W1"]
    others = _network_members(net, {"W1"})
    if kind == "W1 holds 1 GiB of zeros":  # about 1 MB on disk
        return others + [_member("W1.npy", _npy_header((1 << 27,)), zeros_mib=1024)]
    if kind == "a header announcing 256 MiB":  # 256 KB on disk
        return others + [_member("W1.npy", _npy_header((1 << 25,)), zeros_mib=256)]
    if kind == "a header announcing 256 MiB that the entry does not hold":
        return others + [_member("W1.npy", _npy_header((1 << 25,)), data=bytes(1000))]
    if kind == "the right W1, then 1 GiB of zeros":
        return others + [_member("W1.npy", _npy_header(w1.shape), data=bytes(w1.nbytes),
                                 zeros_mib=1024)]
    if kind == "an extra member of 1 GiB":
        return _network_members(net) + [_member("junk.npy", _npy_header((1 << 27,)),
                                                zeros_mib=1024)]
    if kind == "W1 transposed":
        return others + [_member("W1.npy", _npy_header(w1.shape[::-1]), data=bytes(w1.nbytes))]
    if kind == "a file larger than the network's arrays":
        return _network_members(net, zeros=False) + [
            _member("junk.npy", _npy_header((1 << 16,)), data=os.urandom(8 << 16))]
    raise AssertionError(kind)


EXPANDS = r"its members expand to \d+ bytes, more than the \d+ that these arrays take"
BOMBS = {
    "W1 holds 1 GiB of zeros": EXPANDS,
    "a header announcing 256 MiB": EXPANDS,
    "a header announcing 256 MiB that the entry does not hold":
        r"member W1.npy: its header announces 268435456 bytes of data, the archive holds 1000",
    "the right W1, then 1 GiB of zeros": EXPANDS,
    "an extra member of 1 GiB": EXPANDS,
    "W1 transposed": r"W1 has shape \(300, 784\), the network's has \(784, 300\)",
    "a file larger than the network's arrays":
        r"\d+ bytes, more than the \d+ that a file of these arrays takes",
}


@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
@pytest.mark.parametrize("kind", BOMBS)
def test_npz_bombs_are_refused_before_reading(tmp_path, kind, suffix):
    """Refused from the zip entries and the .npy headers, in a child with 64 MiB to
    spare (load_params used to peak at 1 GB, and 563 MB for the 256 MiB header)."""
    path = tmp_path / ("bomb" + suffix)
    _write_zip(path, _bomb(kind))
    assert path.stat().st_size < 4 << 20
    r = run_limited("""
        from fastbp import TwoLayerNet
        net = TwoLayerNet(784, 300, 10, rng=1)
        before = {k: v.copy() for k, v in net.params.items()}
        try:
            net.load_params(sys.argv[1])
        except ValueError as exc:
            print(exc)
        assert all((net.params[k] == v).all() for k, v in before.items())
        """, path, budget=64 << 20, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: ") and re.search(BOMBS[kind], r.stdout), r.stdout


def test_a_deflated_network_file_still_loads(tmp_path):
    """Bounds, not a ban: np.savez_compressed of the right arrays loads."""
    net = TwoLayerNet(4, 3, 2, rng=0)
    path = tmp_path / "c.npz"
    _write_zip(path, _network_members(net, zeros=False))
    other = TwoLayerNet(4, 3, 2, rng=1)
    other.load_params(path)
    for k, v in net.params.items():
        np.testing.assert_array_equal(other.params[k], v)


def test_a_checkpoint_may_not_expand_beyond_its_own_size(tmp_path):
    """Without a network to bound it, an archive may hold no more than its file."""
    path = tmp_path / "ck.npz"
    _write_zip(path, [_member("__format__.npy", _npy_header((), "<U17"),
                              data="fastbp.checkpoint".encode("utf-32-le")),
                      _member("junk.npy", _npy_header((1 << 24,)), zeros_mib=128)])
    with pytest.raises(ValueError, match="more than the .* of the file itself"):
        serialization.load_arrays(path, "fastbp.checkpoint")
