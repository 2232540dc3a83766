"""The busy scenario: one CPU-bound process spinning on one core while a benchmark runs.

Users train on laptops, shared servers and 2-vCPU notebooks, rarely on an idle machine.
``busy()`` reproduces the simplest such machine: one other process that wants a whole
core. A step whose threads wait for each other (two BLAS threads, one of them sharing a
core with the spinner) slows down far more than the factor two that losing a core
costs at worst; the idle/busy ratio of each contender shows it.
"""
import contextlib
import os
import subprocess
import sys
import time

__all__ = ["busy", "spinner_core"]

# A pure-Python loop: CPU-bound, no memory traffic to speak of. It stops by itself when
# its parent is gone (it is then adopted by another process), so an interrupted
# benchmark leaves nothing spinning.
_SPIN = """
import os, sys
parent = int(sys.argv[1])
print("spinning", flush=True)
while os.getppid() == parent:
    for _ in range(200000):
        pass
"""


def spinner_core():
    """The core the spinner is pinned to: the last one this process may run on (None
    where the platform cannot pin)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return max(os.sched_getaffinity(0))


@contextlib.contextmanager
def busy(settle=0.05):
    """Run the body with one CPU-bound process spinning (pinned to ``spinner_core()``
    where the platform allows it); stop it afterwards. Yields its process id."""
    proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(os.getpid())],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        core = spinner_core()
        if core is not None:
            try:
                os.sched_setaffinity(proc.pid, {core})
            except OSError:   # a container may forbid it; the spinner then floats
                pass
        proc.stdout.readline()   # it is running
        time.sleep(settle)       # and the scheduler has placed it
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
