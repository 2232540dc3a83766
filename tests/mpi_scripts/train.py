"""Train with ``train_distributed`` on ``problem.data()``; save the result of each rank.

usage: train.py OUT_PREFIX ITERS CHECKPOINT|- RESUME(0|1) [OPTIMIZER]
Only rank 0 passes the data (the others get it broadcast). Writes
OUT_PREFIX.rank<R>.npz with the parameters, the optimizer state and the history.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import problem  # noqa: E402

from fastbp.distributed import optimizer_state, train_distributed  # noqa: E402
from mpi4py import MPI  # noqa: E402

prefix, iters, ckpt, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
opt_name = sys.argv[5] if len(sys.argv) > 5 else "adam"
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
x, t = problem.data()
x_test, t_test = problem.data(n=60, seed=7)
if rank != 0:
    x = t = x_test = t_test = None
net = problem.network(seed=rank)
opt = problem.OPTIMIZERS[opt_name]()
epochs, losses = [], []
hist = train_distributed(
    net, x, t, x_test, t_test, iters=iters, batch_size=24, lr=0.1, optimizer=opt, seed=3,
    on_epoch=epochs.append,
    checkpoint=None if ckpt == "-" else ckpt, resume=resume, timeout=30,
    on_iteration=lambda i, loss: losses.append((i, loss)))
if rank == 0:
    for r in epochs:
        print(f"epoch {r.epoch}: train acc {r.train_acc:.4f}, test acc {r.test_acc:.4f}", flush=True)
np.savez(f"{prefix}.rank{rank}.npz",
         **{f"param/{k}": v for k, v in net.params.items()},
         **optimizer_state(opt, net.params),
         train_acc=np.array(hist.train_acc), test_acc=np.array(hist.test_acc),
         iterations=np.array(len(hist.loss)), epochs_seen=np.array([r.epoch for r in epochs]),
         loss_iters=np.array([i for i, _ in losses]), losses=np.array([v for _, v in losses]))
