"""Files fastbp writes and reads: save_params/load_params, `fastbp train --save`,
checkpoints and `--resume`. The files come from real short `fastbp train` runs on the
bundled sample, and are reloaded."""
import contextlib
import os
import stat
import sys
import threading
import time

import numpy as np
import pytest

import fastbp
from fastbp import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet, cli, serialization
from fastbp.datasets import SAMPLE_DIR, load_mnist
from fastbp.distributed import checkpoints

BACKENDS = ["numpy"] + (["cython"] if fastbp.HAVE_CYTHON else [])


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FASTBP_MNIST_MIRRORS", "")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def sample():
    return load_mnist(data_dir=SAMPLE_DIR)


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("fastbp: error: ")
    return lines[0]


def _nets():
    return [
        lambda rng: TwoLayerNet(12, 5, 3, rng=rng),
        lambda rng: MultiLayerNet(12, [6, 4], 3, rng=rng, dtype=np.float32),
        lambda rng: MultiLayerNetExtend(12, [6, 4], 3, use_batchnorm=True, use_dropout=True,
                                        rng=rng),
    ]


# ---------------------------------------------------------------------- save_params / load_params

@pytest.mark.parametrize("make", _nets())
@pytest.mark.parametrize("save_backend, load_backend", [(a, b) for a in BACKENDS for b in BACKENDS])
def test_round_trip_in_place_across_backends(tmp_path, make, save_backend, load_backend):
    x = np.random.default_rng(0).standard_normal((20, 12))
    t = np.arange(20) % 3
    net = make(1)
    with fastbp.use_backend(save_backend):
        for _ in range(3):
            net.train_step(x.astype(net.params["W1"].dtype), t, fastbp.optimizers.SGD(0.1))
        want = net.predict(x.astype(net.params["W1"].dtype))
        net.save_params(tmp_path / "net.npz")
    other = make(2)
    held = {k: v for k, v in serialization.network_arrays(other).items()}
    with fastbp.use_backend(load_backend):
        other.load_params(tmp_path / "net.npz")
        got = other.predict(x.astype(other.params["W1"].dtype))
    for k, v in serialization.network_arrays(other).items():
        assert v is held[k]  # the same arrays: the layers see what was loaded
    assert other.layers["Affine1"].W is other.params["W1"]
    np.testing.assert_allclose(got, want, rtol=1e-5 if got.dtype == np.float32 else 1e-12)


def test_batchnorm_statistics_are_saved(tmp_path):
    net = MultiLayerNetExtend(12, [6], 3, use_batchnorm=True, rng=0)
    x = np.random.default_rng(1).standard_normal((30, 12)) * 3 + 2
    for _ in range(5):
        net.predict(x, train_flg=True)
    net.save_params(tmp_path / "bn.npz")
    with np.load(tmp_path / "bn.npz", allow_pickle=False) as z:
        assert {"running_mean1", "running_var1", "gamma1", "beta1"} <= set(z.files)
        np.testing.assert_array_equal(z["running_mean1"], net.layers["BatchNorm1"].running_mean)
        assert int(z["__version__"]) == serialization.VERSION
    fresh = MultiLayerNetExtend(12, [6], 3, use_batchnorm=True, rng=0)
    fresh.load_params(tmp_path / "bn.npz")
    np.testing.assert_array_equal(fresh.predict(x), net.predict(x))


def _tampered(tmp_path, change):
    net = TwoLayerNet(12, 5, 3, rng=0)
    net.save_params(tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        arrays = dict(z)
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("b2"), "no b2 in the file"),
    (lambda a: a.update(W9=np.zeros(2)), "unexpected W9"),
    (lambda a: a.update(W1=np.zeros((12, 6))), r"W1 has shape \(12, 6\), the network's has \(12, 5\)"),
    (lambda a: a.update(W2=a["W2"].astype(np.float32)), "W2 is float32, the network's is float64"),
    (lambda a: a.update(__version__=np.array(2)), "format version 2; this fastbp reads version 1"),
    (lambda a: a.pop("__format__"), "not a fastbp file"),
    (lambda a: a.update(__format__=np.array("fastbp.checkpoint")), "a fastbp.checkpoint file"),
])
def test_load_refuses_a_mismatch_naming_the_key(tmp_path, change, message):
    path = _tampered(tmp_path, change)
    net = TwoLayerNet(12, 5, 3, rng=1)
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ValueError, match=message) as exc:
        net.load_params(path)
    assert str(path) in str(exc.value)
    for k, v in net.params.items():
        np.testing.assert_array_equal(v, before[k])  # nothing half-loaded


def test_pickles_are_never_read(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"W1": 1}], dtype=object), allow_pickle=True)
    os.replace(tmp_path / "obj.npy", tmp_path / "obj.npz")
    with pytest.raises(ValueError, match="not a fastbp file"):
        TwoLayerNet(12, 5, 3).load_params(tmp_path / "obj.npz")
    # the book's .pkl weights go through the restricted unpickler: code is refused
    import pickle
    with open(tmp_path / "params.pkl", "wb") as f:
        pickle.dump({"W1": _RunsCode()}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load the global"):
        TwoLayerNet(12, 5, 3).load_params(tmp_path / "params.pkl")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must not run",))


def test_write_is_atomic(tmp_path, monkeypatch):
    net = TwoLayerNet(12, 5, 3, rng=0)
    path = tmp_path / "net.npz"
    net.save_params(path)
    good = path.read_bytes()
    assert oct(stat.S_IMODE(os.stat(path).st_mode)) != oct(0o600)  # not a temp file's mode

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="No space"):
        TwoLayerNet(12, 5, 3, rng=1).save_params(path)
    assert path.read_bytes() == good  # the previous file is intact
    assert os.listdir(tmp_path) == ["net.npz"]  # and no temporary is left


def _special_file(tmp_path, kind):
    """A FIFO, a /dev/null-like character device (needs the right to create one) or a
    socket, in ``tmp_path``: never the system's own."""
    path = str(tmp_path / kind)
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs, device nodes or UNIX sockets here")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "chardev":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
        except (PermissionError, AttributeError):
            pytest.skip("cannot create a device node here")
    else:
        import socket
        if len(path) > 100:
            pytest.skip("path too long for a UNIX socket")
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()
    return path


@contextlib.contextmanager
def _reader_waiting(fifo):
    """A reader waiting on ``fifo`` (the case of the issue: a writer replacing the FIFO
    left it waiting forever), draining what is written; yields the list of byte counts
    it read. Code that wrongly writes into the FIFO then fails the test instead of
    hanging it. On exit the reader is released if nobody wrote."""
    drained = []

    def drain():
        with open(fifo, "rb") as f:
            while chunk := f.read(1 << 16):
                drained.append(len(chunk))
    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield drained
    finally:
        deadline = time.monotonic() + 5
        # (if the FIFO was replaced, its reader is lost: a daemon thread)
        while thread.is_alive() and stat.S_ISFIFO(os.lstat(fifo).st_mode):
            try:  # an end of file for the reader, once it is there
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: not opened for reading yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            thread.join(0.1)


SPECIAL = {"fifo": (stat.S_ISFIFO, r"is a FIFO \(named pipe\)"),
           "chardev": (stat.S_ISCHR, "is a character device"),
           "socket": (stat.S_ISSOCK, "is a socket")}


@pytest.mark.parametrize("kind", SPECIAL)
def test_save_params_refuses_what_is_not_a_regular_file(tmp_path, kind):
    """A FIFO with its reader, a device node, a socket: refused before anything is
    written (they used to be replaced by a regular file: the reader of the FIFO waited
    forever, and as root ``--save /dev/null`` would replace the system's /dev/null)."""
    path = _special_file(tmp_path, kind)
    is_kind, message = SPECIAL[kind]
    with pytest.raises(FileExistsError, match=f"{path} {message}, not a regular file"), \
            (_reader_waiting(path) if kind == "fifo" else contextlib.nullcontext()):
        TwoLayerNet(12, 5, 3).save_params(path)
    assert is_kind(os.lstat(path).st_mode)  # still what it was
    assert sorted(os.listdir(tmp_path)) == [kind]  # no temporary file left
    with pytest.raises(OSError, match=message):
        serialization.check_writable("/dev/null" if kind == "chardev" else path, "--save")


@pytest.mark.parametrize("option", ["--save", "--checkpoint", "--plot"])
def test_train_refuses_a_fifo_target_in_one_line(tmp_path, capsys, option):
    path = _special_file(tmp_path, "fifo")
    with _reader_waiting(path) as drained:
        assert cli.main(["train", "--iters", "5", option, path]
                        + (["--no-plot"] if option != "--plot" else [])) == 1
    assert drained == []
    out, err = capsys.readouterr()
    assert out == ""  # refused before training
    assert f"{option}: {path} is a FIFO (named pipe), not a regular file" in one_error_line(err)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def _damage(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "no end record":
        data = data[:-10]
    elif how == "flipped byte":  # in the first member's data: the CRC-32 no longer matches
        data[200] ^= 0xFF
    elif how == "empty":
        data = b""
    open(path, "wb").write(bytes(data))


DAMAGES = ["truncated", "no end record", "flipped byte", "empty"]


@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_file_is_a_value_error_naming_it(tmp_path, how, suffix):
    net = TwoLayerNet(12, 5, 3, rng=0)
    path = tmp_path / ("net" + suffix)
    net.save_params(path)  # (a .pkl name gets fastbp's format, as the book's scripts call it)
    _damage(path, how)
    other = TwoLayerNet(12, 5, 3, rng=1)
    before = {k: v.copy() for k, v in other.params.items()}
    with pytest.raises(ValueError, match="not a fastbp file|damaged|pickle data") as exc:
        other.load_params(path)
    assert str(path) in str(exc.value) or how == "empty"
    for k, v in other.params.items():
        np.testing.assert_array_equal(v, before[k])


# ---------------------------------------------------------------------- fastbp train --save

def test_batchnorm_run_reloads_with_the_reported_accuracy(sample, capsys):
    argv = ["train", "--net", "multi", "--hidden", "40,30", "--batchnorm", "--optimizer", "adam",
            "--iters", "120", "--seed", "4", "--no-plot", "--save", "bn.npz"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    reported = float(out.splitlines()[-1].split("test acc ")[1])
    (_, _), (xt, tt) = sample
    net = MultiLayerNetExtend(784, [40, 30], 10, use_batchnorm=True)
    net.load_params("bn.npz")
    assert net.accuracy(xt, tt) == pytest.approx(reported, abs=1e-4)
    assert reported > 0.8


def test_read_only_target_is_refused_before_training(capsys):
    with open("p.npz", "wb") as f:
        f.write(b"keep me")
    os.chmod("p.npz", 0o444)
    assert cli.main(["train", "--iters", "5", "--no-plot", "--save", "p.npz"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no training happened
    assert "--save: p.npz is read-only" in one_error_line(err)
    assert open("p.npz", "rb").read() == b"keep me"


def test_distributed_without_mpi4py_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert cli.main(["train", "--distributed", "--iters", "5"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "openmpi" in line and "mpi4py" in line


# ---------------------------------------------------------------------- checkpoints and --resume

RUN = ["train", "--optimizer", "adam", "--seed", "2", "--batch-size", "250", "--hidden", "20",
       "--no-plot"]


def test_resume_equals_a_straight_run(capsys):
    assert cli.main(RUN + ["--iters", "50", "--save", "straight.npz"]) == 0
    assert cli.main(RUN + ["--iters", "30", "--checkpoint", "ck.npz"]) == 0  # 1.5 epochs of 20
    with np.load("ck.npz", allow_pickle=False) as z:
        assert int(z["meta/iteration"]) == 20  # the last complete epoch
        assert {"opt/iter", "opt/m/W1", "opt/v/b2", "net/W1"} <= set(z.files)
        assert not any(k.startswith("opt/lr") for k in z.files)
    capsys.readouterr()
    assert cli.main(RUN + ["--iters", "50", "--checkpoint", "ck.npz", "--resume",
                           "--save", "resumed.npz"]) == 0
    out, err = capsys.readouterr()
    assert "resumed from ck.npz after 20 iterations" in err
    assert "epoch 1/" not in out and "epoch 2/3" in out
    with np.load("straight.npz") as a, np.load("resumed.npz") as b:
        for k in ("W1", "b1", "W2", "b2"):
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"opt/lr": np.array(0.0)}), "unexpected opt/lr"),
    (lambda a: a.update({"opt/update": np.array(1)}), "unexpected opt/update"),
    (lambda a: a.pop("opt/m/W1"), "no opt/m/W1"),
    (lambda a: a.update({"opt/iter": np.array(-3)}), "opt/iter is -3"),
    (lambda a: a.update({"opt/v/W2": np.full_like(a["opt/v/W2"], np.nan)}), "opt/v/W2 holds non-finite"),
    (lambda a: a.pop("meta/seed"), "no meta/seed"),
    (lambda a: a.update({"net/W1": a["net/W1"][:5]}), "net/W1 has shape"),
])
def test_a_bad_checkpoint_is_refused_naming_file_and_key(capsys, change, message):
    assert cli.main(RUN + ["--iters", "20", "--checkpoint", "ck.npz"]) == 0
    with np.load("ck.npz") as z:
        arrays = dict(z)
    change(arrays)
    np.savez("bad.npz", **arrays)
    capsys.readouterr()
    assert cli.main(RUN + ["--iters", "40", "--checkpoint", "bad.npz", "--resume"]) == 1
    out, err = capsys.readouterr()
    errors = [ln for ln in err.splitlines() if ln.startswith("fastbp: error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "bad.npz" in errors[0] and message in errors[0]
    assert "epoch 1/" not in out  # refused before any step


def test_a_checkpoint_of_another_run_is_refused(capsys):
    assert cli.main(RUN + ["--iters", "20", "--checkpoint", "ck.npz"]) == 0
    capsys.readouterr()
    assert cli.main(RUN + ["--iters", "40", "--checkpoint", "ck.npz", "--resume", "--seed", "3"]) == 1
    assert "seed=2, this run has seed=3" in capsys.readouterr().err


def test_checkpoint_of_an_optimizer_without_declared_state_is_refused(tmp_path):
    class Foreign:
        def update(self, params, grads):
            pass
    with pytest.raises(TypeError, match="does not declare its state"):
        checkpoints.save_checkpoint(tmp_path / "c.npz", TwoLayerNet(4, 3, 2), Foreign())


def test_a_checkpoint_of_another_optimizer_is_refused(capsys):
    assert cli.main(RUN + ["--iters", "20", "--checkpoint", "ck.npz"]) == 0
    capsys.readouterr()
    other = [a if a != "adam" else "momentum" for a in RUN]
    assert cli.main(other + ["--iters", "40", "--checkpoint", "ck.npz", "--resume"]) == 1
    assert "optimizer_name=adam, this run has optimizer_name=momentum" in capsys.readouterr().err


@pytest.mark.parametrize("how", DAMAGES[:3])
def test_resume_from_a_damaged_checkpoint_is_one_line(capsys, how):
    """A bare zipfile.BadZipFile ("Bad CRC-32") used to end the run with a traceback."""
    assert cli.main(RUN + ["--iters", "20", "--checkpoint", "ck.npz"]) == 0
    _damage("ck.npz", how)
    capsys.readouterr()
    assert cli.main(RUN + ["--iters", "40", "--checkpoint", "ck.npz", "--resume"]) == 1
    out, err = capsys.readouterr()
    errors = [ln for ln in err.splitlines() if ln.startswith("fastbp: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "ck.npz: not a fastbp file, or a damaged or truncated one" in errors[0]
    assert "epoch 1/" not in out
