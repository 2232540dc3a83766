"""The backend switch, and the twin rule: same names and signatures on both backends."""
import inspect
import os
import subprocess
import sys
import threading

import pytest

import fastbp
from fastbp import kernels
from fastbp.kernels import _numpy
from fastbp.kernels._checks import KERNELS

needs_cython = pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")


@needs_cython
def test_same_kernels_and_signatures():
    """The twin rule, for every kernel at once (the one parity test): both modules
    export exactly ``_checks.KERNELS``, each with the same signature, documented."""
    assert _numpy.__all__ == kernels._cython.__all__ == list(KERNELS)
    for name in KERNELS:
        py, cy = getattr(_numpy, name), getattr(kernels._cython, name)
        assert str(inspect.signature(py)) == str(inspect.signature(cy)), name
        assert py.__doc__ and cy.__doc__, f"{name} has no docstring"
    # nothing else public in the reference module that a twin could miss
    public = {n for n, v in vars(_numpy).items() if callable(v) and not n.startswith("_")
              and getattr(v, "__module__", None) == _numpy.__name__}
    assert public == set(KERNELS)


def _stub_signatures():
    """name -> (parameter names, which have defaults) of every function in the compiled
    module's type stub (kernels/_cython.pyi)."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(_numpy.__file__).with_name("_cython.pyi").read_text())
    table = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            first_default = len(args) - len(node.args.defaults)
            table[node.name] = tuple((a.arg, i >= first_default) for i, a in enumerate(args))
    return table


def test_type_stub_lists_every_kernel_with_its_signature():
    """The .pyi is checked against the reference: every kernel of ``_checks.KERNELS``
    is in it with the NumPy twin's parameter names, in order, with defaults where the
    twin has them (a kernel added without its stub fails here)."""
    stubs = _stub_signatures()
    for name in KERNELS:
        assert name in stubs, f"kernels/_cython.pyi has no stub for {name}"
        params = inspect.signature(getattr(_numpy, name)).parameters.values()
        expected = tuple((p.name, p.default is not p.empty) for p in params)
        assert stubs[name] == expected, name
    extra = set(stubs) - set(KERNELS) - {"get_num_threads", "set_num_threads"}
    assert not extra, f"stubs for functions the compiled module does not have: {extra}"


@needs_cython
def test_compiled_is_the_default():
    if os.environ.get("FASTBP_BACKEND"):
        pytest.skip("FASTBP_BACKEND is set")
    assert fastbp.get_backend() == "cython"


def test_switching():
    start = fastbp.get_backend()
    with fastbp.use_backend("numpy") as module:
        assert module is _numpy
        assert fastbp.get_backend() == "numpy"
    assert fastbp.get_backend() == start
    fastbp.set_backend("numpy")
    try:
        assert kernels.active() is _numpy
    finally:
        fastbp.set_backend(start)


def test_use_backend_restores_on_error():
    start = fastbp.get_backend()
    with pytest.raises(ZeroDivisionError):
        with fastbp.use_backend("numpy"):
            1 / 0
    assert fastbp.get_backend() == start


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend: expected one of \('cython', 'numpy'\), got 'fortran'"):
        fastbp.set_backend("fortran")


def test_missing_compiled_module_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "_cython", None)
    monkeypatch.setattr(kernels, "_cython_error", ImportError("no module"))
    with pytest.raises(RuntimeError, match="compiled kernels are not available"):
        fastbp.set_backend("cython")


def _run(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True)


def test_environment_variable_chooses_at_import():
    r = _run("import fastbp; print(fastbp.get_backend())", FASTBP_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "numpy"
    r = _run("import fastbp", FASTBP_BACKEND="fortran")
    assert r.returncode != 0 and "backend: expected one of" in r.stderr


def test_without_the_compiled_module_fastbp_runs_on_numpy():
    """Hide the extension from the import system: fastbp still imports and trains."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'fastbp.kernels._cython': raise ImportError('hidden')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np, fastbp\n"
        "assert fastbp.get_backend() == 'numpy' and not fastbp.HAVE_CYTHON\n"
        "net = fastbp.TwoLayerNet(4, 3, 2, rng=0)\n"
        "net.gradient(np.ones((2, 4)), np.array([0, 1]))\n"
        "try:\n"
        "    fastbp.set_backend('cython')\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert "refused: fastbp's compiled kernels are not available" in r.stdout


# ------------------------------------------------------------------ the backend per context

def _in_thread(target):
    """Run ``target`` in a new thread; re-raise what it raised."""
    errors = []

    def run():
        try:
            target()
        except BaseException as exc:  # reported in the calling thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


@needs_cython
@pytest.mark.parametrize("first_out", ["A", "B"])
def test_use_backend_in_two_threads_changes_only_its_own(first_out):
    """A enters use_backend('numpy'), B enters use_backend('cython'); both read the
    backend while both blocks are open, then one leaves and the other reads again
    before leaving. Each sees only its own choice all along, and the process ends on
    the backend it started with (with one process-wide choice, B's exit restores the
    'numpy' that A had set, or A's exit undoes B's)."""
    start = fastbp.get_backend()
    both_inside = threading.Barrier(2, timeout=10)
    first_left = threading.Event()
    inside = {"A": "numpy", "B": "cython"}
    seen = {"A": [], "B": []}

    def worker(me):
        def body():
            with fastbp.use_backend(inside[me]):
                both_inside.wait()
                seen[me].append(fastbp.get_backend())
                both_inside.wait()  # both have read before either leaves
                if me != first_out:
                    assert first_left.wait(10)
                    seen[me].append(fastbp.get_backend())
            seen[me].append(fastbp.get_backend())
            if me == first_out:
                first_left.set()
        return body

    ta, ea = _in_thread(worker("A"))
    tb, eb = _in_thread(worker("B"))
    ta.join(20)
    tb.join(20)
    assert not ea and not eb, ea + eb
    for me in ("A", "B"):
        again = [] if me == first_out else [inside[me]]
        assert seen[me] == [inside[me]] + again + [start], me
    assert fastbp.get_backend() == start
    assert kernels.active() is (kernels._cython if start == "cython" else _numpy)


@needs_cython
def test_set_backend_is_the_default_of_contexts_outside_blocks():
    start = fastbp.get_backend()
    other = "numpy" if start == "cython" else "cython"
    inside, ready, switched = [], threading.Event(), threading.Event()

    def in_block():
        with fastbp.use_backend(start):
            ready.set()
            assert switched.wait(10)
            inside.append(fastbp.get_backend())  # its block's choice, not the new default
        inside.append(fastbp.get_backend())      # out of the block: the new default

    thread, errors = _in_thread(in_block)
    try:
        assert ready.wait(10)
        fastbp.set_backend(other)
        assert fastbp.get_backend() == other
        fresh = []
        t2, e2 = _in_thread(lambda: fresh.append(fastbp.get_backend()))
        t2.join(10)
        assert fresh == [other] and not e2  # a new thread starts on the default
        switched.set()
        thread.join(10)
        assert not errors, errors
        assert inside == [start, other]
        # inside a block, set_backend takes effect at once; the block's exit restores
        with fastbp.use_backend(start):
            fastbp.set_backend(start)
            assert fastbp.get_backend() == start
            fastbp.set_backend(other)
            assert fastbp.get_backend() == other
        assert fastbp.get_backend() == other
    finally:
        switched.set()
        fastbp.set_backend(start)
    assert fastbp.get_backend() == start


@needs_cython
def test_active_kernels_follow_the_context():
    """``active()`` (what every layer calls) gives each thread its block's kernels while
    three blocks are open at once."""
    calls = []
    all_inside = threading.Barrier(3, timeout=10)

    def run(name):
        def body():
            with fastbp.use_backend(name):
                all_inside.wait()
                calls.append((name, kernels.active().__name__))
                all_inside.wait()  # nobody leaves before all have run
        return body

    threads = [_in_thread(run(name)) for name in ("numpy", "cython", "numpy")]
    for thread, errors in threads:
        thread.join(10)
        assert not errors, errors
    assert sorted(calls) == [("cython", "fastbp.kernels._cython"),
                             ("numpy", "fastbp.kernels._numpy"), ("numpy", "fastbp.kernels._numpy")]
