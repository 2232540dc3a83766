"""The ``fastbp`` command: ``fastbp train``, ``fastbp gradcheck``, ``fastbp bench``.

Also ``python -m fastbp``. Results go to stdout, messages and the progress bar to
stderr. Errors the user can fix (a bad option, missing or damaged data, an unwritable
path) end the command with one line, ``fastbp: error: ...``, and exit status 1
(2 for a bad command line, as argparse does), never with a traceback.
"""
import argparse
import importlib
import os
import secrets
import sys
import time
import warnings

import numpy as np

from . import __version__
from . import kernels
from .datasets import SampleDataWarning, load_mnist, locate_mnist
from ._progress import ProgressBar
from .networks import MultiLayerNetExtend, TwoLayerNet
from .optimizers import OPTIMIZERS, get_optimizer
from .training import iterations_per_epoch, train_two_layer

__all__ = ["main"]

BOOK_ITERS = 10000
SAMPLE_EPOCHS = 20  # default length of a run on the bundled sample: about a second
DEFAULT_PLOT = "fastbp-train.png"
PLOT_HINT = 'pip install "fastbp[plot]"'


class CommandError(Exception):
    """An error to report as one line (exit status 1)."""


# ---------------------------------------------------------------------- argument types

def _checked(convert, accept, expected):
    """An argparse type: ``convert(text)``, kept when ``accept(value)``, else a one-line
    error that says what was ``expected``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_seed = _checked(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _checked(float, lambda v: v > 0 and np.isfinite(v), "a positive number")
_non_negative_float = _checked(float, lambda v: v >= 0 and np.isfinite(v),
                               "a non-negative number")
_ratio = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_hidden_sizes = _checked(lambda text: tuple(int(part) for part in text.split(",")),
                         lambda sizes: min(sizes) >= 1,
                         "positive integers separated by commas (e.g. 50 or 100,100,100)")


def _add_common(p):
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the four MNIST IDX files (.gz or raw); default: "
                        "$FASTBP_DATA, the cache, a download, else the bundled sample")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type of the network (default: float64, as the book)")
    p.add_argument("--hidden", type=_hidden_sizes, default=None, metavar="N[,N...]",
                   help="hidden units: one size for TwoLayerNet (default: 50), a comma list "
                        "for --net multi (default: 100,100,100)")
    p.add_argument("--seed", type=_seed, default=None, metavar="N",
                   help="seed for the weights and the batches (default: a random one, printed)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastbp",
        description="Train and check the two-layer network of 'Deep Learning from Scratch' "
                    "(chapter 5) on MNIST, with fastbp's fast kernels.",
    )
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train", help="train TwoLayerNet on MNIST with SGD (the book's defaults)",
        description="Train the book's TwoLayerNet (784-50-10, ReLU) with mini-batch SGD: "
                    "10,000 iterations of batch 100 at learning rate 0.1 by default. One line "
                    "per epoch with the loss, train and test accuracy; at the end a plot of "
                    "the curves (needs matplotlib). On the bundled sample (used when the full "
                    f"set is not available) the default is {SAMPLE_EPOCHS} epochs.",
    )
    length = t.add_mutually_exclusive_group()
    length.add_argument("--iters", type=_positive_int, metavar="N",
                        help=f"iterations (default: {BOOK_ITERS}; {SAMPLE_EPOCHS} epochs on the sample)")
    length.add_argument("--epochs", type=_positive_int, metavar="N",
                        help="epochs instead of iterations (an epoch is train_size // batch_size iterations)")
    t.add_argument("--batch-size", type=_positive_int, default=100, metavar="N",
                   help="mini-batch size (default: 100)")
    t.add_argument("--lr", type=_positive_float, default=None, metavar="RATE",
                   help="learning rate (default: 0.1 for sgd, else the book's default of the "
                        "optimizer, e.g. 0.001 for adam)")
    t.add_argument("--net", choices=("two", "multi"), default="two",
                   help="two: the book's TwoLayerNet (default); multi: MultiLayerNetExtend "
                        "(chapter 6) with the hidden sizes of --hidden")
    t.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd",
                   help="update rule (default: sgd, as in chapter 5)")
    t.add_argument("--batchnorm", action="store_true",
                   help="batch normalization after every hidden Affine (--net multi)")
    t.add_argument("--dropout", type=_ratio, default=0.0, metavar="R",
                   help="dropout ratio of every hidden layer (--net multi; default: 0, none)")
    t.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="L",
                   help="L2 weight decay lambda (--net multi; default: 0)")
    _add_common(t)
    t.add_argument("--backend", choices=kernels.BACKENDS, default=None,
                   help=f"kernel backend (default: {kernels.get_backend()})")
    t.add_argument("--save", metavar="FILE.npz",
                   help="save the trained parameters W1, b1, W2, b2 (numpy .npz, no pickle)")
    plot = t.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="FILE.png",
                      help=f"where to write the loss and accuracy curves (default: {DEFAULT_PLOT}; "
                           f"needs matplotlib: {PLOT_HINT})")
    plot.add_argument("--no-plot", action="store_true", help="do not write the plot")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run under `mpirun -n N fastbp train --distributed`; "
                        "takes the options of `python -m fastbp.distributed --help` (needs fastbp[mpi])")
    t.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no per-epoch lines: only the final result")

    g = sub.add_parser(
        "gradcheck", help="compare backprop gradients with numerical ones on a real batch",
        description="The book's gradient check: the mean absolute difference between the "
                    "backpropagation gradients and central differences, per parameter, on the "
                    "first training images, for each backend.",
    )
    g.add_argument("--backend", choices=kernels.BACKENDS + ("both",), default="both",
                   help="backend(s) to check (default: both, when compiled)")
    g.add_argument("--batch", type=_positive_int, default=3, metavar="N",
                   help="number of training images (default: 3, as the book)")
    _add_common(g)

    sub.add_parser("bench", help="benchmark the kernels and a training step "
                                 "(options: fastbp bench --help)", add_help=False)
    return parser


# ---------------------------------------------------------------------- output and checks

def _error(message):
    print(f"fastbp: error: {message}", file=sys.stderr)


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _note(message):
    print(f"fastbp: {message}", file=sys.stderr)


def _check_writable(path, what):
    """Fail before a long run, not after it, when an output cannot be written."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise CommandError(f"{what}: {path} is a directory")
    if not os.path.isdir(folder):
        raise CommandError(f"{what}: no such directory: {folder}")
    if not os.access(folder, os.W_OK):
        raise CommandError(f"{what}: cannot write to {folder}")


def _load(args, *, progress):
    """Locate and load MNIST as the book does (normalized, flattened, integer labels);
    report on stderr which data is used. Returns ``(source, data)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleDataWarning)  # said below, in one line
        source = locate_mnist(args.data_dir, progress=progress)
    _note(f"data: {source}")
    return source, load_mnist(source=source)


def _backend_name(requested):
    name = requested or kernels.get_backend()
    kernels._module(name)  # refuses an unavailable backend with a clear message
    return name


# ---------------------------------------------------------------------- train

def _plot(history, path):
    """Write the loss and accuracy curves to ``path``; False when matplotlib is absent."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    loss = np.asarray(history.loss)
    ax_loss.plot(np.arange(1, loss.size + 1), loss, lw=0.5, alpha=0.5, label="batch")
    window = min(100, loss.size // 20)
    if window > 1:  # a centred moving average shows the trend through the noise
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        centre = np.arange(smooth.size) + (window + 1) / 2
        ax_loss.plot(centre, smooth, label=f"mean of {window}")
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training loss")
    ax_loss.legend()
    epochs = [e.iteration for e in history.epochs]
    ax_acc.plot(epochs, history.train_acc, marker="o", ms=3, label="train")
    ax_acc.plot(epochs, history.test_acc, marker="s", ms=3, ls="--", label="test")
    ax_acc.set(xlabel="iteration", ylabel="accuracy", title="accuracy at the end of each epoch",
               ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    fig.savefig(path, dpi=100)
    return True


def _check_net_options(args):
    """Refuse chapter-6 options on the book's TwoLayerNet (before any data is loaded)."""
    if args.net != "two":
        return
    extras = [name for name, used in (("--batchnorm", args.batchnorm), ("--dropout", args.dropout),
                                      ("--weight-decay", args.weight_decay)) if used]
    if extras:
        raise CommandError(f"{', '.join(extras)} {'needs' if len(extras) == 1 else 'need'} --net multi")
    if args.hidden and len(args.hidden) != 1:
        raise CommandError(f"--hidden: TwoLayerNet has one hidden layer, got {len(args.hidden)} "
                           "sizes (use --net multi)")


def _build(args, n_in, n_out, rng):
    """The network and optimizer that the options ask for, and a one-line description."""
    if args.net == "two":
        hidden = args.hidden or (50,)
        network = TwoLayerNet(n_in, hidden[0], n_out, dtype=args.dtype, rng=rng)
        name = "TwoLayerNet"
    else:
        hidden = args.hidden or (100, 100, 100)
        network = MultiLayerNetExtend(
            n_in, list(hidden), n_out, weight_decay_lambda=args.weight_decay,
            use_dropout=args.dropout > 0, dropout_ration=args.dropout,
            use_batchnorm=args.batchnorm, dtype=args.dtype, rng=rng)
        name = "MultiLayerNetExtend" if (args.batchnorm or args.dropout) else "MultiLayerNet"
    lr = args.lr if args.lr is not None else (0.1 if args.optimizer == "sgd" else None)
    optimizer = get_optimizer(args.optimizer, **({} if lr is None else {"lr": lr}))
    sizes = "-".join(str(n) for n in (n_in, *hidden, n_out))
    return network, optimizer, f"{name} {sizes}, {args.optimizer} lr {optimizer.lr:g}"


def cmd_train(args):
    _check_net_options(args)
    if args.save:
        _check_writable(args.save, "--save")
    if args.plot:  # asked for by name: must be writable (the default is best effort)
        _check_writable(args.plot, "--plot")
    plot_path = None if args.no_plot else (args.plot or DEFAULT_PLOT)
    backend = _backend_name(args.backend)
    show = not args.quiet
    bar_enabled = None if show else False  # None: when stderr is a terminal

    source, ((x_train, t_train), (x_test, t_test)) = _load(args, progress=bar_enabled)
    per_epoch = iterations_per_epoch(x_train.shape[0], args.batch_size)
    if args.iters is not None:
        iters = args.iters
    elif args.epochs is not None:
        iters = args.epochs * per_epoch
    elif source.is_sample or x_train.shape[0] < 60000:  # the sample, even by --data-dir
        iters = SAMPLE_EPOCHS * per_epoch
        _note(f"on the sample the default run is {_plural(SAMPLE_EPOCHS, 'epoch')} "
              f"({_plural(iters, 'iteration')}); "
              "use --iters or --epochs to change it, --data-dir for the full set")
    else:
        iters = BOOK_ITERS
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    n_epochs = -(-iters // per_epoch)
    rng = np.random.default_rng(seed)  # the weights, then the batches
    network, optimizer, description = _build(args, x_train.shape[1], 10, rng)

    if show:
        print(f"{description}, {args.dtype}, {backend} backend; "
              f"{_plural(iters, 'iteration')} of batch {args.batch_size} "
              f"({_plural(n_epochs, 'epoch')} of {per_epoch}), seed {seed}", flush=True)

    bar = ProgressBar(iters, label="train", enabled=bar_enabled)
    width = len(str(n_epochs))

    def on_epoch(r):
        if show:
            partial = f" ({r.steps} it)" if r.steps != per_epoch else ""
            bar.write(f"epoch {r.epoch:>{width}}/{n_epochs}{partial}  loss {r.loss:.4f}  "
                      f"train acc {r.train_acc:.4f}  test acc {r.test_acc:.4f}  {r.seconds:.2f} s")

    with kernels.use_backend(backend), bar:
        result = train_two_layer(
            x_train, t_train, x_test, t_test, network=network, optimizer=optimizer,
            iters=iters, batch_size=args.batch_size, seed=rng,
            on_step=lambda i: bar.update(), on_epoch=on_epoch,
        )
    last = result.history.epochs[-1]
    print(f"done: {_plural(iters, 'iteration')} in {result.seconds:.1f} s; train acc {last.train_acc:.4f}, "
          f"test acc {last.test_acc:.4f}", flush=True)

    if args.save:
        with open(args.save, "wb") as f:  # a file object: np.savez keeps the name as given
            np.savez(f, **result.network.params)
        _note(f"saved the parameters to {args.save}")
    if plot_path:
        try:
            written = _plot(result.history, plot_path)
        except OSError as exc:
            if args.plot:
                raise
            _note(f"no plot: cannot write {plot_path} ({exc.strerror or exc}); see --plot")
        else:
            if written:
                _note(f"wrote the loss and accuracy curves to {plot_path}")
            else:
                _note(f"no plot: matplotlib is not installed; {PLOT_HINT} to get {plot_path}")
    return 0


# ---------------------------------------------------------------------- gradcheck

# Mean absolute difference above which the check fails. float64 central differences
# agree to ~1e-7 at worst (the book prints up to 1.4e-7); float32 rounding makes
# (f(x+h) - f(x-h)) / 2h uncertain at ~1e-3.
GRADCHECK_TOL = {"float64": 1e-6, "float32": 1e-2}


def cmd_gradcheck(args):
    if args.backend == "both":
        backends = [b for b in kernels.BACKENDS if b != "cython" or kernels.HAVE_CYTHON]
    else:
        backends = [_backend_name(args.backend)]
    _, ((x_train, t_train), _) = _load(args, progress=None)
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    x, t = x_train[:args.batch].astype(args.dtype), t_train[:args.batch]
    hidden = args.hidden or (50,)
    if len(hidden) != 1:
        raise CommandError(f"--hidden: TwoLayerNet has one hidden layer, got {len(hidden)} sizes")
    network = TwoLayerNet(x.shape[1], hidden[0], 10, dtype=args.dtype, rng=seed)
    tol = GRADCHECK_TOL[args.dtype]
    print(f"gradient check: TwoLayerNet {x.shape[1]}-{hidden[0]}-10, {args.dtype}, "
          f"{x.shape[0]} training images, seed {seed}")
    print("mean |backprop - numerical| per parameter:")
    worst = 0.0
    for backend in backends:
        with kernels.use_backend(backend):
            start = time.perf_counter()
            numerical = network.numerical_gradient(x, t)
            backprop = network.gradient(x, t)
            seconds = time.perf_counter() - start
        diffs = {k: float(np.mean(np.abs(backprop[k] - numerical[k]))) for k in numerical}
        worst = max(worst, *diffs.values())
        cells = "  ".join(f"{k}:{v:.2e}" for k, v in diffs.items())
        print(f"  {backend:<6}  {cells}  ({seconds:.1f} s)")
    ok = worst <= tol
    print(f"{'ok' if ok else 'FAILED'}: largest difference {worst:.2e} "
          f"({'within' if ok else 'above'} {tol:g} for {args.dtype})")
    return 0 if ok else 1


# ---------------------------------------------------------------------- bench

def cmd_bench(argv):
    try:
        bench = importlib.import_module("fastbp.bench")
    except ModuleNotFoundError as exc:
        if exc.name == "fastbp.bench":
            raise CommandError("the benchmark module (fastbp.bench) is not part of this installation") from None
        raise CommandError(f"fastbp bench needs {exc.name}: {exc}; "
                           'pip install "fastbp[bench]"') from None
    return bench.main(argv)


# ---------------------------------------------------------------------- main

def main(argv=None):
    """Run the ``fastbp`` command with ``argv`` (default: ``sys.argv[1:]``); returns the
    exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["book"]:  # the rest is a book script and its own arguments
        from .book import main as book_main
        return book_main(argv[1:], prog="fastbp book")
    if argv and argv[0] == "bench":  # its options belong to fastbp.bench
        commands = {"bench": lambda: cmd_bench(argv[1:])}
        args = None
    elif argv[:1] == ["train"] and "--distributed" in argv:
        # data-parallel training over MPI (under mpirun): fastbp.distributed's options
        from . import distributed
        return distributed.main([a for a in argv[1:] if a != "--distributed"])
    else:
        parser = build_parser()
        args = parser.parse_args(argv)  # exits 2 with a usage line on a bad option
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        commands = {"train": lambda: cmd_train(args), "gradcheck": lambda: cmd_gradcheck(args)}
    command = argv[0]
    try:
        return commands[command]() or 0
    except BrokenPipeError:  # `fastbp train | head`: the reader has gone, stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit cannot fail
        except (OSError, ValueError):
            pass
        return 1
    except CommandError as exc:
        _error(exc)
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as exc:
        _error(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _error("interrupted")
        return 130
    return 1
