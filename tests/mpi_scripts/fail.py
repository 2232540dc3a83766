"""Rank 1 fails in the way MODE says; the job must stop with a clear error, not hang.

usage: fail.py MODE    (raise | die | hang | leave | raise-in-train)

"leave": rank 1 skips the steps and exits normally (as a rank with fewer iterations
would); rank 0 must not wait forever in a collective that will never complete.
"""
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import problem  # noqa: E402

from fastbp.distributed import DataParallel, abort_on_error, train_distributed  # noqa: E402

mode = sys.argv[1]


class Faulty:
    """A network whose gradient raises on rank 1 at its third call."""

    def __init__(self, rank):
        self.net, self.rank, self.calls = problem.network(), rank, 0
        self.params = self.net.params

    def gradient(self, x, t):
        self.calls += 1
        if self.rank == 1 and self.calls == 3:
            raise RuntimeError("injected failure in gradient on rank 1")
        return self.net.gradient(x, t)

    def loss(self, x, t):
        return self.net.loss(x, t)

    def accuracy(self, x, t):
        return self.net.accuracy(x, t)


if mode == "raise-in-train":
    from mpi4py import MPI
    x, t = problem.data()
    net = Faulty(MPI.COMM_WORLD.Get_rank())
    train_distributed(net, x, t, iters=10, batch_size=20, lr=0.1, timeout=30)
    sys.exit(0)

with abort_on_error() as comm:
    rank = comm.Get_rank()
    x, t = problem.data()
    dp = DataParallel(problem.network(), lr=0.1, timeout=30)
    if mode in ("hang", "leave"):
        dp.timeout = 2  # short for the steps only: a slow start must not trip it
    if rank == 1:
        if mode == "raise":
            raise RuntimeError("injected failure on rank 1")
        if mode == "die":
            os._exit(3)
        if mode == "hang":
            time.sleep(300)
        if mode == "leave":
            sys.exit(0)
    for _ in range(3):
        dp.step(x[:10], t[:10])
print(f"rank {rank}: finished without noticing the failure", flush=True)
