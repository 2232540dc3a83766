"""``fastbp bench`` runs and prints its report; the cases check what they time; the
source tree's ``benchmarks/`` (peers, limits, busy machine, compare.py) work.

Tiny options only: a few cases, a budget of milliseconds. The figures themselves are
not asserted (a shared machine makes them noisy); their presence and shape are.
"""
import ast
import importlib.util
import json
import os
import re
import sys
import time
from collections import OrderedDict

import numpy as np
import pytest

import fastbp
from fastbp import bench
from fastbp.bench import book, cases, timing
from fastbp.cli import main

TINY = ["bench", "--budget", "0.005", "--repeats", "2", "--threads", "1"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
BENCHMARKS = os.path.join(ROOT, "benchmarks")
COMPILED = ["cython"] if fastbp.HAVE_CYTHON else []


def _speaks_to_a_user(text):
    """Lines that fit 100 columns, no "0.05x faster", nothing for fastbp's developers."""
    wide = [line for line in text.splitlines() if len(line) > 100]
    assert not wide, wide
    assert not re.search(r"\b0\.\d+x faster", text), text
    assert not re.search(r"issue \d|NOT pinned|target", text, re.IGNORECASE), text


def test_bench_quick_shows_progress_tables_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(TINY + ["--quick", "--dtype", "float64", "--only", "784-50-10",
                      "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    _speaks_to_a_user(text)
    lines = text.splitlines()
    progress = [line for line in lines if line.startswith("[1/1] step 784-50-10 b100 float64 ...")]
    assert progress and re.search(r"fastbp \d+\.\d\dx (faster|slower) than the book \(", progress[0])
    assert "fastbp vs the book" in text and "fastbp, book API" in text
    assert re.search(r"fastbp's training steps: \d+\.\d\dx (faster|slower) than the book's", text)
    report = json.loads(out.read_text())
    step = report["results"][0]
    assert step["id"] == "step 784-50-10 b100 float64"
    assert {"book", "numpy", "cython-api"} <= set(step["times"]) and step["ratios"]["book/numpy"] > 0
    assert report["machine"]["numpy"] == np.__version__
    assert "OPENBLAS_CORETYPE" in report["machine"]["env"]


def test_full_run_has_the_layers_and_quick_only_the_batch_100_steps():
    quick = [i for i, _ in bench.select(True, ("float64",))]
    full = [i for i, _ in bench.select(False, ("float64",))]
    assert quick == ["step 784-50-10 b100 float64", "step SimpleConvNet b100 float64"]
    assert set(quick) < set(full)
    assert "step DeepConvNet b100 float64" in full and "step 784-1000-1000-10 b256 float64" in full
    assert "SimpleConvNet Convolution1.backward float64" in full
    assert "SimpleConvNet Pooling1.forward float64" in full
    assert "784-50-10 SoftmaxWithLoss float64" in full


@pytest.mark.parametrize("ratio, text", [(2.5, "2.50x faster than"), (0.05, "20.00x slower than"),
                                         (1.0, "1.00x faster than"), (None, "-")])
def test_a_contender_slower_than_the_book_is_n_times_slower(ratio, text):
    assert bench.vs(ratio) == text


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads: expected a positive integer, got '0'"),
    (["--repeats", "two"], "--repeats: expected a positive integer, got 'two'"),
    (["--budget", "nan"], "--budget: expected a positive number, got 'nan'"),
    (["--budget", "0"], "--budget: expected a positive number, got '0'"),
    (["--dtype", "float16"], "--dtype: invalid choice: 'float16'"),
    (["--only", "no such case"], "--only no such case: no case matches"),
    (["--quick", "--only", "DeepConvNet"], "--only DeepConvNet: no case matches with --quick"),
    (["--peers"], "unrecognized arguments: --peers"),
])
def test_bench_refuses_bad_options_up_front(capsys, argv, message):
    """Each bad option is one line naming it, exit status 2, before any timing."""
    t0 = time.perf_counter()
    assert main(["bench"] + argv) == 2
    assert time.perf_counter() - t0 < 5
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastbp: error: "), captured.err
    assert message in lines[0]


def test_bench_refuses_a_json_file_it_could_not_write_before_timing(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["bench", "--json", str(tmp_path / "missing" / "out.json")]) != 0
    assert time.perf_counter() - t0 < 5
    assert "--json: no such directory" in capsys.readouterr().err


def _result(case_id, kind="step", times=None, spread=1.1, bounds=()):
    times = times or {"book": 2e-3, "numpy": 1.5e-3, "cython": 1e-3, "cython-api": 1.1e-3}
    return {"id": case_id, "kind": kind, "times": times, "spread": dict.fromkeys(times, spread),
            "ratios": {f"book/{n}": times["book"] / times[n] for n in times if n != "book"},
            "skipped": {}, "bounds": [list(b) for b in bounds]}


def test_the_report_fits_100_columns_at_the_longest_names():
    results = [_result("step 784-1000-1000-10 b256 float64"),
               _result("SimpleConvNet SoftmaxWithLoss float32", "layer",
                       {"book": 36.2e-3, "numpy": 26e-3, "cython": 5.5e-3}),
               _result("DeepConvNet Convolution6.backward float64", "layer",
                       {"book": 1e-3, "numpy": 2e-3, "cython": 3e-3})]
    results[0]["skipped"] = {"cython": "fastbp's compiled kernels are not built"}
    text = "\n".join(bench.report(results))
    _speaks_to_a_user(text)
    assert "3.00x slower" in text and "6.58x faster" in text
    assert "Not timed: fastbp (fastbp's compiled kernels are not built)" in text


def test_warns_of_a_busy_machine_noisy_rounds_and_contradictory_figures():
    quiet = [_result("step a")]
    assert bench.warnings_for(quiet, 0.1, 2) == []
    busy = bench.warnings_for(quiet, 1.5, 2)
    assert len(busy) == 1 and "load average of 1.50" in busy[0] and "2 CPUs" in busy[0]
    noisy = bench.warnings_for([_result("step a", spread=3.0)], None, 2)
    assert len(noisy) == 1 and "differed by more than 2x" in noisy[0]
    times = {"floor": 2e-3, "floor+sgd": 1.5e-3, "cython": 3e-3, "book": 4e-3}
    bad = bench.warnings_for([_result("step b", times=times, bounds=[("floor", "floor+sgd")])],
                             None, 2)
    assert len(bad) == 1 and "contradictory figures in step b: floor+sgd" in bad[0]
    times["floor+sgd"] = 2.1e-3
    assert bench.warnings_for([_result("step b", times=times, bounds=[("floor", "floor+sgd")])],
                              None, 2) == []


def _fake_case(calls, own=(False, True), fresh=False):
    def contender(name, own_threads):
        def fn():
            calls[name] += 1
        return cases.Contender(name, fn, own_threads=own_threads)
    names = list(calls)
    return cases.Case("fake", "layer", OrderedDict((n, contender(n, o)) for n, o in zip(names, own)),
                      check=lambda name: None, fresh=fresh)


def test_measure_rotates_the_order_and_pairs_the_rounds():
    order = []
    calls = {"a": 0, "b": 0, "c": 0}
    case = _fake_case(calls, own=(False, False, False))
    for name, c in case.contenders.items():
        c.fn = (lambda name=name: order.append(name))
    m = timing.measure(case, budget=1e-9, repeats=3, pairs=[("a", "b")])
    assert set(m["times"]) == {"a", "b", "c"} and "a/b" in m["ratios"]
    rounds = order[-18:]   # 3 rounds of 3 samples, each one untimed call and one timed
    assert rounds[0::6] == ["a", "b", "c"]   # round r starts at the r-th contender
    assert rounds[:6] == ["a", "a", "b", "b", "c", "c"]


def test_after_another_thread_pool_a_contender_is_warmed_up_until_back_to_speed(monkeypatch):
    """A contender on a pool of its own, after one on NumPy's, runs untimed until a call
    is as fast as when calibrated (at most WARMUP_S): once when it is fast at once."""
    # the calls' times are given, not measured, so that a loaded machine cannot change them
    calls = []
    times = [0.004, 0.004, 0.004, 0.001]

    def sample(c, number, fresh):
        calls.append(1)
        return times[len(calls) - 1] if len(calls) <= len(times) else 0.001
    c = cases.Contender("own", lambda: None, own_threads=True)
    monkeypatch.setattr(timing, "_sample", sample)
    timing._warm_up(c, False, 5.0, target=0.001)
    assert len(calls) == 4            # three slow calls, then one at speed
    calls.clear()
    times[:] = [0.001]
    timing._warm_up(c, False, 5.0, target=0.001)
    assert len(calls) == 1
    monkeypatch.undo()
    c = cases.Contender("own", lambda: time.sleep(0.001), own_threads=True)
    t0 = time.perf_counter()
    timing._warm_up(c, False, 0.05, target=1e-5)   # never back to speed: the whole time
    assert time.perf_counter() - t0 >= 0.05
    # and measure() warms up a contender that follows one on another pool
    seen = []
    case = _fake_case({"numpy-like": 0, "own-pool": 0})
    monkeypatch.setattr(timing, "_warm_up", lambda c, fresh, s, target=None: seen.append((c.name, s)))
    timing.measure(case, budget=1e-9, repeats=2)
    assert ("own-pool", timing.WARMUP_S) in seen[2:] and ("numpy-like", timing.WARMUP_S) in seen[2:]


# ------------------------------------------------------------------------- the cases

@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("step", ["784-50-10", "SimpleConvNet"])
def test_step_contenders_agree_with_the_book(step, dtype):
    case = cases.step_case(step, dtype, contenders=("book", "numpy") + tuple(COMPILED) +
                           (("cython-api", "cython-1t") if COMPILED else ()))
    assert not case.skipped
    for name in case.contenders:
        case.check(name)


def test_check_catches_a_wrong_contender():
    bad = cases.step_case("784-50-10", "float64", contenders=("book",),
                          extra={"bad": _wrong_step})
    with pytest.raises(AssertionError, match="the update of b2 after one step differs"):
        bad.check("bad")


def _wrong_step(step, init, x, t, threads=None, lr=0.1, masks=None):
    """The book's step, except that ``b2`` is never updated."""
    net = cases._bind_book(step.book_net(), init)

    def run():
        grads = net.gradient(x, t)
        for k in net.params:
            if k != "b2":
                net.params[k] -= lr * grads[k]
        return net.params
    return run, dict


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_layer_cases_agree_with_the_book(dtype):
    picks = cases.layer_cases("784-50-10", dtype) + cases.layer_cases(
        "SimpleConvNet", dtype, only=["Convolution1", "Pooling1"])
    ids = [i for i, _ in picks]
    assert "SimpleConvNet Pooling1.backward " + dtype in ids
    for case_id, build in picks:
        case = build()
        assert list(case.contenders)[:2] == ["book", "numpy"]
        for name in case.contenders:
            case.check(name)
    cases.forget()


def test_a_backward_case_hands_out_fresh_copies_of_dout():
    """The book's Relu.backward writes into its dout: every call gets its own copy."""
    (_, build), = cases.layer_cases("784-50-10", "float64", only=["Relu1.backward"])
    case = build()
    c = case.contenders["book"]
    assert case.fresh
    a, b = c.setup()[0], c.setup()[0]
    assert a is not b and np.array_equal(a, b)
    c.fn(a)
    assert np.array_equal(c.setup()[0], b)
    cases.forget()


def test_the_book_idiom_imports_nothing_of_fastbp():
    """tests/book_reference loads fastbp/bench/book.py by its path as the reference that
    fastbp is judged against: it must run no fastbp code."""
    tree = ast.parse(open(book.__file__).read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.level == 0}
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert imported <= {"numpy", "collections", "math"} and not relative, imported


def test_the_installed_command_carries_no_lab():
    """PyTorch, JAX, a spinner process, profiles and a second option parser live in
    benchmarks/ and tools/; the package stays well under the 1,800 lines it once had."""
    folder = os.path.dirname(bench.__file__)
    sources = {f: open(os.path.join(folder, f)).read() for f in os.listdir(folder)
               if f.endswith(".py")}
    assert sorted(sources) == ["__init__.py", "book.py", "cases.py", "timing.py"]
    for name, text in sources.items():
        for word in ("torch", "jax", "subprocess", "tracemalloc", "argparse", "threadpool_info"):
            assert not re.search(rf"\bimport {word}|\b{word}\.", text), (name, word)
    assert sum(t.count("\n") for t in sources.values()) < 1200


# ------------------------------------------------------------------- benchmarks/ (lab)

@pytest.fixture(scope="module")
def lab():
    if not os.path.isdir(BENCHMARKS):
        pytest.skip("no benchmarks/ folder beside the tests")
    sys.path.insert(0, BENCHMARKS)
    try:
        yield {m: __import__(m) for m in ("peers", "limits", "busy", "compare", "targets")}
    finally:
        sys.path.remove(BENCHMARKS)


@pytest.mark.parametrize("peer", ["torch", "jax"])
@pytest.mark.parametrize("step, dtype", [("784-50-10", "float32"), ("784-50-10", "float64"),
                                         ("SimpleConvNet", "float32"), ("SimpleConvNet", "float64"),
                                         ("DeepConvNet", "float64")])
def test_peer_contenders_agree_with_the_book_or_skip_with_the_reason(lab, peer, step, dtype):
    case = cases.step_case(step, dtype, contenders=("book",),
                           extra={peer: lab["peers"].PEERS[peer]}, threads=1)
    if peer in case.skipped:
        assert "is not installed" in case.skipped[peer]
        pytest.skip(case.skipped[peer])
    assert case.contenders[peer].own_threads   # warmed up after NumPy's pool
    case.check(peer)


def test_a_missing_peer_is_skipped_with_its_reason():
    def absent(*args, **kwargs):
        raise cases.Unavailable("NoSuchLib is not installed")
    case = cases.step_case("784-50-10", "float64", contenders=("book",), extra={"nosuch": absent})
    assert list(case.contenders) == ["book"]
    assert case.skipped == {"nosuch": "NoSuchLib is not installed"}


def test_the_gemm_limit_counts_the_steps_multiply_adds(lab):
    """0.43 GFLOP for SimpleConvNet, 5.24 for DeepConvNet (without the first layer's dx)."""
    flops = {s: 2 * lab["limits"].multiply_adds(cases.STEPS[s]) for s in cases.STEPS}
    assert flops["784-50-10"] == 2 * 100 * (784 * 50 * 2 + 50 * 10 * 3)
    assert round(flops["SimpleConvNet"] / 1e9, 2) == 0.43
    assert round(flops["DeepConvNet"] / 1e9, 2) == 5.24
    assert lab["limits"].limit_seconds(cases.STEPS["784-50-10"], "float64", 1e9) == \
        flops["784-50-10"] / 1e9
    # a layer's: one product forward, two backward (30 5x5 filters on 24x24 outputs)
    layers = dict(cases.layer_cases("SimpleConvNet", "float64", only=["Convolution1"]))
    conv = 100 * 24 * 24 * 30 * 5 * 5
    assert layers["SimpleConvNet Convolution1.forward float64"]().info["multiply_adds"] == conv
    assert layers["SimpleConvNet Convolution1.backward float64"]().info["multiply_adds"] == 2 * conv
    cases.forget()


@pytest.mark.skipif(not fastbp.HAVE_CYTHON, reason="the compiled kernels are not built")
def test_floor_with_update_writes_copies_of_the_weights(lab):
    step = cases.STEPS["784-50-10"]
    init, x, t, _ = cases.step_data(step, "float64")
    kept = {k: v.copy() for k, v in init.items()}
    with lab["limits"].FLOORS["floor+sgd"].context():
        run, params_of = lab["limits"].FLOORS["floor+sgd"](step, init, x, t)
        for _ in range(3):
            hs = run()
    assert params_of is None
    for k in init:
        np.testing.assert_array_equal(init[k], kept[k])
    np.testing.assert_allclose(hs[1], x @ init["W1"], rtol=0, atol=1e-10)


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_busy_spins_one_process_on_one_core_and_stops_it(lab):
    busy = lab["busy"]
    with busy.busy() as pid:
        if hasattr(os, "sched_getaffinity"):
            assert os.sched_getaffinity(pid) == {busy.spinner_core()}
        t0, deadline = _cpu_seconds(pid), time.monotonic() + 20
        while _cpu_seconds(pid) - t0 < 0.2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _cpu_seconds(pid) - t0 >= 0.2
    assert not os.path.exists(f"/proc/{pid}")


def test_compare_runs_the_threads_comparison_idle_and_busy(lab, tmp_path, capsys):
    out = tmp_path / "compare.json"
    assert lab["compare"].main(["--quick", "--only", "784-50-10", "--dtype", "float64",
                                "--no-peers", "--one-thread", "--busy", "--budget", "0.005",
                                "--repeats", "2", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "busy, 1 thread" in text and "GEMM limit" in text and "floor+sgd" in text
    report = json.loads(out.read_text())
    loads = [(r["id"], r["load"]) for r in report["results"]]
    assert loads == [("step 784-50-10 b100 float64", "idle"),
                     ("step 784-50-10 b100 float64, busy", "busy")]
    whats = {t["what"] for t in report["targets"]}
    assert "busy: 784-50-10 step over its single-thread time, float64" in whats
    assert "busy: 784-50-10 step over its idle time, float64" in whats
    assert report["results"][0]["bounds"] == [["floor", "floor+sgd"]]


def _plot_bench_tool():
    path = os.path.join(ROOT, "tools", "plot_bench.py")
    spec = importlib.util.spec_from_file_location("plot_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_bench_tables_from_the_committed_results(capsys):
    """tools/plot_bench.py turns the committed results into the tables of
    docs/benchmarks.md (Markdown, and the targets of two runs side by side)."""
    tool = _plot_bench_tool()
    docs = os.path.join(ROOT, "docs")
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
