"""Fuzz worker: throw random, often malformed, inputs at every kernel, in a child process.

Run as ``python _fuzz_worker.py SEED CASES``. Case ``i`` is rebuilt from
``default_rng([SEED, i])`` alone, so any case can be replayed:
``python _fuzz_worker.py SEED CASES --only I``. Before each call the worker prints
``CASE seed i kernel backend: <inputs>`` and flushes, so when the process dies from a
signal the parent can name the input that killed it; faulthandler adds the stack.

Exit status: 0 when every call returned or raised ValueError/TypeError/RuntimeError
(also MemoryError for absurd sizes); 3 on any other exception or on a write to an input;
negative when a signal (a segfault) killed the process.
"""
import faulthandler
import sys
import traceback
import warnings

import numpy as np

faulthandler.enable()
# a complex input silently cast to real is a wrong answer, not a warning
warnings.simplefilter("error", np.exceptions.ComplexWarning)

from fastbp import kernels  # noqa: E402
from fastbp.kernels._checks import KERNELS  # noqa: E402  every kernel has a case below

MODULES = [("numpy", kernels._numpy)]
if kernels.HAVE_CYTHON:
    MODULES.append(("cython", kernels._cython))

# Arguments a kernel updates in place by contract (by position): the parameter and the
# optimizer state, batch normalization's running statistics. Every other input must
# come back unchanged.
IN_PLACE = {"sgd_update": {0}, "momentum_update": {0, 2}, "nesterov_update": {0, 2},
            "adagrad_update": {0, 2}, "rmsprop_update": {0, 2}, "adam_update": {0, 2, 3},
            "batchnorm_forward": {3, 4}, "affine_backward_sgd": {2, 3}}

DTYPES = [np.float64, np.float32, np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_,
          np.float16, np.complex128, object, np.intp, ">f8", "<U2"]
CLEAN = (ValueError, TypeError, RuntimeError, MemoryError)


def shape(rng, nd=None):
    nd = int(rng.integers(0, 4)) if nd is None else nd
    dims = rng.choice([0, 1, 2, 3, 5, 7, 64], size=nd, p=[.1, .2, .2, .2, .1, .1, .1])
    return tuple(int(d) for d in dims)


def array(rng, shp=None, dtype=None):
    shp = shape(rng) if shp is None else shp
    dtype = np.dtype(DTYPES[rng.integers(len(DTYPES))] if dtype is None else dtype)
    kind = rng.integers(5)
    vals = np.asarray(rng.standard_normal(shp) * 10.0 ** rng.integers(-3, 40))
    if kind == 0 and vals.size:
        vals.flat[rng.integers(vals.size)] = rng.choice([np.nan, np.inf, -np.inf, -0.0])
    with np.errstate(all="ignore"):
        if dtype.kind in "US":
            a = vals.astype(dtype)
        elif dtype.kind in "iub":
            a = np.clip(np.nan_to_num(vals), -100, 100).astype(dtype)
        else:
            a = vals.astype(dtype)
    return layout(rng, np.asarray(a, dtype=dtype))


def layout(rng, a):
    k = rng.integers(8)
    if not isinstance(a, np.ndarray):
        return a
    if k == 1:
        return np.asfortranarray(a)
    if k == 2 and a.ndim:
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if k == 3:
        a = a.copy()
        a.flags.writeable = False
        return a
    if k == 4 and a.size and a.dtype.kind in "fc":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if k == 5 and a.ndim:
        return a[::-1]
    if k == 6 and a.dtype.kind in "fiub" and a.size < 50:
        return a.tolist()
    return a


def labels(rng, n, c):
    k = rng.integers(6)
    if k == 0:
        return rng.integers(-2, c + 3, size=n).astype(np.intp)           # out of range, fast path
    if k == 1:
        return rng.integers(-2, c + 3, size=max(n + rng.integers(-1, 2), 0))  # wrong length
    if k == 2:
        return rng.choice([0.0, 0.5, np.nan, np.inf, -1.0, 1e30, float(max(c - 1, 0))], size=n)
    if k == 3:
        return array(rng, (n, c))                                         # one-hot, any dtype
    if k == 4:
        return array(rng)                                                 # anything
    return rng.integers(0, max(c, 1), size=n).astype(rng.choice([np.intp, np.int32, np.uint8]))


def out_for(rng, like):
    """An out= buffer: mostly right, sometimes wrong in shape, dtype, layout or aliasing."""
    k = rng.integers(8)
    if like is None or k < 3:
        return None
    like = np.asarray(like)
    if k == 3:
        return np.empty(like.shape, like.dtype)
    if k == 4:
        return np.empty(shape(rng), like.dtype)
    if k == 5:
        return np.empty(like.shape, rng.choice([np.float32, np.float64, np.int64]))
    if k == 6 and like.ndim:
        return np.empty(like.shape, like.dtype, order="F")
    return array(rng, like.shape, like.dtype)  # maybe read-only, strided...


def case(seed, i):
    """(kernel name, args, kwargs) for case i: rebuilt from the seed alone."""
    rng = np.random.default_rng([seed, i])
    name = KERNELS[i % len(KERNELS)]
    n, c = int(rng.integers(0, 6)), int(rng.integers(0, 6))
    fit = rng.random() < 0.6   # mostly consistent shapes, so the loops really run
    if name == "relu_forward":
        x = array(rng)
        return name, (x,), {"out": out_for(rng, x)}
    if name == "relu_backward":
        d = array(rng)
        m = (np.asarray(np.asarray(d, float) <= 0) if fit and not isinstance(d, list) and np.asarray(d).dtype.kind in "fiub"
             else array(rng, dtype=rng.choice([np.bool_, np.int8])))
        return name, (d, layout(rng, m)), {"out": out_for(rng, d)}
    if name == "sigmoid_forward":
        x = array(rng)
        return name, (x,), {"out": out_for(rng, x)}
    if name == "sigmoid_backward":
        d = array(rng)
        y = array(rng, np.shape(d) if fit else None)
        return name, (d, y), {"out": out_for(rng, d)}
    if name == "bias_grad":
        d = array(rng, (n, c) if fit else None)
        return name, (d,), {"out": out_for(rng, np.zeros(c))}
    if name == "affine_backward":
        dd = int(rng.integers(0, 6))
        d = array(rng, (n, c) if fit else None)
        x = array(rng, (n, dd) if fit else None)
        W = array(rng, (dd, c) if fit else None)
        return name, (d, x, W), {"need_dx": bool(rng.integers(2))}
    if name == "softmax_cross_entropy":
        x = array(rng, (n, c) if fit else None)
        return name, (x, labels(rng, n, c)), {"out": out_for(rng, np.zeros((n, c)))}
    if name == "softmax_cross_entropy_backward":
        y = array(rng, (n, c) if fit else None)
        dout = rng.choice([1.0, 0.5, np.nan, -3.0])
        return name, (y, labels(rng, n, c), dout), {"out": out_for(rng, np.zeros((n, c)))}
    if name.endswith("_update"):
        n_state = {"sgd_update": 0, "adam_update": 2}.get(name, 1)
        n_hyper = {"sgd_update": 1, "momentum_update": 2, "nesterov_update": 2,
                   "adagrad_update": 2, "rmsprop_update": 3, "adam_update": 4}[name]
        if fit:  # what the optimizers pass: writable C arrays of the parameter's dtype
            dtype = rng.choice([np.float64, np.float32])
            shp = shape(rng)
            p = np.asarray(rng.standard_normal(shp), dtype=dtype)
            state = [np.asarray(np.abs(rng.standard_normal(shp)), dtype=dtype) for _ in range(n_state)]
            hyper = [float(rng.choice([0.1, 0.9, 0.999, 1e-7])) for _ in range(n_hyper)]
            return name, (p, array(rng, shp), *state, *hyper), {}
        p = array(rng, dtype=rng.choice([np.float64, np.float32, np.float16, np.int64]))
        shp = np.shape(p)
        state = [array(rng, shp) for _ in range(n_state)]
        hyper = [hyperparameter(rng) for _ in range(n_hyper)]
        return name, (p, array(rng, shp), *state, *hyper), {}
    if name == "dropout_forward":
        x = array(rng)
        u = array(rng, np.shape(x) if fit else None)
        return name, (x, u, hyperparameter(rng), hyperparameter(rng)), {"out": out_for(rng, x)}
    if name == "dropout_backward":
        d = array(rng)
        m = array(rng, np.shape(d) if fit else None, np.bool_ if fit else None)
        return name, (d, m, hyperparameter(rng)), {"out": out_for(rng, d)}
    if name in ("batchnorm_forward", "batchnorm_inference"):
        x = array(rng, (n, c) if fit else None)
        n_hyper = 2 if name == "batchnorm_forward" else 1
        if fit:  # gamma, beta any layout; running statistics writable, in x's float dtype
            dtype = np.asarray(x).dtype if np.asarray(x).dtype in (np.float32, np.float64) else np.float64
            vecs = [array(rng, (c,)), array(rng, (c,)), np.zeros(c, dtype), np.ones(c, dtype)]
            hyper = [float(rng.choice([0.9, 1e-6, 0.5])) for _ in range(n_hyper)]
        else:
            vecs = [array(rng) for _ in range(4)]
            hyper = [hyperparameter(rng) for _ in range(n_hyper)]
        return name, (x, *vecs, *hyper), {"out": out_for(rng, x)}
    if name == "batchnorm_backward":
        d = array(rng, (n, c) if fit else None)
        xn = array(rng, (n, c) if fit else None)
        std, gamma = array(rng, (c,) if fit else None), array(rng, (c,) if fit else None)
        return name, (d, xn, std, gamma), {"out": out_for(rng, d)}
    if name == "affine_forward":
        dd = int(rng.integers(0, 6))
        x = array(rng, (n, dd) if fit else None)
        W = array(rng, (dd, c) if fit else None)
        b = array(rng, (c,) if fit else None)
        return name, (x, W, b), {"out": out_for(rng, np.zeros((n, c)))}
    if name == "affine_backward_sgd":
        dd = int(rng.integers(0, 6))
        d = array(rng, (n, c) if fit else None)
        x = array(rng, (n, dd) if fit else None)
        if fit:  # what train_step passes: the parameters, writable, in one float dtype
            dtype = rng.choice([np.float64, np.float32])
            W = np.asarray(rng.standard_normal((dd, c)), dtype=dtype)
            b = np.asarray(rng.standard_normal(c), dtype=dtype)
        else:
            W, b = array(rng), array(rng)
        return name, (d, x, W, b, hyperparameter(rng)), {"decay": hyperparameter(rng),
                                                         "need_dx": bool(rng.integers(2))}
    if name in ("im2col", "col2im", "maxpool_forward", "maxpool_backward"):
        image = tuple(int(v) for v in rng.integers(0, 6, 4))
        fh, fw, stride, pad = (window(rng) for _ in range(4))
        if fit:
            fh, fw, stride, pad = (int(v) for v in (*rng.integers(1, 4, 3), rng.integers(0, 2)))
        if name == "im2col":
            x = array(rng, image if fit else None)
            return name, (x, fh, fw, stride, pad), {}
        if name == "maxpool_forward":
            x = array(rng, image if fit else None)
            return name, (x, fh, fw, stride, pad), {}
        oh, ow = ((image[2] + 2 * pad - fh) // stride + 1, (image[3] + 2 * pad - fw) // stride + 1) \
            if fit and stride > 0 else (1, 1)
        rows = image[0] * max(oh, 0) * max(ow, 0)
        shape_arg = image if fit else tuple(window(rng) for _ in range(int(rng.integers(2, 6))))
        if name == "col2im":
            col = array(rng, (rows, image[1] * fh * fw) if fit else None)
            return name, (col, shape_arg, fh, fw, stride, pad), {}
        d = array(rng, (image[0], image[1], max(oh, 0), max(ow, 0)) if fit else None)
        span = fh * fw if fit else 4
        arg = rng.integers(-1, span + 1, size=np.size(d)).astype(np.intp)
        return name, (d, layout(rng, arg), shape_arg, fh, fw, stride, pad), {}
    if name == "conv_bias_grad":
        d = array(rng, tuple(int(v) for v in rng.integers(0, 5, 4)) if fit else None)
        return name, (d,), {"out": out_for(rng, np.zeros(np.shape(d)[1] if np.ndim(d) == 4 else 1))}
    if name in ("conv_forward", "conv_backward"):
        image = tuple(int(v) for v in rng.integers(0, 5, 4))
        fn, fh, fw = (int(v) for v in rng.integers(1, 4, 3))
        stride, pad = (int(rng.integers(1, 3)), int(rng.integers(0, 2))) if fit else \
            (window(rng), window(rng))
        x = array(rng, image if fit else None)
        W = array(rng, (fn, image[1], fh, fw) if fit else None)
        if name == "conv_forward":
            b = array(rng, (fn,) if fit else None)
            return name, (x, W, b, stride, pad), {}
        oh = (image[2] + 2 * pad - fh) // stride + 1 if fit else 1
        ow = (image[3] + 2 * pad - fw) // stride + 1 if fit else 1
        d = array(rng, (image[0], fn, max(oh, 0), max(ow, 0)) if fit else None)
        return name, (d, x, W, stride, pad), {"need_dx": bool(rng.integers(2))}
    if name in ("maxpool2_forward", "relu_maxpool2_forward"):
        x = array(rng, tuple(int(v) for v in rng.integers(0, 7, 4)) if fit else None)
        shp = np.shape(x)
        return name, (x,), {"out": out_for(rng, np.zeros((*shp[:2], shp[2] // 2, shp[3] // 2))
                                           if len(shp) == 4 else None)}
    if name == "maxpool2_backward":
        image = tuple(int(v) for v in rng.integers(0, 7, 4))
        pooled = (*image[:2], image[2] // 2, image[3] // 2)
        d = array(rng, pooled if fit else None)
        index = rng.integers(0, 6, size=pooled).astype(np.uint8) if fit else array(rng)
        shape_arg = image if fit else tuple(window(rng) for _ in range(int(rng.integers(2, 6))))
        return name, (d, layout(rng, index), shape_arg), {"out": out_for(rng, np.zeros(image))}
    raise AssertionError(f"{name}: no fuzz case (add one when adding a kernel)")


def window(rng):
    """A window size, stride or pad: mostly sensible, sometimes zero, negative, huge or not an int."""
    return rng.choice(np.array([1, 2, 3, 0, -1, 2 ** 31, 2.5, "2", None], dtype=object),
                      p=[.3, .2, .2, .06, .06, .06, .06, .03, .03])


def hyperparameter(rng):
    """A scalar hyperparameter: mostly sensible, sometimes NaN, huge, negative or not a number."""
    return rng.choice(np.array([0.1, 0.9, 0.999, 1e-7, 0.5, 0.0, -1.0, np.nan, np.inf, 1e300,
                                "x", None, True], dtype=object))


def describe(args, kwargs):
    def one(a):
        if isinstance(a, np.ndarray):
            flags = "".join(f for f, on in (("C", a.flags.c_contiguous), ("F", a.flags.f_contiguous),
                                          ("ro", not a.flags.writeable), ("unal", not a.flags.aligned)) if on)
            return f"ndarray(shape={a.shape}, dtype={a.dtype}, flags={flags}, strides={a.strides})"
        if isinstance(a, list):
            return f"list(shape={np.shape(a)})"
        return repr(a)
    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()])


def snapshot(args, in_place=()):
    return [a.copy() if isinstance(a, np.ndarray) and i not in in_place else None
            for i, a in enumerate(args)]


def unchanged(before, args):
    for b, a in zip(before, args):
        if b is None:
            continue
        if b.dtype == object:
            if not all(p is q for p, q in zip(b.flat, a.flat)):
                return False
        elif b.tobytes() != a.tobytes():
            return False
    return True


def main(argv):
    seed, cases = int(argv[1]), int(argv[2])
    only = int(argv[4]) if len(argv) > 4 and argv[3] == "--only" else None
    for i in range(cases) if only is None else [only]:
        name, args, kwargs = case(seed, i)
        for backend, mod in MODULES:
            print(f"CASE {seed} {i} {name} {backend}: {describe(args, kwargs)}", flush=True)
            kw = {k: (v.copy() if isinstance(v, np.ndarray) and v.flags.writeable else v)
                  for k, v in kwargs.items()}
            before = snapshot(args, IN_PLACE.get(name, ()))
            try:
                with np.errstate(all="ignore"):
                    getattr(mod, name)(*args, **kw)
            except CLEAN:
                pass
            except BaseException:
                print(f"UNCLEAN EXCEPTION in case {seed} {i} {name} {backend}", flush=True)
                traceback.print_exc()
                return 3
            if not unchanged(before, args):
                print(f"INPUT CHANGED in case {seed} {i} {name} {backend}", flush=True)
                return 3
    print("OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
