"""fastbp.loop: the one training loop (samplers, steps, epoch hooks), on both backends."""
import numpy as np
import pytest

import fastbp
from fastbp import TwoLayerNet
from fastbp.datasets import SAMPLE_DIR, load_mnist
from fastbp.loop import (BookSampler, Evaluation, ShuffleSampler, accuracies, local_step,
                         run_loop)
from fastbp.optimizers import SGD

BACKENDS = ["numpy"] + (["cython"] if fastbp.HAVE_CYTHON else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastbp.use_backend(request.param):
        yield request.param


@pytest.fixture(scope="module")
def sample():
    return load_mnist(data_dir=SAMPLE_DIR)


def test_epoch_lengths():
    assert BookSampler(60000, 100).epoch_length == 600
    assert BookSampler(5050, 100).epoch_length == 50.5  # the book's train_size / batch_size
    assert BookSampler(50, 100).epoch_length == 1  # never below one
    assert ShuffleSampler(5050, 100).epoch_length == 50
    s = BookSampler(5050, 100)
    ends = [i + 1 for i in range(300) if s.ends_epoch(i)]
    assert ends == [51, 101, 152, 202, 253]  # 50.5 on average


def test_book_sampler_is_the_books_draw():
    np.random.seed(3)
    want = [np.random.choice(1000, 10) for _ in range(4)]
    np.random.seed(3)
    s = BookSampler(1000, 10)  # NumPy's global state, as the book
    for i, w in enumerate(want):
        np.testing.assert_array_equal(s.batch(i), w)
    gen = np.random.default_rng(5)
    g = BookSampler(1000, 10, np.random.default_rng(5))
    np.testing.assert_array_equal(g.batch(0), gen.choice(1000, 10))


@pytest.mark.parametrize("cls", [BookSampler, ShuffleSampler])
def test_seeded_samplers_resume_anywhere(cls):
    a = cls(230, 20, 7)
    straight = [a.batch(i) for i in range(40)]
    for start in (0, 11, 12, 25):
        b = cls(230, 20, 7)
        for i in range(start, 40):
            np.testing.assert_array_equal(b.batch(i), straight[i])


def test_shuffle_sees_every_sample_once_per_epoch():
    s = ShuffleSampler(100, 10, 0)
    first = np.concatenate([s.batch(i) for i in range(10)])
    assert sorted(first) == list(range(100))
    assert not np.array_equal(first, np.concatenate([s.batch(i) for i in range(10, 20)]))


def test_loop_learns_and_reports(sample, backend):
    (x, t), (xt, tt) = sample
    net = TwoLayerNet(784, 50, 10, rng=0)
    w1 = net.params["W1"]
    steps = []
    history = run_loop(BookSampler(len(x), 100, 0), local_step(net, SGD(0.1), x, t), 120,
                       evaluate=accuracies(net, x, t, xt, tt), on_step=lambda i, l: steps.append(i))
    assert steps == list(range(1, 121))
    assert [(e.epoch, e.iteration, e.steps, e.complete) for e in history.epochs] == [
        (1, 50, 50, True), (2, 100, 50, True), (3, 120, 20, False)]
    assert len(history.loss) == 120 and np.mean(history.loss[:10]) > 2.2
    assert np.mean(history.loss[-10:]) < 1.5 and history.test_acc[-1] > 0.65
    assert history.test_acc[-1] == pytest.approx(net.accuracy(xt, tt))
    assert history.epochs[2].loss == pytest.approx(np.mean(history.loss[100:120]))
    assert net.params["W1"] is w1 and net.layers["Affine1"].W is w1


def test_same_seed_same_run_on_both_backends(sample):
    (x, t), (xt, tt) = sample
    runs = []
    for name in BACKENDS * (3 - len(BACKENDS)):
        with fastbp.use_backend(name):
            net = TwoLayerNet(784, 20, 10, rng=1)
            h = run_loop(ShuffleSampler(len(x), 100, 42), local_step(net, SGD(0.1), x, t), 30,
                         evaluate=accuracies(net, x, t, xt, tt))
            runs.append((net, h))
    (a, ha), (b, hb) = runs
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-10)


def test_the_books_evaluation_schedule_is_a_hook(sample):
    (x, t), (xt, tt) = sample
    net = TwoLayerNet(784, 10, 10, rng=0)
    s = BookSampler(len(x), 100, 0)
    h = run_loop(s, local_step(net, SGD(0.1), x, t), 101, evaluate=accuracies(net, x, t, xt, tt),
                 epoch_end=lambda i: i % s.epoch_length == 0,  # after an epoch's first step
                 evaluate_last=False)
    assert [e.iteration for e in h.epochs] == [1, 51, 101]
    h = run_loop(s, local_step(net, SGD(0.1), x, t), 60, evaluate=accuracies(net, x, t, xt, tt),
                 epoch_end=lambda i: i % s.epoch_length == 0, evaluate_last=False)
    assert [e.iteration for e in h.epochs] == [1, 51]  # none at the end of the run


def test_a_sample_after_each_epoch_the_whole_test_set_at_the_end(sample):
    """Evaluation: the book's Trainer with evaluate_sample_num_per_epoch=k scores the
    first k images of each set after each epoch; the end of the run the whole test set."""
    (x, t), (xt, tt) = sample
    net = TwoLayerNet(784, 10, 10, rng=0)
    scored, progress, after = [], [], []
    real = net.accuracy

    def accuracy(xs, ts):
        scored.append(xs.shape[0])
        return real(xs, ts)

    net.accuracy = accuracy
    make = lambda *data: accuracies(net, *data, chunk=200, progress=lambda *p: progress.append(p))  # noqa: E731
    ev = Evaluation(make, x, t, xt, tt, 300, after=lambda: after.append(ev.seconds))
    assert ev.sampled and (ev.n_train, ev.n_test, ev.n_final) == (300, 300, 1000)
    h = run_loop(BookSampler(len(x), 100, 0), local_step(net, SGD(0.1), x, t), 120,
                 evaluate=ev.epoch, evaluate_final=ev.final)
    assert [e.iteration for e in h.epochs] == [50, 100, 120]
    per_epoch = [200, 100, 200, 100]  # the first 300 of each set, in chunks of 200
    assert scored == per_epoch * 2 + [200, 100] + [200] * 5  # the last: all 1000 test images
    assert progress[:5] == [(0, 600), (200, 600), (300, 600), (500, 600), (600, 600)]
    assert progress[-1] == (1300, 1300)
    assert len(after) == 3 and all(s >= 0 for s in after)
    assert h.test_acc[-1] == pytest.approx(real(xt, tt))
    assert h.train_acc[-1] == pytest.approx(real(x[:300], t[:300]))
    whole = Evaluation(make, x, t, xt, tt, 5000)  # not smaller than either set: no sample
    assert not whole.sampled and (whole.n_train, whole.n_test) == (5000, 1000)
    with pytest.raises(ValueError, match="samples: expected a positive integer, got 0"):
        Evaluation(make, x, t, xt, tt, 0)


def test_step_and_evaluation_convert_the_data_once():
    """float32 images and a float64 network: the step and the evaluation read one
    float64 copy made once (not a conversion per batch and per evaluation chunk), and
    train exactly as converting each batch did."""
    from fastbp import loop
    rng = np.random.default_rng(0)
    x = rng.random((300, 20), dtype=np.float32)
    t = rng.integers(0, 3, 300)
    net, ref = TwoLayerNet(20, 8, 3, rng=0), TwoLayerNet(20, 8, 3, rng=0)
    seen = []
    accuracy = net.accuracy
    net.accuracy = lambda xs, ts: seen.append(xs) or accuracy(xs, ts)
    step = local_step(net, SGD(0.1), x, t)
    evaluate = accuracies(net, x, t, x[:50], t[:50], chunk=100)
    for i in range(5):
        idx = np.arange(i * 20, i * 20 + 20)
        loss = step(idx)
        assert loss == ref.train_step(x[idx].astype(np.float64), t[idx], SGD(0.1))
    evaluate()
    evaluate()
    assert all(xs.dtype == np.float64 for xs in seen)
    copy = loop.in_dtype(x, np.float64)
    assert copy is loop.in_dtype(x, np.float64) and np.array_equal(copy, x)
    assert {id(xs.base) for xs in seen[:3] + seen[4:7]} == {id(copy)}  # the train chunks
    for key in net.params:
        assert net.params[key].tobytes() == ref.params[key].tobytes()
    assert loop.in_dtype(copy, np.float64) is copy  # already the network's dtype
    del x, copy, step, evaluate
    assert not [k for k in loop._converted if k[1] == np.float64 and loop._converted[k][0]() is None]
