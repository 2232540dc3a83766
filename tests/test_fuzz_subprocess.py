"""Fuzz every kernel in a child process, so that a crash is a test failure, not a dead run.

``_fuzz_worker.py`` rebuilds each case from (seed, index) and prints it before the call;
when the child dies from a signal (a segfault in compiled code, say) this test fails with
the seed and the input that killed it, and the command that replays just that case.
``FASTBP_FUZZ_CASES`` sets the cases per seed (default 400, spread over every kernel of
``_checks.KERNELS``: the worker has a case builder for each and fails on a kernel without one).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_fuzz_worker.py")
CASES = int(os.environ.get("FASTBP_FUZZ_CASES", "400"))
SEEDS = [0, 1, 2, 3]


def _child_env():
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    import fastbp  # the child must import the same fastbp as this process
    pkg_root = str(Path(fastbp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, src, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_kernels_in_subprocess(seed):
    proc = subprocess.run([sys.executable, str(WORKER), str(seed), str(CASES)],
                          capture_output=True, text=True, timeout=300, env=_child_env())
    if proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"):
        return
    cases = [line for line in proc.stdout.splitlines() if line.startswith("CASE ")]
    last = cases[-1] if cases else "(no case started)"
    index = last.split()[2] if cases else "?"
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit status {proc.returncode}")
    pytest.fail(
        f"fuzz worker {how} (seed {seed}).\nLast input: {last}\n"
        f"Replay: python {WORKER} {seed} {CASES} --only {index}\n"
        f"--- stdout tail ---\n{os.linesep.join(proc.stdout.splitlines()[-15:])}\n"
        f"--- stderr tail ---\n{proc.stderr[-3000:]}",
        pytrace=False,
    )


def test_worker_reports_a_crash(tmp_path):
    """The harness itself: a child that segfaults is reported with its last case."""
    crasher = tmp_path / "crash.py"
    crasher.write_text(
        "import ctypes, faulthandler\n"
        "faulthandler.disable()\n"
        "print('CASE 9 1 relu_forward cython: ndarray(...)', flush=True)\n"
        "ctypes.string_at(0)\n"
    )
    proc = subprocess.run([sys.executable, str(crasher)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode < 0
    assert proc.stdout.splitlines()[-1].startswith("CASE 9 1 relu_forward")
