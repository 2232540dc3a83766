"""The fastbp command: train, gradcheck, bench; errors as one line, never a traceback.

Most tests call ``fastbp.cli.main`` in-process (fast); a few run ``python -m fastbp``
in a subprocess to check the real entry point and exit statuses. The data is the
bundled sample: downloads are switched off and the cache is a temporary folder.
"""
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from _mnist import FULL_DIR

import fastbp
from fastbp import cli
from fastbp._plot import plot_hint
from fastbp.datasets import SAMPLE_DIR


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FASTBP_MNIST_MIRRORS", "")
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # the default plot lands here, not in the source tree


def run(*argv):
    return cli.main(list(argv))


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith(("fastbp: error:", "fastbp train: error:",
                                          "fastbp gradcheck: error:"))
    return lines[-1]


# ---------------------------------------------------------------------- help and usage

def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        run("--help")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("train", "gradcheck", "bench"):
        assert word in out


def test_train_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        run("train", "--help")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--iters", "--epochs", "--batch-size", "--lr", "--hidden", "--dtype", "--seed",
                "--backend", "--data-dir", "--save", "--plot", "--quiet", "--eval-samples",
                '".[plot]"', "~/.cache/fastbp/mnist"):
        assert opt in out


def test_gradcheck_help_is_its_own(capsys):
    """gradcheck has no --net multi and no batches: its help says what its options do."""
    with pytest.raises(SystemExit):
        run("gradcheck", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "hidden units of the TwoLayerNet checked (default: 50)" in out
    assert "seed for the initial weights (default: a random one, printed)" in out
    assert "--net multi" not in out and "batches" not in out
    with pytest.raises(SystemExit):
        run("train", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "--net multi (default: 100,100,100)" in out and "weights and the batches" in out


def test_options_are_never_abbreviated():
    parser = cli.build_parser()
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in parser.commands.values())


@pytest.mark.parametrize("argv, meant", [
    (["train", "--epoch", "1"], "--epochs"),
    (["train", "--epoch=1"], "--epochs"),
    (["train", "--iter", "5"], "--iters"),
    (["train", "--eval-sample", "5"], "--eval-samples"),
    (["gradcheck", "--bat", "2"], "--batch"),
    (["train", "--lr-rate", "0.1"], "--lr"),
])
def test_a_prefix_is_refused_with_the_option_meant(capsys, argv, meant):
    assert run(*argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"unrecognized arguments: {' '.join(argv[1:])} (did you mean {meant}?)" in line


def test_no_command_is_a_usage_error(capsys):
    assert run() == 2
    assert "see fastbp --help" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [
    ["train", "--iters", "0"],
    ["train", "--iters", "ten"],
    ["train", "--lr", "-0.1"],
    ["train", "--lr", "nan"],
    ["train", "--batch-size", "0"],
    ["train", "--dtype", "float16"],
    ["train", "--backend", "fortran"],
    ["train", "--iters", "5", "--epochs", "1"],
    ["train", "--seed", "-1"],
    ["train", "--bogus"],
    ["frobnicate"],
    ["gradcheck", "--batch", "0"],
    ["train", "--lr", "-1"],
    ["train", "--timeout", "-1", "--distributed"],
    ["train", "--hidden", "abc"],
    ["train", "--hidden", "100,100"],
    ["train", "--dropout", "0.5"],
    ["train", "--resume"],
    ["train", "--timeout", "5"],
    ["train", "--save", "x.npz", "--plot", "x.npz"],
    ["train", "--save", "fastbp-train.png"],
    ["train", "--checkpoint", "c.npz", "--save", "c.npz", "--no-plot"],
    ["train", "--epoch", "1"],
    ["train", "--eval-samples", "0"],
    ["train", "--eval-samples", "some"],
])
def test_bad_command_line_is_one_line_and_status_2(capsys, argv):
    assert run(*argv) == 2
    out, err = capsys.readouterr()
    assert out == ""  # refused before anything ran
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastbp: error: ")
    command = "fastbp" if argv[0] == "frobnicate" else f"fastbp {argv[0]}"
    assert lines[0].endswith(f"(see {command} --help)")


# ---------------------------------------------------------------------- train

def test_train_on_sample(tmp_path, capsys):
    out_file = tmp_path / "params"  # no .npz suffix: the name is kept as given
    assert run("train", "--iters", "60", "--seed", "1", "--save", str(out_file), "--no-plot") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("TwoLayerNet 784-50-10, sgd lr 0.1, float64")
    assert "60 iterations of batch 100 (2 epochs of 50)" in lines[0] and "seed 1" in lines[0]
    assert lines[1].startswith("epoch 1/2  loss ")
    assert lines[2].startswith("epoch 2/2 (10 it)  loss ")
    for ln in lines[1:3]:
        assert "train acc 0." in ln and "test acc 0." in ln and ln.endswith(" s")
    assert lines[3].startswith("done: 60 iterations in ")
    assert "bundled MNIST sample" in err and "saved the network" in err
    with np.load(out_file, allow_pickle=False) as params:
        assert sorted(params.files) == ["W1", "W2", "__format__", "__version__", "b1", "b2"]
        assert params["W1"].shape == (784, 50) and params["W1"].dtype == np.float64
        assert params["b2"].shape == (10,)
    net = fastbp.TwoLayerNet(784, 50, 10)
    net.load_params(out_file)
    (_, _), (xt, tt) = fastbp.load_mnist(data_dir=SAMPLE_DIR)
    reported = float(lines[3].split("test acc ")[1])
    assert net.accuracy(xt, tt) == pytest.approx(reported, abs=1e-4)


def test_train_options(capsys):
    argv = ["train", "--epochs", "1", "--batch-size", "250", "--lr", "0.5", "--hidden", "7",
            "--dtype", "float32", "--backend", "numpy", "--seed", "3", "--no-plot",
            "--data-dir", SAMPLE_DIR, "--save", "p.npz"]
    assert run(*argv) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("TwoLayerNet 784-7-10, sgd lr 0.5, float32, numpy backend; "
                                          "20 iterations of batch 250 (1 epoch of 20)")
    assert "given data directory" in err
    with np.load("p.npz", allow_pickle=False) as params:
        assert params["W1"].shape == (784, 7) and params["W1"].dtype == np.float32


def test_train_default_length_on_sample(capsys, monkeypatch):
    monkeypatch.setattr(cli, "SAMPLE_EPOCHS", 1)  # the logic, not a long run
    assert run("train", "--no-plot", "--seed", "0") == 0
    out, err = capsys.readouterr()
    assert "default run is 1 epoch (50 iterations)" in err
    assert "done: 50 iterations" in out
    assert run("train", "--no-plot", "--seed", "0", "--data-dir", SAMPLE_DIR) == 0
    assert "done: 50 iterations" in capsys.readouterr().out


def test_train_quiet(capsys):
    assert run("train", "--iters", "10", "-q", "--no-plot", "--save", "q.npz") == 0
    out, err = capsys.readouterr()
    assert out.startswith("done: 10 iterations in ")
    # the one line says which data: the bundled sample here
    assert " s on the bundled MNIST sample (5000 training images); train acc 0." in out
    assert len(out.splitlines()) == 1
    assert err == ""  # only the final line: no notes
    assert os.path.exists("q.npz")


def test_same_seed_same_result(capsys):
    run("train", "--iters", "20", "--seed", "5", "--no-plot", "--save", "a.npz")
    run("train", "--iters", "20", "--seed", "5", "--no-plot", "--save", "b.npz")
    with np.load("a.npz") as a, np.load("b.npz") as b:
        np.testing.assert_array_equal(a["W1"], b["W1"])


def test_plot_without_matplotlib_says_how(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert run("train", "--iters", "5") == 0
    err = capsys.readouterr().err
    assert f"no plot: matplotlib is not installed; {plot_hint()} to get fastbp-train.png" in err
    assert not os.path.exists(cli.DEFAULT_PLOT)


def test_plot_hint_names_the_source_tree(tmp_path, monkeypatch):
    """From a source tree the extra is ".[plot]" (an index may not have fastbp)."""
    import fastbp._plot as plot
    tree = tmp_path / "fastbp-src"
    tree.mkdir()
    (tree / "pyproject.toml").write_text('[project]\nname = "fastbp"\n')
    monkeypatch.setattr(plot, "__file__", str(tree / "src" / "fastbp" / "_plot.py"))
    monkeypatch.chdir(tree)
    assert plot.plot_hint() == 'pip install ".[plot]"'
    monkeypatch.chdir(tmp_path)
    assert plot.plot_hint() == f'pip install "{tree}[plot]"'
    monkeypatch.setattr(plot, "__file__", str(tmp_path / "site-packages" / "fastbp" / "_plot.py"))
    assert plot.plot_hint() == 'pip install "fastbp[plot]" (from a source tree: pip install ".[plot]")'
    monkeypatch.chdir(tree)  # an installed fastbp, run in its source folder
    assert plot.plot_hint() == 'pip install ".[plot]"'


def _png_title(path):
    """The Title text chunk of a PNG."""
    import struct
    import zlib
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        if kind == b"tEXt" and body.startswith(b"Title\0"):
            return body[6:].decode("latin-1")
        if kind == b"zTXt" and body.startswith(b"Title\0"):
            return zlib.decompress(body[7:]).decode("latin-1")
        if kind == b"iTXt" and body.startswith(b"Title\0"):
            return body.split(b"\0", 5)[-1].decode("utf-8")
        pos += 12 + size
    return None


def test_plot_is_written_with_a_title(tmp_path, capsys):
    """Two pictures can be told apart: network, data, seed and final accuracy."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed (the plot extra)")
    assert run("train", "--iters", "60", "--seed", "4", "--plot", "curves.png") == 0
    out, err = capsys.readouterr()
    assert "curves.png" in err
    test_acc = out.split("test acc ")[-1].strip()
    assert _png_title(tmp_path / "curves.png") == (
        "TwoLayerNet 784-50-10 on the bundled MNIST sample (5000 training images), seed 4 "
        f"final test accuracy {test_acc} after 60 iterations")


def test_plot_axes_fit_the_accuracies():
    pytest.importorskip("matplotlib", reason="matplotlib not installed (the plot extra)")
    from fastbp._plot import accuracy_limits, curves_figure
    from fastbp.loop import EpochRecord, History
    history = History(loss=list(np.linspace(2.3, 0.3, 400)), epochs=[
        EpochRecord(e, 100 * e, 100, 0.5, train, test, 1.0)
        for e, (train, test) in enumerate([(0.90, 0.91), (0.93, 0.92), (0.94, 0.935)], 1)])
    fig = curves_figure(history, title="a title")
    ax_loss, ax_acc = fig.axes
    low, high = ax_acc.get_ylim()
    assert 0.88 < low < 0.90 and 0.94 < high < 0.96  # not 0 to 1: 0.90 and 0.94 apart
    labels = ax_loss.get_legend_handles_labels()[1]
    assert labels == ["each batch", "average of 20 consecutive batches"]
    assert fig.get_suptitle() == "a title"
    assert accuracy_limits([0.5, 0.5]) == pytest.approx((0.488, 0.512))  # at least 0.02 tall
    assert accuracy_limits([0.995, 1.0])[1] == pytest.approx(1.001)  # room for a point at 1
    assert accuracy_limits([0.0, 1.0]) == (0.0, pytest.approx(1.05))
    assert accuracy_limits([None]) == (0.0, 1.0)


def test_train_chapter6_network(capsys):
    argv = ["train", "--net", "multi", "--hidden", "30,20", "--optimizer", "adam", "--batchnorm",
            "--dropout", "0.1", "--weight-decay", "0.001", "--iters", "30", "--seed", "1",
            "--no-plot", "--save", "m.npz"]
    assert run(*argv) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].startswith("MultiLayerNetExtend 784-30-20-10, adam lr 0.001, float64")
    with np.load("m.npz", allow_pickle=False) as params:
        assert {"W1", "W2", "W3", "gamma1", "beta2"} <= set(params.files)
        assert params["W2"].shape == (30, 20)


def test_train_optimizer_keeps_learning(capsys):
    assert run("train", "--optimizer", "momentum", "--iters", "100", "--seed", "2", "--no-plot") == 0
    out = capsys.readouterr().out
    assert "momentum lr 0.01" in out.splitlines()[0]
    assert float(out.split("test acc ")[-1].split()[0]) > 0.5


@pytest.mark.parametrize("argv, message", [
    (["train", "--data-dir", "no/such/dir"], "no such directory"),
    (["train", "--data-dir", "."], "no MNIST file"),
    (["train", "--save", "no/such/dir/p.npz"], "--save: no such directory"),
    (["train", "--plot", "no/such/dir/p.png"], "--plot: no such directory"),
    (["train", "--save", "."], "is a directory"),
    (["gradcheck", "--data-dir", "no/such/dir"], "no such directory"),
])
def test_errors_are_one_line(capsys, argv, message):  # status 1: not the command line
    assert run(*argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert message in line


@pytest.mark.parametrize("argv, message", [
    (["train", "--dropout", "0.5"], "--dropout needs --net multi"),
    (["train", "--batchnorm", "--weight-decay", "1"], "--batchnorm, --weight-decay need --net multi"),
    (["train", "--hidden", "10,10"], "TwoLayerNet has one hidden layer"),
    (["gradcheck", "--hidden", "10,10"], "TwoLayerNet has one hidden layer"),
    (["train", "--save", "x.png", "--plot", "x.png"], "--save and --plot name the same file x.png"),
    (["train", "--save", "fastbp-train.png"], "the default plot"),
])
def test_usage_errors_say_why(capsys, argv, message):
    assert run(*argv) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_corrupt_data_is_one_line(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    for name in os.listdir(SAMPLE_DIR):
        (d / name).write_bytes(open(os.path.join(SAMPLE_DIR, name), "rb").read())
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    assert run("train", "--data-dir", str(d)) == 1
    assert "t10k-images-idx3-ubyte.gz: not an IDX file" in one_error_line(capsys.readouterr().err)


def test_missing_backend_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(fastbp.kernels, "_cython", None)  # as if it were not compiled
    monkeypatch.setattr(fastbp.kernels, "_cython_error", ImportError("not built"))
    assert run("train", "--backend", "cython", "--iters", "1") == 1
    assert "compiled kernels are not available" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------- gradcheck

def test_gradcheck(capsys):
    assert run("gradcheck", "--hidden", "5", "--seed", "0") == 0
    out = capsys.readouterr().out
    backends = ["numpy"] + (["cython"] if fastbp.HAVE_CYTHON else [])
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert sorted(rows) == sorted(backends)
    for row in rows.values():
        diffs = dict(cell.split(":") for cell in row.split()[1:5])
        assert sorted(diffs) == ["W1", "W2", "b1", "b2"]
        assert all(float(v) < 1e-6 for v in diffs.values())
    assert out.splitlines()[-1].startswith("ok: largest difference")


def test_gradcheck_float32_one_backend(capsys):
    assert run("gradcheck", "--backend", "numpy", "--hidden", "4", "--dtype", "float32",
               "--batch", "2", "--seed", "1") == 0
    out = capsys.readouterr().out
    assert "float32, 2 training images" in out and "  numpy " in out and "  cython" not in out


def test_gradcheck_reports_failure(capsys, monkeypatch):
    monkeypatch.setitem(cli.TOLERANCE, "float64", 0.0)
    assert run("gradcheck", "--backend", "numpy", "--hidden", "3", "--seed", "0") == 1
    assert "FAILED" in capsys.readouterr().out


# ---------------------------------------------------------------------- bench

def test_bench_parses_its_options_and_runs(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("fastbp.bench")
    fake.select = lambda quick, dtypes, only: [("a case", None)]
    fake.run = lambda **kw: seen.append(kw) or {"results": []}
    monkeypatch.setitem(sys.modules, "fastbp.bench", fake)
    monkeypatch.setattr(fastbp, "bench", fake, raising=False)
    assert run("bench", "--quick", "--only", "relu", "--dtype", "float32") == 0
    assert seen == [dict(quick=True, dtypes=("float32",), only=["relu"], threads=None,
                         budget=None, repeats=None, json_path=None)]
    with pytest.raises(SystemExit) as exc:
        run("bench", "--help")
    assert exc.value.code == 0 and "--quick" in capsys.readouterr().out


# ---------------------------------------------------------------------- the real entry point

def _python_m(*args, cwd):
    # The fixtures' variables, and PYTHONPATH led by the folder of the fastbp under test
    # (a relative PYTHONPATH=src would not survive the change of directory).
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-m", "fastbp", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_python_m_fastbp(tmp_path):
    r = _python_m("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"fastbp {fastbp.__version__}"
    r = _python_m("train", "--iters", "5", "--no-plot", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("done: 5 iterations") and "\r" not in r.stderr  # no bar off a TTY


@pytest.mark.parametrize("argv, code", [
    (["train", "--lr", "x"], 2),
    (["train", "--data-dir", "missing"], 1),
])
def test_python_m_errors(tmp_path, argv, code):
    r = _python_m(*argv, cwd=tmp_path)
    assert r.returncode == code
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(("fastbp: error:", "fastbp train: error:"))


def test_default_plot_failure_is_a_note(capsys, monkeypatch):
    def cannot_write(history, path, **titles):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(cli, "_plot", cannot_write)
    assert run("train", "--iters", "5") == 0  # the default plot is best effort
    assert "no plot: cannot write fastbp-train.png (Permission denied)" in capsys.readouterr().err
    assert run("train", "--iters", "5", "--plot", "x.png") == 1  # asked for by name: an error
    assert "Permission denied" in one_error_line(capsys.readouterr().err)


def test_progress_bar(capsys):
    import io
    from fastbp._progress import ProgressBar

    stream = io.StringIO()
    with ProgressBar(200, label="train", stream=stream, enabled=True) as bar:
        for _ in range(200):
            bar.update()
        bar.write("epoch line")
    text = stream.getvalue()
    assert text.startswith("\rtrain [") and "100% 200/200" in text
    assert text.endswith("\r")  # cleared at the end: the terminal is left clean
    assert capsys.readouterr().out == "epoch line\n"
    quiet = io.StringIO()  # not a terminal: nothing drawn
    with ProgressBar(10, stream=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
    assert ProgressBar(None, unit="B", stream=quiet, enabled=True)._render().startswith("0 B ")


@pytest.mark.mnist
@pytest.mark.skipif(not FULL_DIR, reason="full MNIST not available (set FASTBP_DATA)")
def test_full_set(capsys):
    full = FULL_DIR
    assert run("train", "--data-dir", full, "--iters", "30", "--seed", "0", "--no-plot") == 0
    out, err = capsys.readouterr()
    assert "30 iterations of batch 100 (1 epoch of 600)" in out and "epoch 1/1 (30 it)" in out
    assert " s on the full MNIST; train acc " in out
    assert "sample" not in err and "given data directory" in err
    assert run("gradcheck", "--data-dir", full, "--hidden", "4", "--backend", "numpy", "--seed", "0") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok:")


def test_a_network_choice_is_one_entry(capsys, monkeypatch):
    class FlatNet(fastbp.TwoLayerNet):  # takes images, as the convolutional networks do
        def predict(self, x):
            return super().predict(x.reshape(x.shape[0], -1))

    def build(args, n_in, n_out, rng):
        assert n_in is None  # images: no flat input size
        return FlatNet(784, 8, n_out, rng=rng), "FlatNet 1x28x28-8-10"

    monkeypatch.setitem(cli.NETWORKS, "flat", cli.Network(
        "FlatNet", "a test network", build, hidden_layers=0, images=True, optimizer="adam",
        lr=0.005, epochs=1))
    assert run("train", "--net", "flat", "--no-plot", "--seed", "0", "--data-dir", SAMPLE_DIR,
               "--iters", "20") == 0
    out = capsys.readouterr().out
    assert out.startswith("FlatNet 1x28x28-8-10, adam lr 0.005, float64")
    assert run("train", "--net", "flat", "--hidden", "5") == 2
    assert "FlatNet has 0 hidden layers" in capsys.readouterr().err


def test_threads_option_sets_fastbps_threads(tmp_path, monkeypatch):
    """--threads governs fastbp's kernels and matrix products."""
    import fastbp
    from fastbp import cli
    monkeypatch.chdir(tmp_path)
    before = fastbp.get_num_threads()
    try:
        assert cli.main(["train", "--iters", "2", "--threads", "1", "--no-plot", "--quiet"]) in (0, None)
        assert fastbp.get_num_threads() == (1 if fastbp.HAVE_CYTHON else before)
    finally:
        fastbp.set_num_threads(before)


def test_the_docs_name_every_option():
    """docs/cli.md documents every option of train and gradcheck, the README every
    option of train: the docs match the command."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        docs = open(os.path.join(root, "docs", "cli.md"), encoding="utf-8").read()
        readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    except OSError:
        pytest.skip("not a source tree: no docs/cli.md or README.md")
    commands = cli.build_parser().commands
    for name, text in (("train", docs), ("gradcheck", docs), ("train", readme)):
        options = {o for o in commands[name]._option_string_actions
                   if o.startswith("--") and o != "--help"}
        missing = sorted(o for o in options if not re.search(rf"[`\s]{o}(?![\w-])", text))
        assert not missing, (name, missing)
