"""fastbp.optimizers: the book's update formulas, in place, on both backends."""
import inspect
import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import kernels
from fastbp.kernels import _numpy as knp
from _book_reference import optimizer as book_idiom
from fastbp.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop, get_optimizer

BACKENDS = ["numpy"] + (["cython"] if kernels.HAVE_CYTHON else [])
DTYPES = [np.float32, np.float64]
KERNELS = ["sgd_update", "momentum_update", "nesterov_update", "adagrad_update",
           "rmsprop_update", "adam_update"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastbp.use_backend(request.param):
        yield request.param


# --------------------------------------------------------------------------- the book
# The book's optimizers: tests/book_reference/common/optimizer.py, the one reference of
# the book's update formulas.


CASES = [
    (SGD, {"lr": 0.01}),
    (SGD, {"lr": 0.3}),
    (Momentum, {"lr": 0.01, "momentum": 0.9}),
    (Momentum, {"lr": 0.05, "momentum": 0.5}),
    (Nesterov, {"lr": 0.01, "momentum": 0.9}),
    (Nesterov, {"lr": 0.1, "momentum": 0.7}),
    (AdaGrad, {"lr": 0.01}),
    (AdaGrad, {"lr": 1.5}),
    (RMSprop, {"lr": 0.01, "decay_rate": 0.99}),
    (RMSprop, {"lr": 0.002, "decay_rate": 0.9}),
    (Adam, {"lr": 0.001, "beta1": 0.9, "beta2": 0.999}),
    (Adam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}),
]


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"W1": (6, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
             for _ in range(7)]
    grads[3]["b1"][:] = 0  # a zero gradient: AdaGrad/RMSprop/Adam divide by ~eps
    return params, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,hp", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_trajectory_equals_the_book_step_by_step(backend, dtype, cls, hp):
    params, grads = _problem(dtype)
    ref = {k: v.copy() for k, v in params.items()}
    opt, book = cls(**hp), getattr(book_idiom, cls.__name__)(**hp)
    for step, g in enumerate(grads):
        opt.update(params, g)
        book.update(ref, g)
        for k in params:
            assert params[k].dtype == dtype
            # the same operations in the same order: equal to the last bit
            np.testing.assert_array_equal(params[k], ref[k], err_msg=f"{k} at step {step}")


@pytest.mark.parametrize("cls", [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam])
def test_defaults_are_the_books(cls):
    expected = {"SGD": {"lr": 0.01}, "Momentum": {"lr": 0.01, "momentum": 0.9},
                "Nesterov": {"lr": 0.01, "momentum": 0.9}, "AdaGrad": {"lr": 0.01},
                "RMSprop": {"lr": 0.01, "decay_rate": 0.99},
                "Adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999}}[cls.__name__]
    sig = inspect.signature(cls)
    assert {k: p.default for k, p in sig.parameters.items()} == expected


@pytest.mark.parametrize("cls", [Momentum, Nesterov, AdaGrad, RMSprop, Adam])
def test_state_buffers_are_created_once_and_updated_in_place(backend, cls):
    params, grads = _problem(np.float64)
    ids_params = {k: id(v) for k, v in params.items()}
    opt = cls()
    opt.update(params, grads[0])
    stores = [s for s in (getattr(opt, n, None) for n in ("v", "h", "m")) if s is not None]
    ids_state = [{k: id(a) for k, a in s.items()} for s in stores]
    for g in grads[1:]:
        opt.update(params, g)
    assert [{k: id(a) for k, a in s.items()} for s in stores] == ids_state
    assert {k: id(v) for k, v in params.items()} == ids_params


@pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")
@pytest.mark.parametrize("cls", [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam])
def test_compiled_updates_allocate_nothing_after_the_first_step(cls):
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((100, 100)), "b": rng.standard_normal(100)}
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    opt = cls()
    with fastbp.use_backend("cython"):
        opt.update(params, grads)
        tracemalloc.start()
        try:
            for _ in range(3):
                opt.update(params, grads)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4096  # the parameter alone is 80 kB: no array was allocated


def test_layers_see_the_updates():
    net = fastbp.TwoLayerNet(4, 3, 2, rng=0)
    W1 = net.layers["Affine1"].W
    before = W1.copy()
    grads = {k: np.ones_like(v) for k, v in net.params.items()}
    Adam(lr=0.1).update(net.params, grads)
    assert net.layers["Affine1"].W is W1 and not np.array_equal(W1, before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float64_gradients_for_float32_params_are_converted(backend, dtype):
    p = {"W": np.ones(4, dtype=np.float32)}
    SGD(lr=0.5).update(p, {"W": np.ones(4, dtype=dtype)})
    assert p["W"].dtype == np.float32
    np.testing.assert_array_equal(p["W"], np.full(4, 0.5, np.float32))


@pytest.mark.parametrize("cls", [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam])
def test_zero_dimensional_parameters(backend, cls):
    """A 0-d parameter (a scalar weight) trains like any other; its gradient stays 0-d
    (NumPy's ascontiguousarray made it 1-d and the state update failed)."""
    p = {"w": np.array(1.0)}
    for _ in range(3):
        cls().update(p, {"w": np.array(0.5)})
    assert p["w"].shape == () and p["w"] < 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_nesterov_is_bengio_2012_eq7(backend, dtype):
    """Nesterov against the paper's update written out on its own (Bengio,
    Boulanger-Lewandowski and Pascanu 2012, arXiv:1212.0901, eq. 7, constant momentum):
    theta_t = theta + mu**2 * v - (1 + mu) * lr * g, v_t = mu * v - lr * g, the
    parameter moving with the velocity of the step before."""
    lr, mu = 0.1, 0.7
    params, grads = _problem(dtype, seed=5)
    theta = {k: p.astype(np.float64) for k, p in params.items()}
    v = {k: np.zeros_like(t) for k, t in theta.items()}
    opt = Nesterov(lr=lr, momentum=mu)
    for g in grads:
        opt.update(params, g)
        for k in theta:
            gk = g[k].astype(np.float64)
            theta[k], v[k] = theta[k] + mu ** 2 * v[k] - (1 + mu) * lr * gk, mu * v[k] - lr * gk
    for k in theta:
        tol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(params[k], theta[k], rtol=tol, atol=tol)
        np.testing.assert_allclose(opt.v[k], v[k], rtol=tol, atol=tol)
    # one step by hand: from v = 0 the first step is plain SGD scaled by (1 + mu), and
    # the second moves by mu**2 * v_1 - (1 + mu) * lr * g_2 with v_1 = -lr * g_1
    p = np.zeros(1, dtype)
    opt = Nesterov(lr=0.5, momentum=0.5)
    opt.update({"p": p}, {"p": np.ones(1, dtype)})
    assert p[0] == -0.75 and opt.v["p"][0] == -0.5
    opt.update({"p": p}, {"p": np.ones(1, dtype)})
    assert p[0] == -0.75 + 0.25 * -0.5 - 0.75 and opt.v["p"][0] == 0.5 * -0.5 - 0.5


def test_grads_are_not_modified(backend):
    params, grads = _problem(np.float64)
    saved = {k: v.copy() for k, v in grads[0].items()}
    for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam):
        cls().update({k: v.copy() for k, v in params.items()}, grads[0])
    for k in saved:
        np.testing.assert_array_equal(grads[0][k], saved[k])


# --------------------------------------------------------------------------- kernels

def _call(name, param, grad, state=None):
    args = {"sgd_update": (0.1,), "momentum_update": (0.1, 0.9),
            "nesterov_update": (0.1, 0.9), "adagrad_update": (0.1, 1e-7),
            "rmsprop_update": (0.1, 0.99, 1e-7), "adam_update": (0.01, 0.9, 0.999, 1e-7)}[name]
    nstate = {"sgd_update": 0, "adam_update": 2}.get(name, 1)
    if state is None:
        state = [np.zeros_like(param) for _ in range(nstate)]
    return getattr(kernels.active(), name)(param, grad, *state[:nstate], *args)


def _error(fn):
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("name", KERNELS)
def test_bad_arguments_are_refused_alike_on_both_backends(name):
    ok = np.ones((3, 4))
    cases = {
        "int param": lambda: _call(name, np.ones((3, 4), dtype=np.int64), ok),
        "list param": lambda: _call(name, [[1.0]], ok),
        "fortran param": lambda: _call(name, np.asfortranarray(np.ones((3, 4))), ok),
        "read-only param": lambda: _call(name, np.broadcast_to(np.ones(4), (3, 4)), ok),
        "grad shape": lambda: _call(name, np.ones((3, 4)), np.ones((4, 3))),
        "grad dtype": lambda: _call(name, np.ones((3, 4)), np.ones((3, 4), dtype=np.complex128)),
    }
    if name != "sgd_update":
        cases["state dtype"] = lambda: _call(name, np.ones((3, 4)), ok,
                                             [np.zeros((3, 4), np.float32)] * 2)
        cases["state shape"] = lambda: _call(name, np.ones((3, 4)), ok, [np.zeros(12)] * 2)
    for label, fn in cases.items():
        results = []
        for be in BACKENDS:
            with fastbp.use_backend(be):
                results.append(_error(fn))
        assert all(r == results[0] for r in results), (label, results)
        kind, message = results[0]
        assert any(w in message for w in ("param", "grad", "v:", "h:", "m:")), (label, message)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_are_twins(name, dtype):
    if not kernels.HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((17, 9)).astype(dtype)
    results = []
    for be in ("numpy", "cython"):
        p = p0.copy()
        state = [np.zeros_like(p), np.zeros_like(p)]
        with fastbp.use_backend(be):
            for s in range(4):
                g = np.random.default_rng(s).standard_normal(p.shape)
                g = g.astype(dtype)[::-1]  # a strided gradient is fine (read only)
                assert _call(name, p, g, state) is p
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])


def test_get_optimizer_by_name():
    assert isinstance(get_optimizer("adam", lr=0.1), Adam)
    assert isinstance(get_optimizer("RMSprop"), RMSprop)
    assert get_optimizer("Momentum", momentum=0.5).momentum == 0.5
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        get_optimizer("adamw")


@pytest.mark.parametrize("cls,kw", [(SGD, {"lr": None}), (Momentum, {"momentum": "0.9"}),
                                    (RMSprop, {"decay_rate": None}), (Adam, {"beta1": [0.9]}),
                                    (Adam, {"lr": True})])
def test_hyperparameters_are_checked(cls, kw):
    with pytest.raises(TypeError, match=list(kw)[0]):
        cls(**kw)


@pytest.mark.parametrize("cls,hp", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_plain_numbers_are_rebound_with_the_books_values(backend, cls, hp):
    """The book's optimizer_compare_naive.py optimizes {'x': -7.0, 'y': 2.0}: a number
    cannot be updated in place, so params[key] is rebound, as the book's ``-=`` does."""
    params = {"x": -7.0, "y": 2, "W": np.array([[1.0, -2.0]])}
    W = params["W"]
    ref = {"x": np.array(-7.0), "y": np.array(2.0), "W": W.copy()}
    opt, book = cls(**hp), getattr(book_idiom, cls.__name__)(**hp)
    for step in range(8):
        grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"], "W": W * 0.5}
        opt.update(params, grads)
        book.update(ref, {k: np.asarray(v) for k, v in grads.items()})
        assert type(params["x"]) is np.float64 and type(params["y"]) is np.float64
        assert params["x"] == ref["x"] and params["y"] == ref["y"], step
        assert params["W"] is W  # arrays stay in place
        np.testing.assert_array_equal(W, ref["W"])


def test_a_parameter_that_is_neither_array_nor_number_is_refused(backend):
    with pytest.raises(TypeError, match=r"params\['w'\]"):
        SGD().update({"w": "1.0"}, {"w": 0.5})
    with pytest.raises(TypeError, match=r"params\['w'\]"):
        Adam().update({"w": True}, {"w": 0.5})
