"""fastbp.gradcheck: the book's gradient check, with the elements whose central
difference crosses a ReLU kink named and left out. It must pass for every seed and
still fail on a wrong gradient."""
import numpy as np
import pytest

from fastbp import MultiLayerNetExtend, TwoLayerNet
from fastbp.gradcheck import TOLERANCE, gradient_check

H = 1e-4
SEEDS = range(50)


def _case(seed, std=0.001):
    """A small book-shaped case: inputs in [0, 1) like MNIST's, small weights (so that
    pre-activations near 0, hence kinks, are common: 21 of the 50 seeds have some)."""
    rng = np.random.default_rng(seed)
    x, t = rng.random((2, 12)), rng.integers(0, 4, 2)
    return TwoLayerNet(12, 8, 4, weight_init_std=std, rng=seed), x, t


def test_passes_for_every_seed(backend):
    with_kinks = book_would_fail = 0
    for seed in SEEDS:
        net, x, t = _case(seed)
        report = gradient_check(net, x, t)
        assert report.ok, (seed, str(report))
        assert report.worst < 1e-9, seed  # far inside the tolerance away from kinks
        params = report.checks[0].params
        assert sorted(params) == ["W1", "W2", "b1", "b2"]
        assert not params["W2"].kinks.any() and not params["b2"].kinks.any()  # after the ReLU
        with_kinks += any(p.kinks.any() for p in params.values())
        # the book's mean over every element would exceed the tolerance on this seed
        book_would_fail += any(p.kinks.any() and p.kink_max_diff / p.kinks.size > report.tol
                               for p in params.values())
    # the test has teeth: kinks are common here, and they failed the book's check
    assert with_kinks >= 10 and book_would_fail >= 10, (with_kinks, book_would_fail)


def test_kinks_are_the_pre_activations_within_the_step(backend):
    """Independently of the masks the check watches: b1[j] straddles a kink exactly when
    some sample's pre-activation a[n, j] lies within h of 0 on the crossing side, and
    W1[i, j] when a[n, j] +- h * x[n, i] changes side (ReLU's mask is a <= 0)."""
    for seed in range(20):
        net, x, t = _case(seed)
        a = x @ net.params["W1"] + net.params["b1"]
        crosses = lambda step: ((a + step) <= 0) != (a <= 0)  # noqa: E731
        b1 = (crosses(H) | crosses(-H)).any(axis=0)
        step = H * x[:, :, None]  # (N, D, 1): the move of a[n, :] when W1[i, :] moves
        w1 = (((a[:, None, :] + step) <= 0) != (a[:, None, :] <= 0)) | \
             (((a[:, None, :] - step) <= 0) != (a[:, None, :] <= 0))
        params = gradient_check(net, x, t).checks[0].params
        np.testing.assert_array_equal(params["b1"].kinks, b1)
        np.testing.assert_array_equal(params["W1"].kinks, w1.any(axis=0))


@pytest.mark.parametrize("plant", ["one bias element", "scaled weights", "transposed sign"])
def test_fails_on_a_wrong_gradient(backend, plant):
    net, x, t = _case(3, std=0.1)  # a seed without kinks at this scale
    right = net.gradient

    def wrong(x, t):
        grads = {k: v.copy() for k, v in right(x, t).items()}
        if plant == "one bias element":
            grads["b1"][2] += 1e-4
        elif plant == "scaled weights":
            grads["W2"] *= 1.001
        else:
            grads["W1"][5] *= -1
        return grads

    assert gradient_check(net, x, t).ok
    net.gradient = wrong
    report = gradient_check(net, x, t)
    assert not report.ok
    assert str(report).splitlines()[-1].startswith("FAILED: largest difference")


def test_a_wrong_gradient_fails_even_with_kinks(backend):
    """Kinks exclude only the elements whose step crosses one: a bug elsewhere fails."""
    seed = next(s for s in SEEDS
                if gradient_check(*_case(s)).checks[0].params["b1"].kinks.sum() == 1)
    net, x, t = _case(seed)
    kinked = np.flatnonzero(gradient_check(net, x, t).checks[0].params["b1"].kinks)[0]
    right = net.gradient

    def wrong(x, t):
        grads = {k: v.copy() for k, v in right(x, t).items()}
        grads["b1"][(kinked + 1) % 8] += 1e-4  # a unit next to the kinked one
        return grads

    net.gradient = wrong
    assert not gradient_check(net, x, t).ok


def test_report_lines(backend):
    net, x, t = _case(next(s for s in SEEDS if gradient_check(*_case(s)).checks[0].params["b1"]
                           .kinks.any()))
    lines = str(gradient_check(net, x, t, backends=["numpy", "numpy"])).splitlines()
    assert lines[0] == "mean |backprop - numerical| per parameter:"
    assert [ln.split()[0] for ln in lines[1:3]] == ["numpy", "numpy"]
    assert [cell.split(":")[0] for cell in lines[1].split()[1:5]] == ["W1", "b1", "W2", "b2"]
    assert lines[3].startswith("near a ReLU kink, not judged: ") and "b1" in lines[3]
    assert lines[4].startswith("ok: largest difference") and "for float64" in lines[4]


def test_float32_and_chapter6_networks(backend):
    rng = np.random.default_rng(0)
    x, t = rng.random((3, 6)), rng.integers(0, 3, 3)
    net32 = TwoLayerNet(6, 5, 3, weight_init_std=0.5, dtype=np.float32, rng=0)
    report = gradient_check(net32, x.astype(np.float32), t)
    assert report.dtype == "float32" and report.tol == TOLERANCE["float32"] and report.ok
    bn = MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, weight_decay_lambda=0.1, rng=0)
    report = gradient_check(bn, x, t)
    assert report.ok, str(report)
    assert {"gamma1", "beta2", "W3"} <= set(report.checks[0].params)


def test_parameters_are_restored(backend):
    net, x, t = _case(4)
    before = {k: (v, v.copy()) for k, v in net.params.items()}
    gradient_check(net, x, t)
    for k, (array, values) in before.items():
        assert net.params[k] is array
        np.testing.assert_array_equal(array, values)
    assert net.layers["Affine1"].W is net.params["W1"]  # still held by reference


def test_cli_passes_where_a_kink_failed_the_books_check(capsys):
    """``fastbp gradcheck --hidden 5 --batch 30 --seed 2`` printed FAILED (b1: 2.4e-05)
    on both backends: b1[1]'s pre-activation is within h of 0 for one of the images
    (as for the book's defaults with --seed 10). Now the kink is named and not judged."""
    from fastbp import cli
    from fastbp.datasets import SAMPLE_DIR
    assert cli.main(["gradcheck", "--data-dir", SAMPLE_DIR, "--hidden", "5", "--batch", "30",
                     "--seed", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("near a ReLU kink, not judged: ") and "b1[1]" in lines[-2]
    assert lines[-1].startswith("ok: largest difference")
