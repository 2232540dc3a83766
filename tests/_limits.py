"""Run a snippet of Python in a child process with a time limit and a memory limit.

A hang or an unbounded allocation in the code under test then fails the test (a
``MemoryError`` in the child, or the timeout) instead of stalling the suite or making
the machine swap. The memory limit (``RLIMIT_AS``) is set in the child once NumPy and
fastbp are imported: ``budget`` bytes more than the address space it has then, so the
figure does not depend on how large the interpreter and its libraries are.
"""
import os
import subprocess
import sys
import textwrap

import pytest

import fastbp

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
AVAILABLE = os.path.exists("/proc/self/status")
needs_limits = pytest.mark.skipif(not AVAILABLE, reason="sets RLIMIT_AS and reads /proc")

_PRELUDE = """
import resource, sys
import numpy as np
import fastbp

def _address_space():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

_hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (_address_space() + {budget}, _hard))
"""


def run_limited(code, *args, budget=64 << 20, timeout=60):
    """``python -c code args...`` with at most ``budget`` more bytes of address space
    than after importing fastbp and ``timeout`` seconds; returns the CompletedProcess
    (a timeout fails the test, with the output so far)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
               OPENBLAS_NUM_THREADS="1", FASTBP_NUM_THREADS="1")
    source = _PRELUDE.format(budget=int(budget)) + textwrap.dedent(code)
    try:
        return subprocess.run([sys.executable, "-c", source, *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"not finished after {timeout} s; its output so far:\n{out}")
