"""The picture ``fastbp train`` writes: the loss of every batch and the accuracies after
each epoch, titled so that two pictures can be told apart (network, data, seed, final
accuracy). matplotlib is optional (the ``plot`` extra): :func:`save_curves` says False
without it."""
import os

import numpy as np

__all__ = ["curves_figure", "save_curves", "accuracy_limits", "plot_hint"]

# The narrowest accuracy axis: a run whose accuracies all lie within a few thousandths
# would otherwise fill the height with noise.
MIN_ACCURACY_SPAN = 0.02


def accuracy_limits(values):
    """``(low, high)`` for an accuracy axis that fits ``values`` (None ignored) with a
    margin of a tenth of their range, at least :data:`MIN_ACCURACY_SPAN` tall, never
    below 0, and above 1 only by half the margin (room for points at 1)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if high - low < MIN_ACCURACY_SPAN:
        middle = (low + high) / 2
        low, high = middle - MIN_ACCURACY_SPAN / 2, middle + MIN_ACCURACY_SPAN / 2
        if high > 1:
            low, high = 1 - MIN_ACCURACY_SPAN, 1.0
    margin = (high - low) / 10
    return max(low - margin, 0.0), min(high + margin, 1 + margin / 2)


def curves_figure(history, *, title, accuracy_title="accuracy after each epoch"):
    """A matplotlib ``Figure`` of ``history`` (a :class:`fastbp.loop.History`): the batch
    losses with their moving average, the train and test accuracies; ``title`` above."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4), layout="constrained")
    fig.suptitle(title)
    ax_loss, ax_acc = fig.subplots(1, 2)
    loss = np.asarray(history.loss)
    ax_loss.plot(np.arange(1, loss.size + 1), loss, lw=0.5, alpha=0.5, label="each batch")
    window = min(100, loss.size // 20)
    if window > 1:  # a centred moving average shows the trend through the noise
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        centre = np.arange(smooth.size) + (window + 1) / 2
        ax_loss.plot(centre, smooth, label=f"average of {window} consecutive batches")
    ax_loss.set(xlabel="iteration", ylabel="loss")
    ax_loss.set_title("training loss", fontsize="medium")
    ax_loss.legend()
    epochs = [e.iteration for e in history.epochs]
    ax_acc.plot(epochs, history.train_acc, marker="o", ms=3, label="train")
    ax_acc.plot(epochs, history.test_acc, marker="s", ms=3, ls="--", label="test")
    ax_acc.set(xlabel="iteration", ylabel="accuracy",
               ylim=accuracy_limits(history.train_acc + history.test_acc))
    ax_acc.set_title(accuracy_title, fontsize="medium")
    ax_acc.legend(loc="lower right")
    return fig


def save_curves(history, path, *, title, accuracy_title="accuracy after each epoch"):
    """Write :func:`curves_figure` to ``path`` (the format of its suffix, PNG without
    one; ``title`` also in the file's metadata); False when matplotlib is not
    installed."""
    try:
        import matplotlib  # noqa: F401 (only: is it there)
    except ImportError:
        return False
    fig = curves_figure(history, title=title, accuracy_title=accuracy_title)
    # a Title entry where the format has one (no suffix: matplotlib writes a PNG)
    titled = os.path.splitext(os.fspath(path))[1].lower() in ("", ".png", ".pdf", ".svg")
    fig.savefig(path, dpi=100, metadata={"Title": " ".join(title.split())} if titled else None)
    return True


def _source_tree():
    """The fastbp source folder this fastbp runs from (an editable install, or
    PYTHONPATH=src), or the current folder when it is one; else None."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.dirname(os.path.dirname(here)), os.getcwd()):
        try:
            with open(os.path.join(folder, "pyproject.toml"), encoding="utf-8") as f:
                if 'name = "fastbp"' in f.read():
                    return folder
        except OSError:
            continue
    return None


def plot_hint():
    """How to install the plot extra from where this fastbp came from: the source tree
    when there is one (an index may not have fastbp), else both ways."""
    tree = _source_tree()
    if tree is None:
        return 'pip install "fastbp[plot]" (from a source tree: pip install ".[plot]")'
    if os.path.realpath(tree) == os.path.realpath(os.getcwd()):
        return 'pip install ".[plot]"'
    return f'pip install "{tree}[plot]"'
