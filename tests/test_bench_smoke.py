"""``fastbp bench`` runs and prints its tables; the benchmark cases check what they time.

Tiny options only: a few cases, a budget of milliseconds. The figures themselves are
not asserted (a shared machine makes them noisy); their presence and shape are.
"""
import json
import os
import re
import time

import numpy as np
import pytest

import fastbp
from fastbp.bench import book, busy, cases, load_peers, main

BACKENDS = ["numpy"] + (["cython"] if fastbp.HAVE_CYTHON else [])
TINY = ["--quick", "--budget", "0.005", "--repeats", "2", "--threads", "1"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def _speaks_to_a_user(text):
    """Lines that fit 100 columns, and nothing addressed to fastbp's developers."""
    wide = [line for line in text.splitlines() if len(line) > 100]
    assert not wide, wide
    assert not re.search(r"issue \d|NOT pinned|target", text, re.IGNORECASE), text


def test_bench_prints_tables_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(TINY + ["--dtype", "float64", "--only", "relu_forward 100x784",
                      "--only", "step 784-50-10", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fastbp vs book" in text and "numpy vs book" in text and "fastbp is" in text
    assert "relu_forward 100x784 float64" in text
    assert "784-50-10 b100 float64" in text
    assert "faster than the book's" in text    # the closing summary
    _speaks_to_a_user(text)
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


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads: must be at least 1, got 0"),
    (["--repeats", "0"], "--repeats: must be at least 1, got 0"),
    (["--repeats", "two"], "--repeats: expected a whole number, got 'two'"),
    (["--budget", "nan"], "--budget: must be a positive number of seconds, got nan"),
    (["--budget", "inf"], "--budget: must be a positive number of seconds, got inf"),
    (["--budget", "0"], "--budget: must be a positive number of seconds, got 0"),
    (["--budget", "-1"], "--budget: must be a positive number of seconds, got -1"),
    (["--dtype", "float16"], "--dtype: invalid choice: 'float16'"),
    (["--only", "no such case"], "--only no such case: no case matches"),
    (["--quick", "--only", "4096x1000"], "--only 4096x1000: no case matches with --quick"),
    (["--peers", "/nonexistent"], "--peers: no /nonexistent/peers.py"),
])
def test_bench_refuses_bad_options_up_front(capsys, argv, message):
    """Each bad option is one line naming it, exit status 2, before any timing."""
    t0 = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - t0 < 5
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastbp bench: error: "), captured.err
    assert message in lines[0]


@pytest.mark.parametrize("where", ["missing-folder/out.json", "."])
def test_bench_refuses_a_json_file_it_could_not_write_before_timing(tmp_path, capsys, where):
    path = tmp_path / where if where != "." else tmp_path
    t0 = time.perf_counter()
    assert main(["--json", str(path)]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert err.startswith(f"fastbp bench: error: --json {path}: ")
    assert ("does not exist" in err) if where != "." else ("is a folder" in err)


def test_the_report_fits_100_columns_at_the_longest_case_names():
    """Every table with its widest ids and figures, the busy columns and a skipped peer."""
    from fastbp.bench import BUSY, report
    times = {"book": 36.26e-3, "numpy": 25.97e-3, "cython": 5.48e-3}
    ratios = {"book/numpy": 1.4, "book/cython": 6.62}
    step_times = {n: 47.64e-3 for n in ("book", "numpy", "cython", "floor", "floor+sgd",
                                        "torch", "jax")}
    step_ratios = {f"{n}/cython": 1.33 for n in step_times}
    step = "step 784-1000-1000-10 b256 float64"
    results = [
        {"id": "softmax_ce_onehot 4096x1000 float64", "kind": "kernel", "times": times,
         "ratios": ratios},
        {"id": step, "kind": "step", "load": "idle", "times": step_times, "ratios": step_ratios,
         "page_faults": {"book": 101.0, "jax": 120.0},
         "skipped": {"torch": "PyTorch is not installed (ModuleNotFoundError: No module "
                              "named 'torch')"}},
        {"id": step + BUSY, "kind": "step", "load": "busy", "times": step_times,
         "ratios": step_ratios},
        {"id": "threads softmax_ce_labels 4096x1000 float64", "kind": "threads",
         "times": {"cython-1t": 11.38e-3, "cython-2t": 5.34e-3},
         "ratios": {"cython-1t/cython-2t": 2.13}},
    ]
    v = {"peak_bytes": 12345678, "in_params": 3.13}
    allocation = [{"case": step, "contender": c, "step": v, "gradient": v,
                   "step, optimizers.SGD": v} for c in ("book", "cython")]
    phases = {"Affine1.forward": 1e-3, "python glue (gradient)": 2e-4, "SGD update": 3e-4,
              "total": 47.64e-3}
    profiles = {step: {n: phases for n in ("book", "numpy", "cython")}}
    text = "\n".join(report(results, allocation, profiles))
    _speaks_to_a_user(text)
    assert "Not timed: PyTorch eager (PyTorch is not installed" in text
    assert "busy/idle" in text and "1.00x" in text


@pytest.mark.parametrize("pools", [None, [{"internal_api": "openblas", "version": "0.3.31",
                                            "architecture": "SkylakeX", "num_threads": 2}]])
def test_the_machine_header_says_once_how_threads_are_set(pools):
    from fastbp.bench.machine import describe, machine_info
    info = dict(machine_info(2), threadpools=pools)
    text = describe(info, width=100)
    _speaks_to_a_user(text)
    threads = [line for line in text.splitlines() if line.startswith("threads:")]
    assert len(threads) == 1
    if pools is None:
        assert "run at their defaults" in text and "threadpoolctl" in text
    else:
        assert threads[0].startswith("threads: 2 for fastbp, BLAS and OpenMP; pools: openblas")


def test_bench_help_returns_0(capsys):
    assert main(["--help"]) == 0
    assert "--peers" in capsys.readouterr().out


def test_quick_runs_what_its_help_says(capsys):
    """--quick: the book's sizes only (batch 100), no thread scaling."""
    from fastbp.bench import _parser, _selected_cases
    help_text = " ".join(_parser().format_help().split())
    assert "only the book's sizes (batch 100" in help_text and "no thread scaling" in help_text
    quick = [case_id for case_id, _ in _selected_cases(True, ("float64",), None)]
    full = [case_id for case_id, _ in _selected_cases(False, ("float64",), None)]
    assert quick and set(quick) < set(full)
    for case_id in quick:
        assert not case_id.startswith("threads")
        assert "b100" in case_id or re.search(r" 100x\d+", case_id), case_id
    assert any("b256" in c for c in full) and any(c.startswith("threads") for c in full)


def test_bench_busy_shows_each_contenders_slowdown(tmp_path, capsys):
    out = tmp_path / "busy.json"
    assert main(TINY + ["--dtype", "float32", "--only", "step 784-50-10", "--busy",
                        "--no-alloc", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    _speaks_to_a_user(text)
    assert "busy/idle" in text
    report = json.loads(out.read_text())
    loads = [(r["id"], r["load"]) for r in report["results"]]
    assert loads == [("step 784-50-10 b100 float32", "idle"),
                     ("step 784-50-10 b100 float32, busy", "busy")]
    assert set(report["results"][0]["times"]) == set(report["results"][1]["times"])


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


@pytest.mark.parametrize("backend", BACKENDS + (["cython-api"] if fastbp.HAVE_CYTHON else []))
def test_step_case_matches_the_book_after_one_step(backend):
    case = cases.step_case("784-50-10", "float64", contenders=("book", backend, "floor"))
    case.check(backend)
    case.check("floor")
    step, params = case.build(backend)
    before = {k: v.copy() for k, v in params(step()).items()}
    after = params(step())
    assert all(not np.array_equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def peers():
    if not os.path.isdir(BENCHMARKS):
        pytest.skip("no benchmarks/ folder beside the tests")
    return load_peers(BENCHMARKS)


def test_load_peers_from_the_source_tree(peers):
    assert set(peers) == {"torch", "jax"}


@pytest.mark.parametrize("peer", ["torch", "jax"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_peer_contenders_agree_with_the_book_or_skip_with_the_reason(peers, peer, dtype):
    case = cases.step_case("784-50-10", dtype, contenders=("book",),
                           peers={peer: peers[peer]}, threads=1)
    if peer in case.skipped:
        assert "is not installed" in case.skipped[peer]
        pytest.skip(case.skipped[peer])
    assert case.contenders[peer].own_threads   # warmed up after NumPy's pool
    case.check(peer)


def test_a_missing_peer_is_skipped_with_its_reason():
    def absent(*args, **kwargs):
        raise cases.Unavailable("NoSuchLib is not installed")
    case = cases.step_case("784-50-10", "float64", contenders=("book",), peers={"nosuch": absent})
    assert list(case.contenders) == ["book"]
    assert case.skipped == {"nosuch": "NoSuchLib is not installed"}


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_busy_spins_one_process_on_one_core_and_stops_it():
    with busy.busy() as pid:
        if hasattr(os, "sched_getaffinity"):
            assert os.sched_getaffinity(pid) == {busy.spinner_core()}
        # it burns CPU time (how fast depends on what else runs: a shared machine)
        t0, deadline = _cpu_seconds(pid), time.monotonic() + 20
        while _cpu_seconds(pid) - t0 < 0.2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _cpu_seconds(pid) - t0 >= 0.2
    assert not os.path.exists(f"/proc/{pid}")   # and it is gone


def test_book_multilayer_net_is_the_two_layer_net_at_one_hidden_layer():
    """The book reference's MultiLayerNet runs the same layers as its TwoLayerNet."""
    rng = np.random.default_rng(3)
    x, t = rng.random((6, 8)), rng.integers(0, 4, 6)
    two, multi = book.TwoLayerNet(8, 5, 4), book.MultiLayerNet(8, [5], 4)
    for k in two.params:
        multi.params[k][...] = two.params[k]
    g2, gm = two.gradient(x, t), multi.gradient(x, t)
    assert set(g2) == set(gm)
    for k in g2:
        np.testing.assert_array_equal(g2[k], gm[k])


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
