"""Threads: the compiled kernels release the GIL, and concurrent training is deterministic.

A new thread starts on the process default backend (the choice is held per context), so
each worker enters ``use_backend`` with the backend its test runs on.
"""
import sys
import threading

import numpy as np
import pytest

import fastbp
from fastbp import kernels

from _gil import releases_gil

needs_cython = pytest.mark.skipif(not kernels.HAVE_CYTHON, reason="the compiled kernels are not built")


def _kernel_calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 500))
    y = 1 / (1 + np.exp(-x))
    mask = x <= 0
    t = rng.integers(0, 500, 400)
    W, b, dout = rng.standard_normal((500, 300)), rng.standard_normal(300), rng.standard_normal((400, 300))
    return {
        "relu_forward": lambda k: k.relu_forward(x),
        "relu_backward": lambda k: k.relu_backward(x, mask),
        "sigmoid_forward": lambda k: k.sigmoid_forward(x),
        "sigmoid_backward": lambda k: k.sigmoid_backward(x, y),
        "bias_grad": lambda k: k.bias_grad(x),
        "softmax_cross_entropy": lambda k: k.softmax_cross_entropy(x, t),
        "softmax_cross_entropy_backward": lambda k: k.softmax_cross_entropy_backward(y, t),
        # the matrix products (CBLAS on fastbp's threads), W (500, 300)
        "affine_forward": lambda k: k.affine_forward(x, W, b),
        "affine_backward": lambda k: k.affine_backward(dout, x, W),
        "affine_backward_sgd": lambda k: k.affine_backward_sgd(dout, x, W.copy(), b.copy(), 0.0),
    }


@needs_cython
@pytest.mark.parametrize("name", sorted(_kernel_calls()))
def test_kernel_releases_the_gil(name):
    """The compiled kernels, matrix products included, run without the GIL (see
    tests/_gil.py for how that is seen)."""
    call = _kernel_calls()[name]
    k = kernels._cython
    call(k)  # warm up outside the measurement
    released, calls = releases_gil(lambda: call(k))
    assert released, f"{name} held the GIL through {calls} calls"


def _train(seed, x, t, dtype, steps=15):
    net = fastbp.TwoLayerNet(x.shape[1], 16, 10, weight_init_std=0.1, dtype=dtype, rng=seed)
    losses = []
    for i in range(steps):
        sl = slice((i * 20) % len(x), (i * 20) % len(x) + 20)
        grads = net.gradient(x[sl], t[sl])
        for key in net.params:
            net.params[key] -= 0.1 * grads[key]
        losses.append(net.loss(x[sl], t[sl]))
    return {k: v.copy() for k, v in net.params.items()}, losses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concurrent_training_is_bit_identical(backend, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200, 30)).astype(dtype)
    t = rng.integers(0, 10, 200)
    seeds = [1, 2, 3, 4]
    sequential = [_train(s, x, t, dtype) for s in seeds]
    results = [None] * len(seeds)
    errors = []
    barrier = threading.Barrier(len(seeds))

    name = fastbp.get_backend()

    def run(i):
        try:
            barrier.wait()
            with fastbp.use_backend(name):
                results[i] = _train(seeds[i], x, t, dtype)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(seeds))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for (p_seq, l_seq), (p_thr, l_thr) in zip(sequential, results):
        assert l_seq == l_thr
        for key in p_seq:
            assert p_seq[key].tobytes() == p_thr[key].tobytes(), key
    # and the four networks really differ (different seeds), so the check has teeth
    assert sequential[0][1] != sequential[1][1]


def test_shared_inputs_read_concurrently(backend):
    """Many threads reading the same (read-only) arrays through every kernel: same
    results as one thread, inputs untouched."""
    calls = _kernel_calls()
    k = kernels.active()
    expected = {name: call(k) for name, call in calls.items()}
    errors = []

    def run():
        try:
            for _ in range(3):
                for name, call in calls.items():
                    got = call(k)
                    exp = expected[name]
                    if isinstance(exp, tuple):
                        for a, b in zip(got, exp):
                            np.testing.assert_array_equal(a, b)
                    else:
                        np.testing.assert_array_equal(got, exp)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


_FORK_SCRIPT = """
import ctypes, os, sys, threading, time
import numpy as np
import fastbp
from fastbp import kernels
mode = sys.argv[1]
k = kernels.active()
rng = np.random.default_rng(0)
x = rng.standard_normal((256, 784))
W, b = rng.standard_normal((784, 100)), rng.standard_normal(100)
xs, t = rng.standard_normal((512, 1000)), np.arange(512) % 1000

def work():
    out = k.affine_forward(x, W, b)          # a product of several blocks
    loss = k.softmax_cross_entropy(xs, t)[0]  # a kernel split over the pool
    return out.tobytes() + np.float64(loss).tobytes()

expected = work()
for _ in range(12):
    assert work() == expected
if mode == "other-library":
    # another library's parallel region on the process's libgomp, which fastbp never sees
    try:
        gomp = ctypes.CDLL("libgomp.so.1")
    except OSError:
        sys.exit(77)
    body = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda data: None)
    gomp.GOMP_parallel.argtypes = [type(body), ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    gomp.GOMP_parallel(body, None, 2, 0)
stop = threading.Event()
if mode == "during-product":  # another thread is inside products when the fork comes
    def busy():
        while not stop.is_set():
            work()
    th = threading.Thread(target=busy)
    th.start()
    time.sleep(0.05)

def child():
    ok = all(work() == expected for _ in range(3))
    os._exit(0 if ok else 3)

for i in range(10 if mode == "during-product" else 1):
    pid = os.fork()
    if pid == 0:
        child()
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            stop.set()
            sys.exit(f"fork {i}: the child hung")
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        stop.set()
        sys.exit(f"fork {i}: the child exited with {code}")
stop.set()
print(fastbp.get_backend(), fastbp.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
@pytest.mark.parametrize("mode", ["after-products", "during-product", "other-library"])
def test_forked_children_do_not_hang(mode, backend_name):
    """A child forked after products on two threads, or while another thread is inside
    a product, or after another library ran an OpenMP region, computes the parent's
    results and exits: fastbp's pool starts afresh in the child (no helper of the
    parent is waited for, no lock of the parent is inherited held)."""
    import os
    import subprocess
    if backend_name == "cython" and not kernels.HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    if backend_name == "numpy" and mode == "during-product":
        pytest.skip("the numpy backend's products are NumPy's: a child forked while NumPy's "
                    "OpenBLAS runs a threaded product hangs with NumPy alone")
    env = dict(os.environ, FASTBP_NUM_THREADS="2", FASTBP_BACKEND=backend_name)
    r = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, mode], capture_output=True,
                       text=True, timeout=120, env=env)
    if r.returncode == 77:
        pytest.skip("libgomp.so.1 cannot be loaded by name here")
    assert r.returncode == 0, r.stderr[-2000:]
    threads = "2" if backend_name == "cython" else ("2" if kernels.HAVE_CYTHON else "1")
    assert r.stdout.split() == [backend_name, threads]


@needs_cython
@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5", " "])
def test_a_bad_thread_count_in_the_environment_warns_and_uses_the_default(value):
    import os
    import subprocess
    code = "import fastbp; print(fastbp.get_num_threads())"
    env = dict(os.environ, FASTBP_NUM_THREADS=value)
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    default = min(os.cpu_count() or 1, 8) if kernels._cython.HAVE_OPENMP else 1
    assert int(r.stdout) == default
    if value.strip():
        assert "FASTBP_NUM_THREADS: expected a positive whole number" in r.stderr, r.stderr
        assert repr(value) in r.stderr
    else:  # blank: not set
        assert "FASTBP_NUM_THREADS" not in r.stderr
    env["FASTBP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "1" and "FASTBP_NUM_THREADS" not in r.stderr


@needs_cython
def test_the_pool_runs_every_block_once_from_many_callers():
    """Jobs of every size from several Python threads at once (one owns the pool, the
    others run their blocks themselves) while the thread setting changes: every block
    runs exactly once, and one thread means the caller alone."""
    from fastbp.kernels import _pool
    before = _pool.get_num_threads()
    errors = []

    def run(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(400):
                count, threads = int(rng.integers(0, 300)), int(rng.integers(0, 5))
                slots, used = _pool._self_test(count, threads)
                assert np.array_equal(slots, np.arange(1, count + 1)), (count, threads)
                if threads == 1 or count <= 1:
                    assert used == 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    try:
        for th in workers:
            th.start()
        for n in (1, 3, 2, 4, 2) * 20:
            _pool.set_num_threads(n)
        for th in workers:
            th.join()
    finally:
        _pool.set_num_threads(before)
    assert not errors, errors
    slots, used = _pool._self_test(0xFFFF + 1, 2)  # past the ticket's limit: the caller
    assert used == 1 and np.array_equal(slots, np.arange(1, 0xFFFF + 2))
