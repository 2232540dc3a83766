"""Peer contenders of a training step: PyTorch eager and JAX ``jit``.

Plug-ins for ``fastbp.bench.cases.step_case(peers=PEERS)``, used by the pytest-benchmark
suite and by ``fastbp bench --peers`` (which loads this file from the source tree).
Neither library is a dependency of fastbp: a peer that is not installed raises
``Unavailable`` and its benchmarks skip with that reason.

Each maker is ``make(sizes, init, x, t, threads=None, lr=0.1)`` and returns
``(step, params_of)``: ``step()`` runs one SGD step from the case's initial parameters
``init`` (the same arrays as the book's and fastbp's) on the batch ``(x, t)``, and
``params_of(step())`` gives the parameters back as NumPy arrays named like the book's
(``W1``, ``b1``, ...), for the check against the book before timing.
"""
import numpy as np

from fastbp.bench.cases import Unavailable

__all__ = ["PEERS", "torch_step", "jax_step", "preload"]


def _import(module, what):
    try:
        return __import__(module)
    except Exception as exc:   # ImportError, or a broken install
        raise Unavailable(f"{what} is not installed ({type(exc).__name__}: {exc})") from None


def torch_step(sizes, init, x, t, threads=None, lr=0.1):
    """PyTorch eager: ``nn.Linear``/``nn.ReLU`` in ``nn.Sequential``, ``F.cross_entropy``,
    ``backward`` and ``torch.optim.SGD``, with ``threads`` intra-op threads."""
    torch = _import("torch", "PyTorch")
    import torch.nn.functional as F
    if threads:
        torch.set_num_threads(int(threads))
    tdt = torch.float32 if x.dtype == np.float32 else torch.float64
    mods = []
    for i in range(1, len(sizes)):
        lin = torch.nn.Linear(sizes[i - 1], sizes[i]).to(tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(init[f"W{i}"].T)))
            lin.bias.copy_(torch.from_numpy(init[f"b{i}"]))
        mods += [lin, torch.nn.ReLU()]
    model = torch.nn.Sequential(*mods[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt = torch.from_numpy(x)
    tt = torch.from_numpy(t.astype(np.int64))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(xt), tt)
        loss.backward()
        opt.step()
        return model

    def params_of(model):
        out = {}
        for i, lin in enumerate(m for m in model if isinstance(m, torch.nn.Linear)):
            out[f"W{i + 1}"] = lin.weight.detach().numpy().T
            out[f"b{i + 1}"] = lin.bias.detach().numpy()
        return out
    return step, params_of


def jax_step(sizes, init, x, t, threads=None, lr=0.1):
    """JAX ``jit``: the whole step (the batch gather ``x_all[idx]`` included, as a JAX
    training loop runs it with the data already on the device) compiled into one call,
    the parameters donated so XLA updates them in place.

    float64 needs ``jax_enable_x64``, which this turns on for the process (it only
    changes JAX's default dtypes). XLA runs on a thread pool of its own, whose size is
    fixed when JAX starts: ``threads`` cannot change it (``XLA_FLAGS`` can, before).
    """
    jax = _import("jax", "JAX")
    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    n_layers = len(sizes) - 1

    def loss(params, xb, tb):
        h = xb
        for i in range(1, n_layers + 1):
            h = h @ params[f"W{i}"] + params[f"b{i}"]
            if i < n_layers:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, tb[:, None], axis=1))

    def sgd_step(params, x_all, t_all, idx):
        grads = jax.grad(loss)(params, x_all[idx], t_all[idx])
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)

    step_jit = jax.jit(sgd_step, donate_argnums=0)
    x_all, t_all = jnp.asarray(x), jnp.asarray(t.astype(np.int32))
    idx = jnp.arange(x.shape[0], dtype=jnp.int32)     # the batch: the case's rows
    state = [{k: jnp.array(v) for k, v in init.items()}]   # copies: init is shared

    def step():
        state[0] = step_jit(state[0], x_all, t_all, idx)
        jax.block_until_ready(state[0])   # time the work, not its dispatch
        return state[0]

    def params_of(params):
        return {k: np.asarray(v) for k, v in params.items()}
    return step, params_of


PEERS = {"torch": torch_step, "jax": jax_step}


def preload():
    """Import the peers that are installed, before the benchmark sets the thread pools
    (threadpoolctl limits the pools loaded when it is entered)."""
    for module in ("torch", "jax"):
        try:
            __import__(module)
        except Exception:   # not installed: its contender is skipped with the reason
            pass
