"""``fastbp bench`` runs and prints its tables; the benchmark cases check what they time.

Tiny options only: a few cases, a budget of milliseconds. The figures themselves are
not asserted (a shared machine makes them noisy); their presence and shape are.
"""
import json
import time

import numpy as np
import pytest

import fastbp
from fastbp.bench import cases, main

BACKENDS = ["numpy"] + (["cython"] if fastbp.HAVE_CYTHON else [])
TINY = ["--quick", "--budget", "0.005", "--repeats", "2", "--no-torch", "--threads", "1"]


def test_bench_prints_tables_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(TINY + ["--dtype", "float64", "--only", "relu_forward 100x784",
                      "--only", "step 784-50-10", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "book/cython" in text and "book/numpy" in text
    assert "relu_forward 100x784 float64" in text
    assert "step 784-50-10 b100 float64" in text
    assert "Targets (issue 3)" in text
    report = json.loads(out.read_text())
    ids = [r["id"] for r in report["results"]]
    assert ids == ["relu_forward 100x784 float64", "step 784-50-10 b100 float64"]
    step = report["results"][1]
    assert {"book", "numpy", "floor"} <= set(step["times"])
    assert all(t > 0 for t in step["times"].values())
    assert step["ratios"]["book/numpy"] > 0
    assert report["machine"]["numpy"] == np.__version__
    assert "OPENBLAS_CORETYPE" in report["machine"]["env"]
    alloc = report["allocation"]
    assert [a["contender"] for a in alloc] == ["book"] + (["cython"] if fastbp.HAVE_CYTHON else [])
    assert all(a["step"]["peak_bytes"] >= 0 and a["gradient"]["in_params"] >= 0 for a in alloc)
    assert alloc[0]["step"]["in_params"] >= 1.0   # the book allocates lr * grad: W1-sized


def test_bench_profile(capsys):
    assert main(TINY + ["--dtype", "float32", "--only", "step 784-50-10", "--profile",
                        "--no-alloc"]) == 0
    text = capsys.readouterr().out
    assert "Profile of step 784-50-10 b100 float32" in text
    assert "Affine1.backward" in text and "SGD update" in text


def test_bench_refuses_bad_options(capsys):
    assert main(["--threads", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--dtype", "float16"])


@pytest.mark.parametrize("kernel,shape", [
    ("relu_backward", (7, 5)), ("sigmoid_forward", (7, 5)),
    ("softmax_ce_labels", (7, 5)), ("softmax_ce_onehot", (7, 5)),
    ("affine_backward", (7, 5, 3)),
])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernel_cases_agree_with_the_book(kernel, shape, dtype):
    case = cases.kernel_case(kernel, shape, dtype)
    assert list(case.contenders)[:2] == ["book", "numpy"]
    for name in case.contenders:
        case.check(name)


def test_check_catches_a_wrong_contender():
    case = cases.kernel_case("relu_forward", (7, 5), "float64")
    c = case.contenders["numpy"]
    good = c.fn
    c.fn = lambda x: good(x) * 1.01 + 1.0
    with pytest.raises(AssertionError, match="differs from the book"):
        case.check("numpy")


def test_book_relu_backward_writes_into_dout_so_cases_hand_out_copies():
    case = cases.kernel_case("relu_backward", (7, 5), "float64")
    assert case.fresh
    c = case.contenders["book"]
    a, b = c.setup()[0], c.setup()[0]
    assert a is not b and np.array_equal(a, b)
    c.fn(a)
    assert np.array_equal(c.setup()[0], b)   # the case's own dout was not touched


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_case_matches_the_book_after_one_step(backend):
    case = cases.step_case("784-50-10", "float64", contenders=("book", backend, "floor"))
    case.check(backend)
    case.check("floor")
    step, params = case.build(backend)
    before = {k: v.copy() for k, v in params(step()).items()}
    after = params(step())
    assert all(not np.array_equal(before[k], after[k]) for k in before)


def test_floor_and_torch_contenders():
    case = cases.step_case("784-50-10", "float32", contenders=("book", "floor", "torch"))
    if not cases.have_torch():
        assert "torch" in case.skipped
        pytest.skip("PyTorch is not installed")
    case.check("torch")


@pytest.mark.skipif(not fastbp.HAVE_CYTHON, reason="the compiled kernels are not built")
def test_floor_with_update_writes_copies_of_the_weights():
    """floor+sgd computes the floor's products and updates its own copies of the
    weights: the case's arrays are never written."""
    case = cases.step_case("784-50-10", "float64", contenders=("book", "floor", "floor+sgd"))
    case.check("floor+sgd")
    sizes = (784, 50, 10)
    init, x, _ = cases._step_data(sizes, 100, np.float64)
    kept = {k: v.copy() for k, v in init.items()}
    with fastbp.use_backend("cython"):
        floor = cases._floor_fn(sizes, init, x, update=True)
    for _ in range(3):
        hs, dWs = floor()
    for k in init:
        np.testing.assert_array_equal(init[k], kept[k])
    np.testing.assert_allclose(hs[1], x @ init["W1"], rtol=0, atol=1e-10)  # lr 1e-12


def test_a_contender_on_another_thread_pool_is_warmed_up(monkeypatch):
    """After a contender on another thread pool (PyTorch's after NumPy's, or back), the
    next one runs untimed for WARMUP_S first, so the other pool's spinning threads are
    asleep when the timing starts; between contenders on one pool, a single call."""
    from collections import OrderedDict
    from fastbp import bench
    calls = {"numpy-like": 0, "own-pool": 0}

    def contender(name, own):
        def fn():
            calls[name] += 1
        return cases.Contender(name, fn, lambda: (), own_threads=own)
    case = cases.Case("fake", "kernel", False,
                      OrderedDict([("numpy-like", contender("numpy-like", False)),
                                   ("own-pool", contender("own-pool", True))]),
                      check=lambda name: None)
    monkeypatch.setattr(bench, "WARMUP_S", 0.02)
    t0 = time.perf_counter()
    m = bench.measure(case, budget=0.01, repeats=3)
    assert set(m["times"]) == {"numpy-like", "own-pool"}
    # rounds run (numpy-like, own-pool), (own-pool, numpy-like), (numpy-like, own-pool):
    # three samples follow the other pool, so at least three warm-ups of 0.02 s
    assert time.perf_counter() - t0 >= 3 * 0.02
    assert calls["own-pool"] > 3 * 2  # warm-up calls beyond one per sample


def _plot_bench_tool():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "plot_bench.py")
    spec = importlib.util.spec_from_file_location("plot_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_bench_tables_from_the_committed_results(capsys):
    """tools/plot_bench.py turns the committed results into the tables of
    docs/benchmarks.md (Markdown, and the targets of two runs side by side)."""
    import os
    tool = _plot_bench_tool()
    docs = os.path.join(os.path.dirname(__file__), os.pardir, "docs")
    two, one = (os.path.join(docs, f) for f in ("bench-2threads.json", "bench-1thread.json"))
    assert tool.main([two, "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "| step 784-50-10 b100 float64 |" in md and "cython/floor+sgd" in md
    assert tool.main([two, "--targets", one]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| target | 2 threads | 1 thread | wanted |"
    assert len(table) == 2 + len(json.load(open(two))["targets"])
    with open(os.path.join(docs, "benchmarks.md")) as f:
        text = f.read()
    assert all(row in text for row in table[2:])  # the docs hold this very table
