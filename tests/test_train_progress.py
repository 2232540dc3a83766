"""``fastbp train`` must not look hung: the CNNs are evaluated on a sample after each
epoch (the book's Trainer), the evaluation shows its progress, and the expected
duration is said once the pace is known. On the bundled sample, offline."""
import dataclasses
import io
import re
import types

import pytest

import fastbp
from fastbp import _progress, cli, networks
from fastbp._progress import DurationEstimate, ProgressBar, format_duration
from fastbp.datasets import SAMPLE_DIR


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FASTBP_MNIST_MIRRORS", "")
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


class FlatNet(fastbp.TwoLayerNet):
    """A fast network that takes images, as the convolutional networks do."""

    scored = []

    def predict(self, x):
        return super().predict(x.reshape(x.shape[0], -1))

    def accuracy(self, x, t):
        FlatNet.scored.append(x.shape[0])
        return super().accuracy(x, t)


@pytest.fixture
def flat(monkeypatch):
    """`--net flat`: FlatNet, evaluated on the first 300 images after each epoch."""
    def build(args, n_in, n_out, rng):
        return FlatNet(784, 8, n_out, rng=rng), "FlatNet 1x28x28-8-10"
    FlatNet.scored = []
    monkeypatch.setitem(cli.NETWORKS, "flat", cli.Network(
        "FlatNet", "a test network", build, hidden_layers=0, images=True, eval_samples=300))
    return FlatNet.scored


def test_the_cnns_are_evaluated_as_the_books_trainer():
    assert cli.NETWORKS["conv"].eval_samples == cli.NETWORKS["deep"].eval_samples == 1000
    assert cli.NETWORKS["two"].eval_samples is None and cli.NETWORKS["multi"].eval_samples is None


def test_simple_convnet_scores_a_sample(capsys, monkeypatch):
    """`--net conv` end to end: 1,000 training images, not 5,000 (or 60,000)."""
    scored = []
    real = networks.SimpleConvNet.accuracy

    def accuracy(self, x, t, batch_size=100):
        scored.append(x.shape[0])
        return real(self, x, t, batch_size)
    monkeypatch.setattr(networks.SimpleConvNet, "accuracy", accuracy)
    assert cli.main(["train", "--net", "conv", "--iters", "1", "--dtype", "float32", "--seed", "0",
                     "--no-plot"]) == 0
    out, err = capsys.readouterr()
    assert scored == [1000, 1000]  # the first 1,000 training images, the 1,000 test images
    assert ("accuracies after each epoch on the first 1000 training images and all 1000 test "
            "images, as the book's Trainer (--eval-samples all: every image, every epoch)") in err
    assert "train acc 0." in out and "(first 1000 images), test acc 0." in out


def test_a_sample_per_epoch_and_the_whole_test_set_at_the_end(flat, capsys):
    assert cli.main(["train", "--net", "flat", "--iters", "100", "--seed", "0", "--no-plot"]) == 0
    out, err = capsys.readouterr()
    # chunks of 1,000 images; epoch 1: 300 + 300; the end: 300 + all 1,000
    assert flat == [300, 300, 300, 1000]
    assert ("accuracies after each epoch on the first 300 training images and the first 300 "
            "test images, after the last epoch all 1000, as the book's Trainer") in err
    lines = out.splitlines()
    assert "(whole test set)" not in lines[1] and "test acc 0." in lines[1]
    assert re.search(r"^epoch 2/2  loss .* test acc 0\.\d{4} \(whole test set\)  [\d.]+ s$", lines[2])
    assert re.search(r"train acc 0\.\d{4} \(first 300 images\), test acc 0\.\d{4} \(all 1000\)$",
                     lines[3])


def test_eval_samples_all_scores_every_image(flat, capsys):
    assert cli.main(["train", "--net", "flat", "--iters", "50", "--eval-samples", "all",
                     "--no-plot"]) == 0
    out, err = capsys.readouterr()
    assert flat == [1000] * 6  # 5,000 training and 1,000 test images
    assert "accuracies after each epoch" not in err and "(first" not in out


def test_eval_samples_n_for_any_network(capsys):
    assert cli.main(["train", "--iters", "50", "--eval-samples", "200", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "(first 200 images)" in out and "(all 1000)" in out


class RecordingBar(ProgressBar):
    """A bar drawn into a string, with every status it was given."""

    def __init__(self, total, **kwargs):
        kwargs.update(stream=io.StringIO(), enabled=True)
        super().__init__(total, **kwargs)
        self.statuses = []
        RecordingBar.last = self

    def status(self, text):
        self.statuses.append(text)
        super().status(text)


def test_the_evaluation_shows_its_progress(flat, monkeypatch):
    monkeypatch.setattr(cli, "ProgressBar", RecordingBar)
    assert cli.main(["train", "--net", "flat", "--iters", "50", "--eval-samples", "all",
                     "--no-plot", "--seed", "0"]) == 0
    bar = RecordingBar.last
    assert bar.statuses == [f"evaluating {n}/6000 images" for n in range(0, 7000, 1000)] + [""]
    drawn = bar.stream.getvalue()
    assert "evaluating 0/6000 images" in drawn  # at once, not after the first chunk
    assert drawn.endswith("\r")  # removed, and the bar with it at the end


def test_the_expected_duration_is_said(flat, capsys, monkeypatch):
    assert cli.main(["train", "--net", "flat", "--iters", "100", "--no-plot"]) == 0
    assert "should take" not in capsys.readouterr().err  # a second's run: nothing to say
    monkeypatch.setattr(DurationEstimate, "MIN_SECONDS", 0.0)
    assert cli.main(["train", "--net", "flat", "--iters", "100", "--no-plot"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"fastbp: epoch 1 took [\d.]+ s \([\d.]+ s of it evaluating\): the 1 epoch "
                     r"left should take about [\d.]+ s, until about \d\d:\d\d\n", err)
    monkeypatch.setattr(DurationEstimate, "EARLY_SECONDS", 0.0)  # as if the first epoch were slow
    assert cli.main(["train", "--net", "flat", "--iters", "100", "--no-plot"]) == 0
    err = capsys.readouterr().err
    early = re.search(r"fastbp: about [\d.e-]+ s per iteration: the 100 iterations should take "
                      r"about [\d.]+ s of training, plus an evaluation after each epoch "
                      r"\(a closer estimate follows the first epoch\)\n", err)
    later = err.index("fastbp: epoch 1 took")
    assert early and early.start() < later and err.count("should take") == 2
    assert cli.main(["train", "--net", "flat", "--iters", "100", "--no-plot", "-q"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: only the final line


def test_the_estimate_counts_the_rest():
    """Training at the first epoch's pace, an evaluation after each epoch, and the final
    one over the whole test set."""
    said = []
    evaluation = types.SimpleNamespace(seconds=2.0, sampled=True, n_train=1000, n_test=1000,
                                       n_final=10000)
    est = DurationEstimate(said.append, iters=1000, start=0, n_epochs=10, evaluation=evaluation)
    record = types.SimpleNamespace(epoch=1, iteration=100, steps=100, seconds=12.0)
    est.on_epoch(record)
    # 900 steps at 0.1 s, 8 evaluations of 2 s, the last over 11,000 images: 11 s
    assert said and "the 9 epochs left should take about 1 min 57 s" in said[0]
    assert "epoch 1 took 12 s (2.0 s of it evaluating)" in said[0]
    est.on_epoch(record)
    assert len(said) == 1  # once


def test_progress_bar_time_left_and_status(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(_progress.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = ProgressBar(1000, label="train", stream=stream, enabled=True)
    clock[0] += 30
    bar.update(100)
    assert bar._render().endswith("100/1000 3 it/s, 4 min 30 s left")
    bar.status("evaluating 1000/2000 images")
    assert stream.getvalue().endswith("4 min 30 s left  evaluating 1000/2000 images")
    clock[0] += 0.01
    bar.status("")  # removed at once
    assert stream.getvalue().endswith("4 min 30 s left" + " " * len("  evaluating 1000/2000 images"))
    assert [format_duration(s) for s in (0.25, 42, 75, 4000)] == ["0.2 s", "42 s", "1 min 15 s",
                                                                  "1 h 07 min"]


def test_a_replaced_network_keeps_its_evaluation_default():
    conv = cli.NETWORKS["conv"]
    assert dataclasses.replace(conv, help="x").eval_samples == 1000


def test_the_early_estimate_leaves_the_first_steps_set_up_out(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: clock[0])
    said = []
    evaluation = types.SimpleNamespace(seconds=None, sampled=False)
    est = DurationEstimate(said.append, iters=1000, start=0, n_epochs=2, evaluation=evaluation)
    clock[0] = 5.0  # the first step: buffers, threads
    est.on_step(1)
    for i in range(2, 102):
        clock[0] = 5.0 + 0.1 * (i - 1)
        est.on_step(i)
    # 15 s so far, 899 steps left at 0.1 s
    assert said == ["about 0.1 s per iteration: the 1000 iterations should take about 1 min 45 s "
                    "of training, plus an evaluation after each epoch (a closer estimate follows "
                    "the first epoch)"]
