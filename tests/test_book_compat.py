"""The book's scripts on fastbp: ``fastbp.book`` and ``python -m fastbp.book``.

Each script in tests/book_reference/scripts and tests/book_reference/chapter is written
the way the book's are (run from its folder, ``sys.path.append(os.pardir)``, star
imports, ``np`` from them, float parameters, the Trainer's output). It runs twice, in
child processes, on the bundled MNIST sample: as it is, where ``common`` and ``dataset``
are the reference of the book's behaviour in tests/book_reference (plain NumPy, no
fastbp), and through ``python -m fastbp.book``. Both must print the same lines, to the
last digit, except the losses: fastbp's ``SoftmaxWithLoss`` computes the exact loss, the
book's adds 1e-7 inside the log (the README's table), which moves a loss of about 2 by
about 1e-6.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

import fastbp
from fastbp.datasets.mnist import SAMPLE_DIR

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "book_reference")
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
BACKENDS = ["numpy"] + (["cython"] if fastbp.HAVE_CYTHON else [])

SCRIPTS = [
    ("scripts/optimizers_floats.py", []),
    ("scripts/functions_gradient.py", []),
    ("scripts/dropout_trainer.py", []),
    ("scripts/trainer_schedule.py", []),
    ("scripts/mnist_flags.py", []),
    ("chapter/train_small.py", ["4"]),
]

LOSS_TOLERANCE = 1e-5  # what 1e-7 inside the log can move these losses by
NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTBP_DATA", "FASTBP_MNIST_DIR", "FASTBP_BACKEND", "PYTHONPATH")}
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _check(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def run_reference(script, args):
    """The script as the book runs it: from its folder, on the reference modules."""
    path = os.path.join(REFERENCE, script)
    return _check(subprocess.run(
        [sys.executable, os.path.basename(path), *args], cwd=os.path.dirname(path),
        env=_env(BOOK_REFERENCE_MNIST_DIR=SAMPLE_DIR), capture_output=True, text=True,
        timeout=300))


def run_fastbp(script, args, backend, cwd, command=("-m", "fastbp.book")):
    """The same script through ``python -m fastbp.book``, started from elsewhere, offline
    (no download: the bundled sample)."""
    path = os.path.join(REFERENCE, script)
    return _check(subprocess.run(
        [sys.executable, *command, path, *args], cwd=cwd,
        env=_env(PYTHONPATH=SRC, FASTBP_BACKEND=backend, FASTBP_MNIST_MIRRORS="",
                 XDG_CACHE_HOME=str(cwd)),
        capture_output=True, text=True, timeout=300))


def assert_same_output(book, ours):
    assert len(book) == len(ours), (book, ours)
    for b, o in zip(book, ours):
        if b == o:
            continue
        assert "loss" in b, f"the book's line {b!r}, fastbp's {o!r}"
        assert NUMBER.split(b) == NUMBER.split(o), (b, o)  # the same text around the numbers
        for x, y in zip(NUMBER.findall(b), NUMBER.findall(o)):
            assert abs(float(x) - float(y)) <= LOSS_TOLERANCE, (b, o)


_reference_cache = {}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("script,args", SCRIPTS, ids=[s for s, _ in SCRIPTS])
def test_book_style_scripts_print_the_books_lines(script, args, backend, tmp_path):
    key = (script, tuple(args))
    if key not in _reference_cache:
        _reference_cache[key] = run_reference(script, args)
    book = _reference_cache[key]
    ours = run_fastbp(script, args, backend, tmp_path)
    assert_same_output(book, ours)
    assert any(line.strip() for line in ours)


def test_trainer_lines_are_the_books():
    """The reference prints what the book's Trainer prints; pin the wording too."""
    lines = run_reference("scripts/trainer_schedule.py", [])
    assert lines[0].startswith("train loss:")
    assert sum(line.startswith("train loss:") for line in lines) == 10  # int(4 * 2.5) steps
    assert [l for l in lines if l.startswith("===")][0].startswith("=== epoch:1, train acc:")
    assert "=============== Final Test Accuracy ===============" in lines


def test_fastbp_book_subcommand_runs_a_script(tmp_path):
    ours = run_fastbp("chapter/train_small.py", ["4"], "numpy", tmp_path,
                      command=("-m", "fastbp", "book"))
    assert ours[0] == "cwd chapter args ['4']"  # run from its folder, with its arguments
    assert_same_output(run_reference("chapter/train_small.py", ["4"]), ours)


def run_reference_seeded(script, seed):
    """The script as the book runs it, with ``np.random.seed(seed)`` first (what a
    reader would add at its top)."""
    path = os.path.join(REFERENCE, script)
    code = ("import runpy, sys, numpy; numpy.random.seed(int(sys.argv[1])); "
            "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    return _check(subprocess.run(
        [sys.executable, "-c", code, str(seed), os.path.basename(path)], cwd=os.path.dirname(path),
        env=_env(BOOK_REFERENCE_MNIST_DIR=SAMPLE_DIR), capture_output=True, text=True,
        timeout=300))


@pytest.mark.parametrize("command", [("-m", "fastbp.book"), ("-m", "fastbp", "book")])
def test_seed_seeds_numpys_global_state_as_the_script_sees_it(command, tmp_path):
    """--seed N before the script is np.random.seed(N) at its top: the same weights,
    batches and dropout masks as the book's code seeded so (that script does not seed
    itself, as most of the book's do not)."""
    book = run_reference_seeded("scripts/unseeded.py", 5)
    ours = run_fastbp("scripts/unseeded.py", [], "numpy", tmp_path, command=(*command, "--seed", "5"))
    assert_same_output(book, ours)
    other = run_fastbp("scripts/unseeded.py", [], "numpy", tmp_path, command=(*command, "--seed=6"))
    assert other[-2] != ours[-2]  # another seed, other weights: the seed reaches the script


def test_seed_is_fastbps_only_before_the_script(tmp_path):
    script = _book_tree(tmp_path, """
        import sys
        import numpy as np
        print(sys.argv[1:], np.random.randint(1000))
    """)
    import numpy as np
    np.random.seed(11)
    want = np.random.randint(1000)
    proc = _run_module("--seed", "11", script, "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == f"['--seed', '3'] {want}"
    for bad in ("-1", "x", str(2**32)):
        proc = _run_module("--seed", bad, script)
        assert proc.returncode == 2 and "--seed: expected an integer from 0 to 2**32 - 1" in proc.stderr
    proc = _run_module("--see", "3", script)  # no abbreviations
    assert proc.returncode == 2 and "unrecognized arguments: --see" in proc.stderr


def _book_tree(tmp_path, code):
    """A repository like the book's: its own common/ and dataset/, a chapter folder."""
    for pkg in ("common", "dataset"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("WHO = 'the book'\n")
    (tmp_path / "common" / "layers.py").write_text("WHO = 'the book'\n")
    (tmp_path / "ch01").mkdir()
    script = tmp_path / "ch01" / "script.py"
    script.write_text(textwrap.dedent(code))
    return script


def _run_module(*args):
    """``python -m fastbp.book ARGS`` from the folder above the book tree's root (the
    first path among ``args`` is the script)."""
    script = next(a for a in args if not isinstance(a, str))
    return subprocess.run([sys.executable, "-m", "fastbp.book", *map(str, args)],
                          cwd=str(script.parent.parent.parent), env=_env(PYTHONPATH=SRC),
                          capture_output=True, text=True, timeout=120)


def test_the_hook_wins_over_the_repositorys_modules_and_maps_only_its_names(tmp_path):
    script = _book_tree(tmp_path, """
        import os, sys
        sys.path.append(os.pardir)
        import common, common.layers, dataset.mnist
        import fastbp.book.common.layers
        from common.layers import *
        print(common.layers is fastbp.book.common.layers, Relu.__module__, hasattr(common, "WHO"))
        print(dataset.mnist.__name__, sys.argv[1:], os.path.basename(os.getcwd()))
        import importlib.util
        print(importlib.util.find_spec("commons") is None)
        try:
            import common.nothing
        except ModuleNotFoundError as exc:
            print("missing:", exc.name)
    """)
    proc = _run_module(script, "--lr", "0.1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "True fastbp.layers False",
        "fastbp.book.dataset.mnist ['--lr', '0.1'] ch01",
        "True",
        "missing: common.nothing",
    ]


def test_a_failing_script_fails_the_command(tmp_path):
    script = _book_tree(tmp_path, "raise SystemExit(3)\n")
    assert _run_module(script).returncode == 3
    proc = _run_module(tmp_path / "nothere.py")
    assert proc.returncode == 2 and "no such file" in proc.stderr


# The book's modules and what ``from <module> import *`` brings from them (names the
# book's scripts use; chapter 7's convolution names come with fastbp's convolution).
STAR_EXPORTS = {
    "common.functions": {"np", "identity_function", "step_function", "sigmoid", "sigmoid_grad",
                         "relu", "relu_grad", "softmax", "sum_squared_error",
                         "cross_entropy_error", "softmax_loss"},
    "common.layers": {"np", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout",
                      "BatchNormalization", "Convolution", "Pooling", "im2col", "col2im",
                      "softmax", "cross_entropy_error", "sigmoid"},
    "common.gradient": {"np", "numerical_gradient", "numerical_gradient_2d"},
    "common.util": {"np", "im2col", "col2im", "conv_output_size", "shuffle_dataset",
                    "smooth_curve"},
    "common.optimizer": {"np", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"},
    "common.multi_layer_net": {"np", "MultiLayerNet", "numerical_gradient", "Affine",
                               "OrderedDict"},
    "common.multi_layer_net_extend": {"np", "MultiLayerNetExtend", "Dropout",
                                      "BatchNormalization", "numerical_gradient"},
    "common.trainer": {"np", "Trainer", "SGD", "Adam"},
    "dataset.mnist": {"load_mnist"},
}


@pytest.mark.parametrize("module", sorted(STAR_EXPORTS))
def test_star_exports(module):
    namespace = {}
    exec(f"from fastbp.book.{module} import *", namespace)
    missing = STAR_EXPORTS[module] - set(namespace)
    assert not missing
