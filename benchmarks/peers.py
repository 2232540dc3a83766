"""Peer contenders of a training step: PyTorch eager and JAX ``jit``, for every step of
``fastbp.bench.cases.STEPS`` (the fully connected networks and the book's CNNs).

Plug-ins for ``cases.step_case(extra=PEERS)``, used by ``compare.py`` and the
pytest-benchmark suite. Neither library is a dependency of fastbp: a peer that is not
installed raises ``Unavailable`` and is skipped with that reason.

Each maker is ``make(step, init, x, t, threads=None, lr=0.1, masks=None)`` and returns
``(run, params_of)``: ``run()`` is one SGD step, from the case's initial parameters
``init`` (the same values as the book's and fastbp's), on the batch ``(x, t)``, of the
same network written with the library's own operations; ``params_of(run())`` gives the
parameters back as NumPy arrays named like the book's, for the check against the book's
step before timing (``cases.step_case``: every parameter's update to the dtype's
rounding). DeepConvNet's dropout (the book's: not inverted) multiplies by ``masks``,
given as inputs like the batch: drawing them is a negligible part of the step, and the
same masks make the check possible.
"""
import numpy as np

from fastbp.bench.cases import Unavailable

__all__ = ["PEERS", "torch_step", "jax_step", "layout", "preload"]


def layout(step):
    """The network of ``step`` as a list of operations, in order: ``("affine", i)``,
    ``("conv", i, pad)``, ``("relu",)``, ``("pool",)`` (2x2, stride 2),
    ``("dropout", j)`` (multiply by ``masks[j]``); ``i`` numbers the parameters."""
    if step.kind == "mlp":
        ops = []
        for i in range(1, len(step.sizes)):
            ops += [("affine", i), ("relu",)]
        return ops[:-1]
    if step.name == "SimpleConvNet":
        return [("conv", 1, 0), ("relu",), ("pool",), ("affine", 2), ("relu",), ("affine", 3)]
    if step.name == "DeepConvNet":
        ops = []
        for i, pad in enumerate((1, 1, 1, 2, 1, 1), 1):
            ops += [("conv", i, pad), ("relu",)] + ([("pool",)] if i % 2 == 0 else [])
        return ops + [("affine", 7), ("relu",), ("dropout", 0), ("affine", 8), ("dropout", 1)]
    raise Unavailable(f"no peer network for {step.name}")


def _import(module, what):
    try:
        return __import__(module)
    except Exception as exc:   # ImportError, or a broken install
        raise Unavailable(f"{what} is not installed ({type(exc).__name__}: {exc})") from None


def torch_step(step, init, x, t, threads=None, lr=0.1, masks=None):
    """PyTorch eager: ``F.conv2d``, ``F.max_pool2d``, ``F.relu``, ``h @ W + b``,
    ``F.cross_entropy``, ``backward`` and ``torch.optim.SGD``, with ``threads``
    intra-op threads (oneDNN's convolutions in float32)."""
    torch = _import("torch", "PyTorch")
    import torch.nn.functional as F
    if threads:
        torch.set_num_threads(int(threads))
    ops = layout(step)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    opt = torch.optim.SGD(list(params.values()), lr=lr)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))
    mt = [torch.from_numpy(m.astype(x.dtype)) for m in masks] if masks is not None else []

    def forward(h):
        for op in ops:
            if op[0] == "affine":
                h = torch.addmm(params[f"b{op[1]}"], h.reshape(h.shape[0], -1), params[f"W{op[1]}"])
            elif op[0] == "conv":
                h = F.conv2d(h, params[f"W{op[1]}"], params[f"b{op[1]}"], padding=op[2])
            elif op[0] == "relu":
                h = F.relu(h)
            elif op[0] == "pool":
                h = F.max_pool2d(h, 2, 2)
            else:
                h = h * mt[op[1]]
        return h

    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(xt), tt).backward()
        opt.step()
        return params

    def params_of(p):
        return {k: v.detach().numpy() for k, v in p.items()}
    return run, params_of


def jax_step(step, init, x, t, threads=None, lr=0.1, masks=None):
    """JAX ``jit``: the whole step (``lax.conv_general_dilated``, ``reduce_window``,
    ``jax.grad`` and the SGD update) compiled into one call, the parameters donated so
    that XLA updates them in place.

    float64 needs ``jax_enable_x64``, which this turns on for the process (it only
    changes JAX's default dtypes). XLA runs on a thread pool of its own, whose size is
    fixed when JAX starts: ``threads`` cannot change it (``XLA_FLAGS`` can, before).
    """
    jax = _import("jax", "JAX")
    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    ops = layout(step)

    def loss(params, xb, tb, mb):
        h = xb
        for op in ops:
            if op[0] == "affine":
                h = h.reshape(h.shape[0], -1) @ params[f"W{op[1]}"] + params[f"b{op[1]}"]
            elif op[0] == "conv":
                h = lax.conv_general_dilated(h, params[f"W{op[1]}"], (1, 1),
                                             [(op[2], op[2])] * 2,
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
                h = h + params[f"b{op[1]}"][None, :, None, None]
            elif op[0] == "relu":
                h = jax.nn.relu(h)
            elif op[0] == "pool":
                h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            else:
                h = h * mb[op[1]]
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, tb[:, None], axis=1))

    def sgd_step(params, xb, tb, mb):
        grads = jax.grad(loss)(params, xb, tb, mb)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)

    step_jit = jax.jit(sgd_step, donate_argnums=0)
    xd, td = jnp.asarray(x), jnp.asarray(t.astype(np.int32))
    md = [jnp.asarray(m.astype(x.dtype)) for m in masks] if masks is not None else []
    state = [{k: jnp.array(v) for k, v in init.items()}]   # copies: init is shared

    def run():
        state[0] = step_jit(state[0], xd, td, md)
        jax.block_until_ready(state[0])   # time the work, not its dispatch
        return state[0]

    def params_of(params):
        return {k: np.asarray(v) for k, v in params.items()}
    return run, params_of


PEERS = {"torch": torch_step, "jax": jax_step}


def preload():
    """Import the peers that are installed, before the thread pools are pinned
    (threadpoolctl limits the pools loaded when it is entered)."""
    for module in ("torch", "jax"):
        try:
            __import__(module)
        except Exception:   # not installed: its contender is skipped with the reason
            pass
