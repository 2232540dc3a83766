"""Data-parallel training over MPI (Open MPI through ``mpi4py``; ``pip install "fastbp[mpi]"``).

Run it as ``mpirun -n 2 fastbp train --distributed [the options of fastbp train]``
(see ``docs/distributed.md``). The package holds three concerns:

- :mod:`.collectives`: MPI with deadlines (``Iallreduce``/``Ibcast`` polled until
  done), aborting the job when a rank fails or is stuck, broadcasting arrays without
  pickle;
- :mod:`.data_parallel`: sharding, :class:`DataParallel` (one ``Allreduce`` per step),
  and :func:`train_distributed`, which runs fastbp's one training loop
  (:func:`fastbp.loop.run_loop`) with a data-parallel step;
- :mod:`.checkpoints`: the network, the optimizer's declared state and the run's
  progress in one ``.npz``, validated key by key on resume.

``mpi4py`` is imported only when a communicator is needed, so this package imports
without it. The data (``fastbp.datasets.load_mnist``), the networks and the optimizers
(``fastbp.optimizers.get_optimizer``) are fastbp's own.
"""
from .checkpoints import load_checkpoint, optimizer_state, restore, save_checkpoint
from .collectives import (DEFAULT_TIMEOUT, CollectiveTimeout, MPIUnavailable, abort_on_error,
                          world)
from .data_parallel import DataParallel, shard, shard_bounds, train_distributed

__all__ = [
    "DataParallel", "CollectiveTimeout", "MPIUnavailable", "shard", "shard_bounds",
    "train_distributed", "abort_on_error", "world", "save_checkpoint", "load_checkpoint",
    "optimizer_state", "restore", "DEFAULT_TIMEOUT",
]
