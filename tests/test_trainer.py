"""Trainer: the book's batches, schedule and printed lines by default; whole epochs
(``sampler="shuffle"``), repeatable draws, a progress bar."""
import io

import numpy as np
import pytest

import fastbp
from fastbp import MultiLayerNet, Trainer
from fastbp.optimizers import SGD, Adam, Momentum


class RecordingNet:
    """A stand-in network that records the samples of every batch (x holds their index)."""

    def __init__(self):
        self.params = {"w": np.zeros(1)}
        self.batches = []
        self.evaluated = []

    def gradient(self, x, t):
        self.batches.append(x[:, 0].astype(int).tolist())
        return {"w": np.ones(1)}

    def loss(self, x, t):
        return 0.5

    def accuracy(self, x, t):
        self.evaluated.append(len(x))
        return len(self.batches) / 1000


def _indexed(n):
    return np.arange(n, dtype=float)[:, None], np.zeros(n, dtype=int)


def _blobs(n, seed):
    """Three well separated Gaussian blobs in 4-D."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 3, n)
    centres = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0]], dtype=float)
    return centres[t] + rng.standard_normal((n, 4)) * 0.5, t


@pytest.mark.parametrize("n,batch,ipe", [(200, 50, 4), (230, 100, 2), (99, 100, 1), (1000, 300, 3)])
def test_shuffle_epochs_each_visit_every_sample_once(n, batch, ipe):
    x, t = _indexed(n)
    net = RecordingNet()
    tr = Trainer(net, x, t, x[:10], t[:10], epochs=3, mini_batch_size=batch,
                 verbose=False, sampler="shuffle", rng=0)
    assert tr.iter_per_epoch == ipe and tr.max_iter == 3 * ipe
    tr.train()
    assert len(tr.train_loss_list) == 3 * ipe
    assert len(tr.train_acc_list) == len(tr.test_acc_list) == 3
    # evaluated at the end of each epoch, after its last step
    assert tr.test_acc_list == [ipe * (e + 1) / 1000 for e in range(3)]
    for e in range(3):
        seen = sum(net.batches[e * ipe:(e + 1) * ipe], [])
        assert len(seen) == len(set(seen)) == min(ipe * batch, n)  # no sample twice
    assert net.batches[:ipe] != net.batches[ipe:2 * ipe]  # reshuffled every epoch


def test_evaluate_sample_num_per_epoch():
    x, t = _indexed(120)
    net = RecordingNet()
    Trainer(net, x, t, x, t, epochs=2, mini_batch_size=60, evaluate_sample_num_per_epoch=25,
            verbose=False).train()
    assert net.evaluated == [25, 25, 25, 25, 120]  # per epoch train/test, then the final test


def test_seeded_runs_are_repeatable():
    x, t = _blobs(300, 0)

    def run(**kw):
        np.random.seed(9)
        net = MultiLayerNet(4, [8], 3, rng=1)
        tr = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=32, optimizer="Adam",
                     optimizer_param={"lr": 0.01}, verbose=False, **kw)
        tr.train()
        return tr.train_loss_list

    for sampler in ("book", "shuffle"):
        assert run(rng=3, sampler=sampler) == run(rng=3, sampler=sampler)
        assert run(rng=3, sampler=sampler) != run(rng=4, sampler=sampler)
        assert run(sampler=sampler) == run(sampler=sampler)  # np.random.seed by default
    assert run(rng=3) != run(rng=3, sampler="shuffle")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_trainer_learns(backend, dtype):
    if backend == "cython" and not fastbp.HAVE_CYTHON:
        pytest.skip("the compiled kernels are not built")
    x_tr, t_tr = _blobs(600, 1)
    x_te, t_te = _blobs(200, 2)
    x_tr, x_te = x_tr.astype(dtype), x_te.astype(dtype)
    with fastbp.use_backend(backend):
        net = MultiLayerNet(4, [16, 16], 3, dtype=dtype, rng=0)
        tr = Trainer(net, x_tr, t_tr, x_te, t_te, epochs=3, mini_batch_size=50,
                     optimizer="adam", optimizer_param={"lr": 0.01}, verbose=False,
                     sampler="shuffle", rng=0)
        acc = tr.train()
    assert acc == tr.test_acc_list[-1] > 0.95
    assert np.mean(tr.train_loss_list[-5:]) < np.mean(tr.train_loss_list[:5])
    assert all(isinstance(v, float) for v in tr.train_loss_list)
    assert all(p.dtype == dtype for p in net.params.values())


def test_optimizer_by_name_or_object():
    x, t = _indexed(10)
    assert isinstance(Trainer(RecordingNet(), x, t, x, t, verbose=False).optimizer, SGD)
    assert Trainer(RecordingNet(), x, t, x, t, verbose=False).optimizer.lr == 0.01
    tr = Trainer(RecordingNet(), x, t, x, t, optimizer="MOMENTUM",
                 optimizer_param={"lr": 0.1, "momentum": 0.5}, verbose=False)
    assert isinstance(tr.optimizer, Momentum) and tr.optimizer.momentum == 0.5
    opt = Adam()
    assert Trainer(RecordingNet(), x, t, x, t, optimizer=opt, verbose=False).optimizer is opt
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(RecordingNet(), x, t, x, t, optimizer="lbfgs")


def test_bad_arguments():
    x, t = _indexed(10)
    with pytest.raises(ValueError, match="t_train"):
        Trainer(RecordingNet(), x, t[:5], x, t)
    with pytest.raises(ValueError, match="mini_batch_size"):
        Trainer(RecordingNet(), x, t, x, t, mini_batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        Trainer(RecordingNet(), x, t, x, t, epochs=2.5)
    with pytest.raises(ValueError, match="x_train"):
        Trainer(RecordingNet(), x[:0], t[:0], x, t)


def test_verbose_prints_the_books_lines(capsys):
    x, t = _indexed(40)
    Trainer(RecordingNet(), x, t, x, t, epochs=2, mini_batch_size=20).train()
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "train loss:0.5",
        "=== epoch:1, train acc:0.001, test acc:0.001 ===",
        "train loss:0.5",
        "train loss:0.5",
        "=== epoch:2, train acc:0.003, test acc:0.003 ===",
        "train loss:0.5",
        "=============== Final Test Accuracy ===============",
        "test acc:0.004",
    ]
    assert err == ""  # no progress bar unless asked


@pytest.mark.parametrize("n,batch", [(200, 50), (230, 100), (99, 100), (1000, 300), (500, 100)])
def test_book_sampler_draws_and_evaluates_as_the_book(n, batch):
    """np.random.choice(train_size, batch) at every step; an epoch of train_size / batch
    steps (a float); evaluation after step i when i % iter_per_epoch == 0."""
    x, t = _indexed(n)
    net = RecordingNet()
    np.random.seed(42)
    tr = Trainer(net, x, t, x[:10], t[:10], epochs=3, mini_batch_size=batch, verbose=False)
    ipe = max(n / batch, 1)
    assert tr.iter_per_epoch == ipe and tr.max_iter == int(3 * ipe)
    tr.train()
    np.random.seed(42)
    assert net.batches == [np.random.choice(n, batch).tolist() for _ in range(int(3 * ipe))]
    after = [i + 1 for i in range(int(3 * ipe)) if i % ipe == 0]  # steps done at each evaluation
    assert tr.test_acc_list == [k / 1000 for k in after]
    assert len(tr.train_loss_list) == int(3 * ipe)
    if (n, batch) == (1000, 300):
        assert len(tr.test_acc_list) == 1  # the book's float check fires once only


def test_book_sampler_with_a_generator():
    x, t = _indexed(50)
    net = RecordingNet()
    Trainer(net, x, t, x, t, epochs=1, mini_batch_size=10, verbose=False, rng=5).train()
    gen = np.random.default_rng(5)
    assert net.batches == [gen.choice(50, 10).tolist() for _ in range(5)]


def test_unknown_sampler():
    x, t = _indexed(10)
    with pytest.raises(ValueError, match="sampler"):
        Trainer(RecordingNet(), x, t, x, t, sampler="random")


def test_progress_bar_draws_on_request(monkeypatch, capsys):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    x, t = _indexed(40)
    Trainer(RecordingNet(), x, t, x, t, epochs=2, mini_batch_size=10, verbose=False,
            progress=True).train()
    text = buf.getvalue()
    assert "train [" in text and "8/8" in text
    assert text.endswith("\r")  # the bar is cleared at the end
    assert capsys.readouterr().out == ""
