"""Run data-parallel steps for each CASE and save each rank's parameters.

usage: steps.py OUT_DIR CASE [CASE ...]    with CASE = BATCH:STEPS:OPTIMIZER:DTYPE
Every rank builds its network from a different seed, so equality afterwards shows that
rank 0's parameters were broadcast. Writes OUT_DIR/<CASE>.rank<R>.npz.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import problem  # noqa: E402

from fastbp.distributed import DataParallel, abort_on_error, shard  # noqa: E402


def run(comm, out_dir, case):
    batch, steps, opt_name, dtype = case.split(":")
    batch, steps, dtype = int(batch), int(steps), np.dtype(dtype)
    rank, size = comm.Get_rank(), comm.Get_size()
    x, t = problem.data()
    x = x.astype(dtype)
    net = problem.network(seed=rank, dtype=dtype)  # differs per rank until the broadcast
    refs = dict(net.params)
    dp = DataParallel(net, problem.OPTIMIZERS[opt_name](), comm, lr=0.1, timeout=30)
    assert all(net.params[k] is refs[k] for k in refs), "parameters were replaced, not updated"
    start = {f"start/{k}": v.copy() for k, v in net.params.items()}
    losses = []
    for idx in problem.batches(steps, batch):
        mine = shard(idx, rank, size)
        losses.append(dp.step(x[mine], t[mine], with_loss=True))
    assert net.layers["Affine1"].W is net.params["W1"]
    np.savez(os.path.join(out_dir, f"{case}.rank{rank}.npz"), **start,
             **{f"param/{k}": v for k, v in net.params.items()},
             losses=np.array(losses), in_sync=np.array(dp.in_sync()),
             bytes_per_step=np.array(dp.bytes_per_step), size=np.array(size))


with abort_on_error() as comm:
    for case in sys.argv[2:]:
        run(comm, sys.argv[1], case)
