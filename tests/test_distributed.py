"""fastbp.distributed: data-parallel training over MPI.

The sharding, checkpoint and IDX functions are tested in this process. Everything that
needs several ranks runs the scripts in tests/mpi_scripts/ under ``mpirun`` (with a
timeout, in its own process group) and reads back what each rank saved; the
single-process reference is computed here from the same ``problem`` module. Those tests
skip when ``mpirun`` or ``mpi4py`` is missing.
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _mnist import FULL_DIR

import fastbp
from fastbp import cli
from fastbp.distributed import (
    load_checkpoint, optimizer_state, restore, save_checkpoint, shard, shard_bounds,
)

SCRIPTS = Path(__file__).parent / "mpi_scripts"
sys.path.insert(0, str(SCRIPTS))
import problem  # noqa: E402

MPIRUN = shutil.which("mpirun")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not HAVE_MPI4PY,
    reason="needs Open MPI's mpirun and mpi4py (apt-get install openmpi-bin libopenmpi-dev; "
           "pip install mpi4py)",
)


def mpirun(n, *args, timeout=60, cwd=None):
    """Run ``python ARGS`` on ``n`` ranks; returns ``(returncode, output, seconds)``.

    The ranks import the same fastbp as this process. On timeout the whole process
    group (mpirun and its ranks) is killed and the test fails: a hang is a failure.
    """
    env = dict(os.environ)
    src = str(Path(fastbp.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI and containers run as root
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    # One BLAS thread per rank: the ranks already share the few cores.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("FASTBP_MNIST_MIRRORS", "")  # the bundled sample, never a download
    if cwd is not None:
        env.setdefault("XDG_CACHE_HOME", str(Path(cwd) / "xdg"))
    cmd = [MPIRUN, "-n", str(n), "--oversubscribe", "--bind-to", "none",
           "--mca", "btl", "self,vader", sys.executable, *map(str, args)]
    tic = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True, cwd=cwd)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mpirun hung for more than {timeout} s:\n{out}")
    return proc.returncode, out, time.monotonic() - tic


def test_importing_the_module_does_not_start_mpi():
    # `fastbp train` may import it on machines without MPI; MPI starts on first use only.
    code = "import sys, fastbp.distributed; assert 'mpi4py' not in sys.modules"
    env = dict(os.environ)
    src = str(Path(fastbp.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# --------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 100])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shards_cover_the_batch_once_in_order(n, size):
    idx = np.arange(100, 100 + n)
    parts = [shard(idx, r, size) for r in range(size)]
    np.testing.assert_array_equal(np.concatenate(parts), idx)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the extra items go to the first ranks
    assert [shard_bounds(n, r, size) for r in range(size)] == [
        (int(sum(sizes[:r])), int(sum(sizes[:r + 1]))) for r in range(size)]


def test_shard_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        shard(np.arange(4), 2, 2)
    with pytest.raises(ValueError, match="size"):
        shard(np.arange(4), 0, 0)
    with pytest.raises(ValueError, match="batch_indices"):
        shard(np.zeros((2, 2)), 0, 1)


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_without_pickle(tmp_path):
    x, t = problem.data()
    net, opt = problem.network(seed=1), problem.Adam()
    for idx in problem.batches(3, 16):
        opt.update(net.params, net.gradient(x[idx], t[idx]))
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, iteration=30, epoch=3)
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert {"net/W1", "opt/m/W1", "opt/v/b2", "opt/iter", "meta/epoch"} <= set(z.files)
        assert not any(k.startswith("opt/lr") for k in z.files)  # hyperparameters stay out
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary left behind

    fresh, fresh_opt = problem.network(seed=2), problem.Adam()
    held = fresh.layers["Affine1"].W
    arrays = load_checkpoint(path)
    assert int(arrays["meta/iteration"]) == 30
    restore(arrays, fresh, fresh_opt, path)
    assert fresh.params["W1"] is held  # restored in place: the layers still see it
    for k in net.params:
        np.testing.assert_array_equal(fresh.params[k], net.params[k])
    assert fresh_opt.iter == 3
    for name, value in optimizer_state(opt, net.params).items():
        np.testing.assert_array_equal(optimizer_state(fresh_opt, fresh.params)[name], value)


def test_checkpoint_rejects_a_foreign_file_and_a_wrong_network(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a fastbp file"):
        load_checkpoint(tmp_path / "other.npz")
    save_checkpoint(tmp_path / "ck.npz", problem.network())
    wrong = fastbp.TwoLayerNet(problem.N_IN, problem.N_HIDDEN + 1, problem.N_OUT)
    with pytest.raises(ValueError, match="net/W1 has shape"):
        restore(load_checkpoint(tmp_path / "ck.npz"), wrong, None, tmp_path / "ck.npz")


# --------------------------------------------------------------------------- MPI: steps
def _reference(batch, steps, opt_name, dtype):
    """The same steps in one process on the whole batches."""
    x, t = problem.data()
    x = x.astype(dtype)
    net, opt = problem.network(seed=0, dtype=dtype), problem.OPTIMIZERS[opt_name]()
    start = {k: v.copy() for k, v in net.params.items()}
    losses = []
    for idx in problem.batches(steps, batch):
        losses.append(float(net.loss(x[idx], t[idx])))
        grads = net.gradient(x[idx], t[idx])
        if opt is None:
            for k in net.params:
                net.params[k] -= 0.1 * grads[k]
        else:
            opt.update(net.params, grads)
    return start, net.params, np.array(losses)


STEP_CASES = [  # ranks, batch, steps, optimizer, dtype, rtol
    (2, 10, 1, "sgd", "float64", 1e-12),      # the check: one step, batch split in two
    (2, 7, 1, "sgd", "float64", 1e-12),       # uneven shards (4 + 3): weighted mean
    (2, 1, 2, "sgd", "float64", 1e-12),       # rank 1's shard is empty
    (2, 10, 5, "momentum", "float64", 1e-10),
    (2, 10, 5, "adam", "float64", 1e-10),
    (2, 10, 3, "sgd", "float32", 2e-5),
    (3, 10, 3, "sgd", "float64", 1e-12),      # more ranks than cores: --oversubscribe
]


@pytest.fixture(scope="module")
def step_results(tmp_path_factory):
    """Run every case of STEP_CASES: one mpirun per number of ranks (launches are slow)."""
    out = tmp_path_factory.mktemp("steps")
    for ranks in sorted({c[0] for c in STEP_CASES}):
        cases = [f"{b}:{s}:{o}:{d}" for r, b, s, o, d, _ in STEP_CASES if r == ranks]
        rc, log, _ = mpirun(ranks, SCRIPTS / "steps.py", out, *cases)
        assert rc == 0, log
    return out


@needs_mpi
@pytest.mark.parametrize("ranks, batch, steps, opt, dtype, rtol", STEP_CASES)
def test_data_parallel_steps_equal_single_process_steps(step_results, ranks, batch, steps,
                                                        opt, dtype, rtol):
    start, params, losses = _reference(batch, steps, opt, np.dtype(dtype))
    case = f"{batch}:{steps}:{opt}:{dtype}"
    saved = [dict(np.load(step_results / f"{case}.rank{r}.npz")) for r in range(ranks)]
    for r, got in enumerate(saved):
        assert int(got["size"]) == ranks and bool(got["in_sync"])
        for k in params:
            # rank 0's initial parameters reached every rank (they built different ones)
            np.testing.assert_array_equal(got[f"start/{k}"], start[k], err_msg=f"rank {r} {k}")
            # every rank ends bitwise identical to rank 0 ...
            np.testing.assert_array_equal(got[f"param/{k}"], saved[0][f"param/{k}"])
            # ... and equal to the single-process step on the whole batch
            np.testing.assert_allclose(got[f"param/{k}"], params[k], rtol=rtol,
                                       atol=rtol * 1e-3, err_msg=f"rank {r} {k}")
            assert not np.array_equal(got[f"param/{k}"], start[k])  # it did train
        np.testing.assert_allclose(got["losses"], losses, rtol=max(rtol, 1e-12))
    n_params = sum(v.size for v in params.values())
    assert int(saved[0]["bytes_per_step"]) == (n_params + 2) * np.dtype(dtype).itemsize


# --------------------------------------------------------------------------- MPI: faults
@needs_mpi
@pytest.mark.parametrize("mode, message", [
    ("raise", "injected failure on rank 1"),
    ("raise-in-train", "injected failure in gradient on rank 1"),
    ("hang", "the gradient Allreduce did not complete within 2 s"),
    ("leave", "the gradient Allreduce did not complete within 2 s"),
    ("die", "exited"),  # mpirun's own report of a rank that vanished
])
def test_a_failing_rank_stops_the_job_with_a_clear_error(mode, message):
    rc, out, secs = mpirun(2, SCRIPTS / "fail.py", mode, timeout=60)
    assert rc != 0, out
    assert message in out, out
    if mode != "die":
        assert "aborting all ranks" in out.lower(), out
    assert "finished without noticing" not in out
    assert secs < 30, f"took {secs:.1f} s to stop"


# --------------------------------------------------------------------------- MPI: training
@needs_mpi
def test_resume_from_a_checkpoint_equals_training_straight_through(tmp_path):
    # 240 samples, batch 24: 10 iterations per epoch.
    rc, out, _ = mpirun(2, SCRIPTS / "train.py", tmp_path / "straight", 20, "-", 0)
    assert rc == 0, out
    assert out.count("epoch 1:") == 1 and out.count("epoch 2:") == 1  # printed once
    ck = tmp_path / "ck.npz"
    rc, out, _ = mpirun(2, SCRIPTS / "train.py", tmp_path / "first", 10, ck, 1)
    assert rc == 0, out
    with np.load(ck, allow_pickle=False) as z:
        assert int(z["meta/iteration"]) == 10
    rc, out, _ = mpirun(2, SCRIPTS / "train.py", tmp_path / "resumed", 20, ck, 1)
    assert rc == 0, out
    assert "epoch 1:" not in out and out.count("epoch 2:") == 1

    straight = dict(np.load(tmp_path / "straight.rank0.npz"))
    for r in range(2):
        resumed = dict(np.load(tmp_path / f"resumed.rank{r}.npz"))
        assert int(resumed["iterations"]) == 20
        assert resumed["epochs_seen"].tolist() == ([2] if r == 0 else [])
        for name, value in straight.items():
            if name.startswith(("param/", "opt/")):
                np.testing.assert_array_equal(resumed[name], value, err_msg=f"rank {r} {name}")
        np.testing.assert_array_equal(resumed["train_acc"], straight["train_acc"])
        np.testing.assert_array_equal(resumed["test_acc"], straight["test_acc"])
        if r == 0:  # the batch losses reach root only, once per iteration
            assert resumed["loss_iters"].tolist() == list(range(11, 21))
            np.testing.assert_array_equal(resumed["losses"], straight["losses"][10:])
        else:
            assert resumed["losses"].size == 0
    assert straight["loss_iters"].tolist() == list(range(1, 21))
    assert straight["losses"][-5:].mean() < straight["losses"][:5].mean()
    assert straight["train_acc"][-1] > 0.5  # and it learned something


def _sample_env(tmp_path):
    return {"FASTBP_MNIST_MIRRORS": "", "XDG_CACHE_HOME": str(tmp_path / "xdg")}


TRAIN = ["train", "--seed", "3", "--batch-size", "100", "--hidden", "30", "--no-plot"]


@needs_mpi
def test_fastbp_train_distributed_matches_fastbp_train(tmp_path, capsys, monkeypatch):
    # The same command on 2 ranks and in one process: the same batches, the same
    # network to float rounding, the same lines, the same files.
    for k, v in _sample_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    argv = TRAIN + ["--net", "multi", "--optimizer", "momentum", "--epochs", "1",
                    "--weight-decay", "0.001"]
    assert cli.main(argv + ["--save", "local.npz"]) == 0
    local_out = capsys.readouterr().out
    rc, out, _ = mpirun(2, "-m", "fastbp", *argv, "--distributed", "--save", tmp_path / "dist.npz",
                        cwd=tmp_path)
    assert rc == 0, out
    lines = [ln for ln in out.splitlines() if ln.startswith(("epoch", "done", "MultiLayer"))]
    def shape(text):  # the lines without their times
        return [ln.split(" in ")[0] if ln.startswith("done") else ln.rsplit("  ", 1)[0]
                for ln in text]
    assert shape(lines[1:]) == shape(local_out.splitlines()[1:])
    assert lines[0].startswith("MultiLayerNet 784-30-10, momentum lr 0.01, float64")
    assert "data-parallel on 2 MPI ranks" in lines[0] and out.count("epoch 1/1") == 1
    with np.load(tmp_path / "local.npz") as a, np.load(tmp_path / "dist.npz") as b:
        for k in a.files:
            if k.startswith("__"):
                continue
            np.testing.assert_allclose(b[k], a[k], rtol=1e-8, atol=1e-12, err_msg=k)


@needs_mpi
def test_distributed_checkpoint_resume_and_refusals(tmp_path):
    ck = tmp_path / "ck.npz"
    # batch normalization: each rank normalizes its shard; the running statistics are
    # averaged over the ranks before every evaluation and saved with the network
    args = ["-m", "fastbp", *TRAIN, "--net", "multi", "--batchnorm", "--distributed",
            "--checkpoint", ck, "--timeout", 30]
    rc, out, _ = mpirun(2, *args, "--iters", 60, cwd=tmp_path)
    assert rc == 0, out
    assert out.count("epoch 1/2 ") == 1 and out.count("epoch 2/2 (10 it)") == 1
    rc, out, _ = mpirun(2, *args, "--iters", 100, "--resume", cwd=tmp_path)
    assert rc == 0, out
    assert "resumed from" in out and "epoch 1/" not in out and out.count("epoch 2/2 ") == 1
    acc = float(out.split("test acc ")[-1].split()[0])
    assert acc > 0.8, out
    with np.load(ck, allow_pickle=False) as z:
        assert int(z["meta/iteration"]) == 100 and "net/running_mean1" in z.files
    # a checkpoint of another run's batches is refused, not silently mixed in
    rc, out, _ = mpirun(2, *args, "--iters", 100, "--resume", "--batch-size", "50", cwd=tmp_path)
    assert rc != 0 and out.count("fastbp: error: batch_size: the checkpoint") == 1, out
    assert "Traceback" not in out
    # state the optimizer does not declare: refused, naming the file and the key
    with np.load(ck) as z:
        arrays = dict(z)
    arrays["opt/lr"] = np.array(0.0)
    np.savez(tmp_path / "bad.npz", **arrays)
    rc, out, _ = mpirun(2, *args[:-4], "--checkpoint", tmp_path / "bad.npz", "--resume",
                        "--iters", 100, cwd=tmp_path)
    assert rc != 0 and "bad.npz: unexpected opt/lr" in out and "Traceback" not in out, out


@needs_mpi
def test_distributed_command_line_errors_are_one_line(tmp_path):
    rc, out, _ = mpirun(2, "-m", "fastbp", "train", "--distributed", "--lr", "nan", cwd=tmp_path)
    assert rc != 0
    assert out.count("fastbp: error: argument --lr: expected a positive number, got 'nan'") == 1
    assert "Traceback" not in out and "epoch" not in out
    rc, out, _ = mpirun(2, "-m", "fastbp", *TRAIN, "--distributed", "--data-dir", "missing",
                        cwd=tmp_path)
    assert rc != 0 and out.count("fastbp: error: MNIST data directory") == 1, out
    assert "Traceback" not in out


@needs_mpi
@pytest.mark.mnist
@pytest.mark.skipif(not FULL_DIR, reason="needs FASTBP_DATA (the full MNIST)")
def test_full_mnist_under_mpirun_rank_0_loads_and_broadcasts(tmp_path):
    rc, out, _ = mpirun(2, "-m", "fastbp", "train", "--distributed", "--data-dir", FULL_DIR,
                        "--iters", 100, "--seed", 0, "--timeout", 60, "--no-plot",
                        timeout=120, cwd=tmp_path)
    assert rc == 0, out
    assert "TwoLayerNet 784-50-10" in out and "(1 epoch of 600)" in out
    assert out.count("epoch 1/1 (100 it)") == 1, out  # 100 of the 600 iterations of an epoch
    acc = float(out.split("test acc ")[1].split()[0])
    assert acc > 0.7, out
