"""Argument checks shared by both backends.

Both kernel modules call these functions for anything that is not already a
C-contiguous float32/float64 ndarray, so a bad argument gets the same exception and
the same message whichever backend runs.

The dtype rule, once for the whole library:
- float32 and float64 are native; results keep the input dtype.
- integer and bool arrays are converted to float64 (what NumPy's own arithmetic on
  them gives for ``exp`` or true division); float32/float64 in non-native byte order
  are converted to native order.
- float16, complex, object, string and every other dtype raise ``TypeError``.
- When two float arguments meet (``dout`` and a saved output, say), the result has
  NumPy's promoted dtype: float32 with float64 gives float64.
"""
import numpy as np

NATIVE = (np.dtype(np.float32), np.dtype(np.float64))

#: The kernels both twins define, with one name, signature and docstring each; both
#: modules build their ``__all__`` from it, and the parity test reads it.
KERNELS = (
    "relu_forward",
    "relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "bias_grad",
    "affine_forward",
    "affine_backward",
    "affine_backward_sgd",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "sgd_update",
    "momentum_update",
    "nesterov_update",
    "adagrad_update",
    "rmsprop_update",
    "adam_update",
    "dropout_forward",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_inference",
    "batchnorm_backward",
    "im2col",
    "col2im",
    "maxpool_forward",
    "maxpool_backward",
    "conv_bias_grad",
    "conv_forward",
    "conv_backward",
    "maxpool2_forward",
    "maxpool2_backward",
    "relu_maxpool2_forward",
)


def _describe(a):
    return f"dtype {a.dtype}" if isinstance(a, np.ndarray) else f"type {type(a).__name__}"


def float_dtype(name, a):
    """The native dtype that ``a`` is computed in, or ``TypeError``."""
    dt = a.dtype
    if dt in NATIVE:
        return dt
    if dt.kind in "iub":
        return np.dtype(np.float64)
    if dt.kind == "f" and dt.itemsize in (4, 8) and not dt.isnative:
        return dt.newbyteorder("=")
    raise TypeError(
        f"{name}: expected a float32 or float64 array (integer and bool arrays are "
        f"converted to float64), got dtype {dt}"
    )


def as_array(name, a):
    """``a`` as an ndarray, refusing things NumPy would turn into object arrays."""
    if isinstance(a, np.ndarray):
        return a
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name}: expected an array, got {_describe(a)} ({exc})") from None
    if arr.dtype.kind in "OSUV":
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got {_describe(a)} "
            f"holding dtype {arr.dtype}"
        )
    return arr


def float_array(name, a, dtype=None):
    """``a`` as a C-contiguous array of a native float dtype.

    ``dtype`` forces the result's dtype (used when several arguments are promoted to a
    common one); it must be float32 or float64. Copies only when it has to.
    """
    a = as_array(name, a)
    dt = float_dtype(name, a)  # refuses complex, float16, ... even when dtype is given
    if dtype is not None:
        dt = dtype
    # asarray keeps a 0-d array 0-d (ascontiguousarray would make it 1-d); the compiled
    # loops read through typed pointers, so an unaligned buffer is copied too.
    arr = np.asarray(a, dtype=dt, order="C")
    return arr if arr.flags.aligned else arr.copy()


def real_scalar(name, value):
    """A real number (Python or NumPy, or a 0-d real array) as a Python float; None, a
    string, complex, bool or array of any other shape (a one-element list too) is refused.

    Every hyperparameter of every kernel (``lr``, ``momentum``, ``eps``, ``ratio``,
    ``scale``, ``dout`` of the softmax backward, ...) goes through this on both backends.
    NaN and inf are real numbers: they are accepted, and give what the formulas give.
    """
    if type(value) is float or type(value) is int:
        return float(value)
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected a real number, got {_describe(value)}")
    a = as_array(name, value)
    if a.ndim != 0:
        raise ValueError(f"{name}: expected a real scalar, got shape {a.shape}")
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected a real number, got dtype {a.dtype}")
    return float(a)


def common_dtype(*pairs):
    """NumPy's promoted dtype of several (name, array) float arguments."""
    return np.result_type(*(float_dtype(name, as_array(name, a)) for name, a in pairs))


def check_same_shape(name, a, expected_name, shape):
    if a.shape != shape:
        raise ValueError(
            f"{name}: expected shape {shape} (the shape of {expected_name}), got {a.shape}"
        )


def check_out(name, out, shape, dtype):
    """An ``out=`` buffer must be writable as it is: no silent copy is ever made."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected an ndarray, got {_describe(out)}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got dtype {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous to be written in place")
    if not out.flags.aligned:  # the compiled loops write through typed pointers
        raise ValueError(f"{name}: must be aligned to its dtype to be written in place")
    if not out.flags.writeable:
        raise ValueError(f"{name}: is read-only")
    return out


# --------------------------------------------------------------------------- overlap
#
# The rule, for every kernel that writes into arrays the caller passes (``out=``,
# ``dW_out=``, ``db_out=``, an optimizer's parameter and state, batch normalization's
# running statistics):
#
# 1. Arrays a kernel writes never share memory with one another.
# 2. An array it writes either shares no memory with an input it reads, or is exactly
#    that input (same start, shape and dtype): then the result is as if every input were
#    read before anything is written (``relu_forward(x, out=x)``, an in-place update).
# 3. Anything else (``out=buf[1:]`` with ``x=buf[:-1]``, a shift by a row, a 1-D output
#    inside a 2-D input) is a ValueError naming both arguments.
#
# Inputs are checked after the boundary conversion: an input that is converted or copied
# there (strided, Fortran-ordered, another dtype, ...) is a fresh array, read before any
# write, so it may overlap an output in any way. What is left are C-contiguous arrays,
# whose memory is one interval: np.may_share_memory's bounds test is then exact, and
# costs O(1), whatever the sizes.

def _exactly(a, b):
    """Both C-contiguous: the same elements at the same addresses."""
    return (a.shape == b.shape and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def apart(written, read=()):
    """Apply the overlap rule to ``written`` and ``read``, lists of ``(name, array)``
    (None entries are skipped). Raises ValueError on the first pair that breaks it, in
    the order given (written against earlier written, then against each input).

    Returns the names of the inputs that are exactly a written array: a kernel that
    would overwrite such an input before its last read copies it first.
    """
    same = []
    for i, (name, w) in enumerate(written):
        if w is None:
            continue
        for other, o in written[:i]:
            if o is not None and np.may_share_memory(w, o):
                raise ValueError(
                    f"{name}: shares memory with {other}, which is written too; "
                    f"pass arrays apart from each other"
                )
        for other, r in read:
            if r is not None and np.may_share_memory(w, r):
                if not _exactly(w, r):
                    raise ValueError(
                        f"{name}: overlaps {other} without being it; pass {other} itself "
                        f"to work in place, or an array apart from it"
                    )
                same.append(other)
    return same




def out_or_empty(name, out, shape, dtype, read=()):
    """A new array when ``out`` is None; else ``out`` as ``check_out`` passes it, and
    apart from the inputs ``read`` (``(name, array)`` pairs) by the overlap rule."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    out = check_out(name, out, shape, dtype)
    apart([(name, out)], read)
    return out


def mask_array(name, mask, shape):
    """A ReLU mask: a bool array of the given shape (C-contiguous copy if needed)."""
    mask = as_array(name, mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"{name}: expected a bool array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (the shape of dout), got {mask.shape}")
    return np.asarray(mask, order="C")


def affine_shapes(dout, x, W):
    """``dout`` (N, M), ``x`` (N, D), ``W`` (D, M) for the Affine gradients."""
    if W.ndim != 2:
        raise ValueError(f"W: expected a 2-D array (in, out), got shape {W.shape}")
    if x.ndim != 2 or x.shape[1] != W.shape[0]:
        raise ValueError(f"x: expected shape (N, {W.shape[0]}), got {x.shape}")
    expected = (x.shape[0], W.shape[1])
    if dout.shape != expected:
        raise ValueError(f"dout: expected shape {expected} (the forward output), got {dout.shape}")


def softmax_inputs(x, t, name="x"):
    """Check the logits (or probabilities) and targets of softmax-with-cross-entropy.

    Returns ``(x, labels, onehot)``: ``x`` as C-contiguous 2-D float (N, C), and either
    ``labels`` as C-contiguous intp (N,) (``onehot`` None) or ``onehot`` as (N, C) in
    ``x``'s dtype (``labels`` None). A 1-D ``x`` must have been reshaped by the caller.
    ``name`` is the first argument's name in messages (``"y"`` for the backward pass).
    """
    x = float_array(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (batch, classes), got shape {x.shape}")
    n, c = x.shape
    if n == 0:
        raise ValueError(f"{name}: empty batch (shape {x.shape}): the mean loss is undefined")
    if c == 0:
        raise ValueError(f"{name}: no classes (shape {x.shape})")
    labels, onehot = targets(t, n, c, x.dtype, name)
    return x, labels, onehot


def targets(t, n, c, dtype=None, name="x"):
    """Check the targets of ``n`` samples scored over ``c`` classes: integer labels (N,)
    in ``[0, c)`` (whole floats too) or one-hot targets (N, C).

    Returns ``(labels, onehot)``: ``labels`` as C-contiguous intp (N,) (``onehot``
    None) or ``onehot`` as (N, C) float of ``dtype`` (its own float dtype when None;
    ``labels`` None). ``name`` names the scores in messages. The networks call this
    before their first layer runs, the loss kernels before their loops.
    """
    t = as_array("t", t)
    if t.ndim == 2:
        if t.shape != (n, c):
            raise ValueError(
                f"t: one-hot targets must have the shape of {name} {(n, c)}, got {t.shape}"
            )
        float_dtype("t", t)
        return None, float_array("t", t, dtype)
    if t.ndim != 1:
        raise ValueError(
            f"t: expected labels of shape ({n},) or one-hot targets of shape {(n, c)}, "
            f"got shape {t.shape}"
        )
    if t.shape[0] != n:
        raise ValueError(f"t: expected {n} labels (one per row of {name}), got shape {t.shape}")
    if t.dtype.kind in "iu":
        labels = t
    elif t.dtype.kind == "f":
        if not np.isfinite(t).all():
            raise ValueError("t: float labels must hold whole numbers (class indices), got NaN or inf")
        with np.errstate(invalid="ignore"):  # huge values: refused just below
            labels = t.astype(np.intp)
        if not np.array_equal(labels, t):
            raise ValueError("t: float labels must hold whole numbers (class indices)")
    else:
        raise TypeError(f"t: expected integer class labels, got dtype {t.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(
            f"t: labels must lie in [0, {c}), got values from {labels.min()} to {labels.max()}"
        )
    labels = np.asarray(labels, dtype=np.intp, order="C")
    return labels if labels.flags.aligned else labels.copy(), None


# --------------------------------------------------------------------------- chapter 6

def param_inputs(param, grad, *state):
    """Check an in-place optimizer update: ``param`` and the state buffers must be
    writable C-contiguous float arrays of one shape and dtype (no silent copy: they are
    updated in place), apart from one another; ``grad`` is converted to ``param``'s dtype
    if needed, and may be exactly ``param`` or a state buffer (it is then copied: the
    update reads it as it was before the call).

    ``state`` holds ``(name, array)`` pairs. Returns ``grad`` as a C-contiguous array.
    """
    if not isinstance(param, np.ndarray):
        raise TypeError(f"param: expected an ndarray (it is updated in place), got type {type(param).__name__}")
    if param.dtype not in NATIVE:
        raise TypeError(f"param: expected a float32 or float64 array, got dtype {param.dtype}")
    check_out("param", param, param.shape, param.dtype)
    for name, a in state:
        check_out(name, a, param.shape, param.dtype)
    grad = float_array("grad", grad)
    check_same_shape("grad", grad, "param", param.shape)
    grad = np.asarray(grad, dtype=param.dtype, order="C")  # 0-d stays 0-d
    if apart([("param", param), *state], [("grad", grad)]):
        grad = grad.copy()
    return grad


def uniform_inputs(x, u):
    """Dropout's ``x`` and its uniform draws ``u`` (converted to ``x``'s dtype, the
    shape of ``x``)."""
    x = float_array("x", x)
    u = float_array("u", u, x.dtype)
    check_same_shape("u", u, "x", x.shape)
    return x, u


def bn_inputs(x, gamma, beta, running_mean, running_var, training):
    """``x`` (N, D) float; ``gamma``, ``beta`` (D,) in ``x``'s dtype; the running
    statistics (D,) in ``x``'s dtype: writable C-contiguous when ``training`` (they are
    updated in place), converted like any input otherwise.

    Returns ``(x, gamma, beta, running_mean, running_var)``.
    """
    x = float_array("x", x)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (batch, features), got shape {x.shape}")
    d = x.shape[1:]
    gamma = float_array("gamma", gamma, x.dtype)
    beta = float_array("beta", beta, x.dtype)
    check_same_shape("gamma", gamma, "a row of x", d)
    check_same_shape("beta", beta, "a row of x", d)
    if training:
        check_out("running_mean", running_mean, d, x.dtype)
        check_out("running_var", running_var, d, x.dtype)
    else:
        running_mean = float_array("running_mean", running_mean, x.dtype)
        running_var = float_array("running_var", running_var, x.dtype)
        check_same_shape("running_mean", running_mean, "a row of x", d)
        check_same_shape("running_var", running_var, "a row of x", d)
    return x, gamma, beta, running_mean, running_var


def affine_forward_inputs(x, W, b, out):
    """``(x, W, b, out)`` of ``out = x @ W + b``: ``x`` (N, D), ``W`` (D, M), ``b`` (M,)
    as C-contiguous arrays of one float dtype, ``out`` (N, M) or a new array, apart from
    the inputs by the overlap rule (an input that is exactly ``out`` is copied: the
    product reads it whole)."""
    dt = common_dtype(("x", x), ("W", W), ("b", b))
    x, W, b = float_array("x", x, dt), float_array("W", W, dt), float_array("b", b, dt)
    if W.ndim != 2:
        raise ValueError(f"W: expected a 2-D array (in, out), got shape {W.shape}")
    if x.ndim != 2 or x.shape[1] != W.shape[0]:
        raise ValueError(f"x: expected shape (N, {W.shape[0]}), got {x.shape}")
    if b.shape != (W.shape[1],):
        raise ValueError(f"b: expected shape ({W.shape[1]},), got {b.shape}")
    out = out_or_empty("out", out, (x.shape[0], W.shape[1]), dt)
    inputs = {"x": x, "W": W, "b": b}
    for name in apart([("out", out)], list(inputs.items())):
        inputs[name] = inputs[name].copy()
    return inputs["x"], inputs["W"], inputs["b"], out


def affine_sgd_inputs(dout, x, W, b, lr, decay):
    """Arguments of ``affine_backward_sgd``: ``W`` and ``b`` writable as they are (updated
    in place), ``dout`` and ``x`` C-contiguous in the parameters' dtype, all apart by the
    overlap rule (an input that is exactly a parameter is copied), ``lr`` and ``decay``
    real numbers."""
    if not isinstance(W, np.ndarray):
        raise TypeError(f"W: expected an ndarray (it is updated in place), got {_describe(W)}")
    if W.dtype not in NATIVE:
        float_dtype("W", W)
    check_out("W", W, W.shape, W.dtype)
    check_out("b", b, (W.shape[1],) if W.ndim == 2 else np.shape(b), W.dtype)
    inputs = {"dout": float_array("dout", dout, W.dtype), "x": float_array("x", x, W.dtype)}
    affine_shapes(inputs["dout"], inputs["x"], W)
    for name in apart([("W", W), ("b", b)], list(inputs.items())):
        inputs[name] = inputs[name].copy()
    return inputs["dout"], inputs["x"], W, b, real_scalar("lr", lr), real_scalar("decay", decay)


# --------------------------------------------------------------------------- chapter 7
# Convolution and pooling windows (im2col, col2im, max pooling): the geometry is checked
# here, once, so that the compiled loops can index without bounds checks.

def window_int(name, value, minimum):
    """A whole number >= ``minimum`` (a Python or NumPy integer; no bool, no float)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def window(filter_h, filter_w, stride, pad, names=("filter_h", "filter_w")):
    """``(filter_h, filter_w, stride, pad)`` as checked Python ints."""
    return (window_int(names[0], filter_h, 1), window_int(names[1], filter_w, 1),
            window_int("stride", stride, 1), window_int("pad", pad, 0))


def image_shape(name, shape, fh, fw, stride, pad):
    """``(N, C, H, W, out_h, out_w)`` for an (N, C, H, W) input and a window: the output
    has ``out = (H + 2 * pad - fh) // stride + 1`` rows, which must be at least one."""
    if len(shape) != 4:
        raise ValueError(f"{name}: expected a 4-D array (N, C, H, W), got shape {tuple(shape)}")
    n, c, h, w = shape
    out_h = (h + 2 * pad - fh) // stride + 1
    out_w = (w + 2 * pad - fw) // stride + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{name}: a {fh}x{fw} window with pad {pad} does not fit in an image of "
            f"{h}x{w} (shape {tuple(shape)})"
        )
    return n, c, h, w, out_h, out_w


def input_shape_arg(input_shape):
    """col2im's and the pooling backward's ``input_shape``: four non-negative ints."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape: expected a tuple (N, C, H, W), got {input_shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"input_shape: expected 4 sizes (N, C, H, W), got {shape}")
    return tuple(window_int("input_shape", s, 0) for s in shape)


def pool_window(pool_h, pool_w, stride, pad):
    """Checked pooling window; ``pad`` must be smaller than the window, so that every
    window holds at least one element of the image (padding counts as -inf)."""
    ph, pw, s, p = window(pool_h, pool_w, stride, pad, ("pool_h", "pool_w"))
    if p >= ph or p >= pw:
        raise ValueError(f"pad: expected less than the pool window {ph}x{pw}, got {p}")
    return ph, pw, s, p


def arg_max_array(arg_max, size):
    """The pooling argmax: an integer array of ``size`` window indices (the forward's
    ``arg_max``, any shape of that size) as C-contiguous 1-D intp; the range is checked
    by the caller."""
    arg_max = as_array("arg_max", arg_max)
    if arg_max.dtype.kind not in "iu":
        raise TypeError(f"arg_max: expected an integer array, got dtype {arg_max.dtype}")
    if arg_max.size != size:
        raise ValueError(
            f"arg_max: expected {size} indices (one per element of dout), got shape {arg_max.shape}"
        )
    a = np.asarray(arg_max.reshape(-1), dtype=np.intp, order="C")
    return a if a.flags.aligned else a.copy()


def arg_max_range_error(arg_max, k):
    return ValueError(
        f"arg_max: window indices must lie in [0, {k}), got values from "
        f"{arg_max.min()} to {arg_max.max()}"
    )


def conv_inputs(x, W, stride, pad, extra=(), x_name="x"):
    """The convolution kernels' arguments: ``(x, W, *extra, geometry)`` converted to
    their common dtype (C-contiguous, aligned), where ``extra`` are further ``(name,
    array)`` float inputs and the geometry is ``(N, C, H, W, FN, FH, FW, stride, pad,
    out_h, out_w)``. ``W`` (FN, C, FH, FW), ``x`` (N, C, H, W)."""
    pairs = [(x_name, x), ("W", W), *extra]
    dtype = common_dtype(*pairs)
    arrays = [float_array(name, a, dtype) for name, a in pairs]
    x, W = arrays[0], arrays[1]
    if W.ndim != 4:
        raise ValueError(f"W: expected a 4-D array (FN, C, FH, FW), got shape {W.shape}")
    fn, c, fh, fw = W.shape
    fh, fw, s, p = window(fh, fw, stride, pad, ("W.shape[2]", "W.shape[3]"))
    if x.ndim != 4 or x.shape[1] != c:
        raise ValueError(f"{x_name}: expected shape (N, {c}, H, W) (W has shape {W.shape}), "
                         f"got {x.shape}")
    n, c, h, w, oh, ow = image_shape(x_name, x.shape, fh, fw, s, p)
    return (*arrays, (n, c, h, w, fn, fh, fw, s, p, oh, ow))


def pool_index_array(index, shape):
    """The 2x2 pooling's window indices: a uint8 array of ``shape`` (C-contiguous), 0 to
    3, or 4 for a window that passes no gradient (``relu_maxpool2_forward``)."""
    index = as_array("index", index)
    if index.dtype != np.uint8:
        raise TypeError(f"index: expected a uint8 array, got dtype {index.dtype}")
    if index.shape != tuple(shape):
        raise ValueError(f"index: expected shape {tuple(shape)} (the shape of dout), "
                         f"got {index.shape}")
    if index.size and index.max() > 4:
        raise ValueError(f"index: window indices must lie in [0, 4] (4: no gradient), got up "
                         f"to {index.max()}")
    return np.ascontiguousarray(index)
