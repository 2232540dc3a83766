"""The ``fastbp`` command: ``fastbp train``, ``fastbp gradcheck``, ``fastbp bench``.

Also ``python -m fastbp``. One ``argparse`` parser with a subcommand per job: adding a
subcommand is one ``_add_*`` function in :data:`SUBCOMMANDS`, adding a network to
``fastbp train --net`` is one entry of :data:`NETWORKS`. ``fastbp train --distributed``
is the same command, with the same options and checks, run under ``mpirun``.

Results go to stdout, notes and the progress bar to stderr. A bad command line ends
with one line, ``fastbp: error: ... (see fastbp COMMAND --help)``, and exit status 2
(as ``git`` and ``pip``); other errors the user can fix (missing or damaged data, an
unwritable path, a checkpoint of another run) with one line ``fastbp: error: ...`` and
status 1, never with a traceback.
"""
import argparse
import difflib
import math
import os
import secrets
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

from . import __version__
from . import kernels
from ._plot import plot_hint
from ._progress import DurationEstimate, ProgressBar
from .datasets import SampleDataWarning, load_mnist, locate_mnist
from .gradcheck import TOLERANCE, gradient_check
from .loop import SAMPLERS, Evaluation, History, accuracies, local_step, run_loop
from .networks import CONV_RECIPE, MultiLayerNetExtend, TwoLayerNet, build_conv_network
from .optimizers import OPTIMIZERS, get_optimizer
from .serialization import check_writable

__all__ = ["main", "build_parser", "NETWORKS", "SUBCOMMANDS"]

BOOK_ITERS = 10000
SAMPLE_EPOCHS = 20  # default length of a run on the bundled sample: about a second
DEFAULT_PLOT = "fastbp-train.png"
# The book's ch07/train_convnet.py and ch08/train_deepnet.py pass the Trainer
# evaluate_sample_num_per_epoch=1000: a convolutional network scoring all 70,000 images
# after every epoch would spend a large part of each epoch on it.
CONV_EVAL_SAMPLES = 1000


class CommandError(Exception):
    """An error to report as one line; ``status`` 1, or 2 for a usage error."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and a hint at ``--help`` (status 2).

    Options are never abbreviated (``allow_abbrev=False``): a prefix such as ``--epoch``
    is an unknown option (with a suggestion), not silently ``--epochs``, so that a
    command line keeps its meaning when an option is added."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise CommandError(f"{message} (see {self.prog} --help)", status=2)


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
_seed = _checked(int, lambda v: 0 <= v < 2**63, "a non-negative integer")
_positive_float = _checked(float, lambda v: v > 0 and np.isfinite(v), "a positive number")
_non_negative_float = _checked(float, lambda v: v >= 0 and np.isfinite(v),
                               "a non-negative number")
_ratio = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_eval_samples = _checked(lambda text: "all" if text == "all" else int(text),
                         lambda v: v == "all" or v >= 1, "a positive integer or 'all'")
_hidden_sizes = _checked(lambda text: tuple(int(part) for part in text.split(",")),
                         lambda sizes: min(sizes) >= 1,
                         "positive integers separated by commas (e.g. 50 or 100,100,100)")


# ---------------------------------------------------------------------- networks

@dataclass(frozen=True)
class Network:
    """A choice of ``fastbp train --net``.

    ``build(args, n_in, n_out, rng)`` returns ``(network, description)``, e.g.
    ``"TwoLayerNet 784-50-10"``; ``hidden_layers``: how many sizes ``--hidden`` may give
    (None: any); ``chapter6``: accepts --batchnorm, --dropout, --weight-decay;
    ``images``: takes (N, 1, 28, 28) images instead of (N, 784) rows; ``optimizer``,
    ``lr``: the defaults of --optimizer and --lr (``lr`` None: the optimizer's own
    default, 0.1 for sgd); ``epochs``: the default length on the full set (None: the
    book's 10,000 iterations); ``eval_samples``: the default of --eval-samples, how many
    images of each set are scored after an epoch (None: all)."""

    label: str
    help: str
    build: Callable
    hidden_layers: Optional[int] = None
    chapter6: bool = False
    images: bool = False
    optimizer: str = "sgd"
    lr: Optional[float] = None
    epochs: Optional[int] = None
    eval_samples: Optional[int] = None


def _two_layer(args, n_in, n_out, rng):
    hidden = args.hidden or (50,)
    network = TwoLayerNet(n_in, hidden[0], n_out, dtype=args.dtype, rng=rng)
    return network, f"TwoLayerNet {n_in}-{hidden[0]}-{n_out}"


def _multi_layer(args, n_in, n_out, rng):
    hidden = args.hidden or (100, 100, 100)
    network = MultiLayerNetExtend(
        n_in, list(hidden), n_out, weight_decay_lambda=args.weight_decay,
        use_dropout=args.dropout > 0, dropout_ration=args.dropout,
        use_batchnorm=args.batchnorm, dtype=args.dtype, rng=rng)
    name = "MultiLayerNetExtend" if (args.batchnorm or args.dropout) else "MultiLayerNet"
    return network, f"{name} {'-'.join(str(n) for n in (n_in, *hidden, n_out))}"


def _conv(name):
    def build(args, n_in, n_out, rng):
        network = build_conv_network(name, args.hidden[0] if args.hidden else None,
                                     dtype=args.dtype, rng=rng)
        hidden = network.params["b2" if name == "conv" else "b7"].size
        return network, f"{type(network).__name__} 1x28x28-{hidden}-{n_out}"
    return build


# Adding a network to `fastbp train` is one entry here.
NETWORKS = {
    "two": Network("TwoLayerNet", "the book's TwoLayerNet (default)", _two_layer,
                   hidden_layers=1),
    "multi": Network("MultiLayerNetExtend",
                     "MultiLayerNetExtend (chapter 6) with the hidden sizes of --hidden",
                     _multi_layer, chapter6=True),
    "conv": Network("SimpleConvNet", "SimpleConvNet (chapter 7), trained as the book: adam "
                    "0.001, 20 epochs", _conv("conv"), hidden_layers=1, images=True,
                    optimizer=CONV_RECIPE["optimizer"], lr=CONV_RECIPE["lr"],
                    epochs=CONV_RECIPE["epochs"], eval_samples=CONV_EVAL_SAMPLES),
    "deep": Network("DeepConvNet", "DeepConvNet (chapter 8), trained as the book: adam "
                    "0.001, 20 epochs", _conv("deep"), hidden_layers=1, images=True,
                    optimizer=CONV_RECIPE["optimizer"], lr=CONV_RECIPE["lr"],
                    epochs=CONV_RECIPE["epochs"], eval_samples=CONV_EVAL_SAMPLES),
}


# ---------------------------------------------------------------------- the parser

def _add_common(p, *, hidden, seed):
    """The options train and gradcheck share, with each command's own ``hidden`` and
    ``seed`` help texts."""
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the four MNIST IDX files (.gz or raw); default: "
                        "$FASTBP_DATA, the cache (~/.cache/fastbp/mnist), a download, else "
                        "the bundled sample")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type of the network (default: float64, as the book)")
    p.add_argument("--hidden", type=_hidden_sizes, default=None, metavar="N[,N...]", help=hidden)
    p.add_argument("--seed", type=_seed, default=None, metavar="N", help=seed)


def _add_train(sub):
    t = sub.add_parser(
        "train", help="train a network of the book on MNIST (default: TwoLayerNet with SGD)",
        description="Train the book's TwoLayerNet (784-50-10, ReLU) with mini-batch SGD: "
                    "10,000 iterations of batch 100 at learning rate 0.1 by default. One line "
                    "per epoch with the loss, train and test accuracy; at the end a plot of "
                    "the curves (needs matplotlib). On the bundled sample (used when the full "
                    f"set is not available) the default is {SAMPLE_EPOCHS} epochs. Under "
                    "mpirun, --distributed trains data-parallel with the same options.",
    )
    length = t.add_mutually_exclusive_group()
    length.add_argument("--iters", type=_positive_int, metavar="N",
                        help=f"iterations (default: {BOOK_ITERS}; {SAMPLE_EPOCHS} epochs on the sample)")
    length.add_argument("--epochs", type=_positive_int, metavar="N",
                        help="epochs instead of iterations (an epoch: see --sampler)")
    t.add_argument("--batch-size", type=_positive_int, default=100, metavar="N",
                   help="mini-batch size (default: 100)")
    t.add_argument("--sampler", choices=tuple(SAMPLERS), default="book",
                   help="book: each batch drawn with replacement, as the book's np.random.choice, "
                        "an epoch of train_size / batch_size iterations (default); shuffle: one "
                        "shuffled pass per epoch of train_size // batch_size iterations")
    t.add_argument("--lr", type=_positive_float, default=None, metavar="RATE",
                   help="learning rate (default: 0.1 for sgd, else the book's default of the "
                        "optimizer, e.g. 0.001 for adam)")
    t.add_argument("--net", choices=tuple(NETWORKS), default="two",
                   help="; ".join(f"{name}: {net.help}" for name, net in NETWORKS.items()))
    t.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=None,
                   help="update rule (default: sgd, as in chapter 5)")
    t.add_argument("--batchnorm", action="store_true",
                   help="batch normalization after every hidden Affine (--net multi)")
    t.add_argument("--dropout", type=_ratio, default=0.0, metavar="R",
                   help="dropout ratio of every hidden layer (--net multi; default: 0, none)")
    t.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="L",
                   help="L2 weight decay lambda (--net multi; default: 0)")
    t.add_argument("--eval-samples", type=_eval_samples, default=None, metavar="N|all",
                   help="images of each set scored after every epoch: the first N, or all "
                        f"(default: all; --net conv and deep: {CONV_EVAL_SAMPLES}, as the "
                        "book's Trainer, and the whole test set after the last epoch)")
    _add_common(t, hidden="hidden units: one size for TwoLayerNet (default: 50) and the CNNs "
                          "(default: 100, DeepConvNet 50), a comma list for --net multi "
                          "(default: 100,100,100)",
                seed="seed for the initial weights and the batches (default: a random one, "
                     "printed)")
    t.add_argument("--backend", choices=kernels.BACKENDS, default=None,
                   help=f"kernel backend (default: {kernels.get_backend()})")
    t.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads for fastbp's kernels and matrix products (default: the "
                        "CPU count, at most 8, or FASTBP_NUM_THREADS)")
    t.add_argument("--save", metavar="FILE.npz",
                   help="save the trained network (parameters and batch-norm statistics; "
                        ".npz, no pickle) for net.load_params(FILE)")
    plot = t.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="FILE.png",
                      help=f"where to write the loss and accuracy curves (default: {DEFAULT_PLOT}; "
                           "needs matplotlib, the plot extra: pip install \".[plot]\" from a "
                           "source tree)")
    plot.add_argument("--no-plot", action="store_true", help="do not write the plot")
    t.add_argument("--checkpoint", metavar="FILE.npz",
                   help="write the network, the optimizer's state and the progress after "
                        "every epoch (atomically)")
    t.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint if it exists (same seed, batch size, "
                        "sampler and network)")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run as `mpirun -n N fastbp train --distributed "
                        "...` (needs Open MPI and mpi4py: fastbp[mpi])")
    t.add_argument("--timeout", type=_non_negative_float, default=None, metavar="SECONDS",
                   help="--distributed: seconds before a stuck collective aborts the job "
                        "(default: 120; 0: none)")
    t.add_argument("-q", "--quiet", action="store_true",
                   help="print only the final line (errors still go to stderr)")
    t.set_defaults(run=cmd_train, validate=_check_train_options)


def _add_gradcheck(sub):
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
    _add_common(g, hidden="hidden units of the TwoLayerNet checked (default: 50)",
                seed="seed for the initial weights (default: a random one, printed)")
    g.set_defaults(run=cmd_gradcheck, validate=_check_gradcheck_options)


def _add_bench(sub):
    b = sub.add_parser("bench", help="time fastbp against the book's NumPy code on this machine",
                       description="fastbp's training steps and layers against the book's plain "
                       "NumPy code; PyTorch, JAX, a busy machine: benchmarks/compare.py (source tree)")
    b.add_argument("--quick", action="store_true", help="the steps of 784-50-10 and SimpleConvNet "
                   "only: under a minute on 2 quiet cores (the full run: a few minutes)")
    b.add_argument("--dtype", choices=("float64", "float32", "both"), default="both")
    b.add_argument("--only", action="append", metavar="TEXT", help="cases whose name has TEXT")
    b.add_argument("--threads", type=_positive_int, metavar="N", help="fastbp's (and BLAS's)")
    b.add_argument("--budget", type=_positive_float, metavar="S", help="seconds per case")
    b.add_argument("--repeats", type=_positive_int, metavar="N", help="interleaved rounds")
    b.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    b.set_defaults(run=cmd_bench, validate=_check_bench_options)


def _check_bench_options(args):
    from .bench import select
    args.dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    if args.only and not select(args.quick, args.dtypes, args.only):
        raise CommandError(f"--only {' '.join(args.only)}: no case matches"
                           + (" with --quick" if args.quick else ""), status=2)
    if args.json:
        check_writable(args.json, "--json")


def _add_book(sub):
    # The rest of the line is a book script and its own arguments: forward=True.
    b = sub.add_parser("book", add_help=False,
                       help="run one of the book's scripts on fastbp (fastbp book [--seed N] SCRIPT [ARGS])")
    b.set_defaults(run=cmd_book, validate=None, forward=True)


# Adding a subcommand is one `_add_*` function here: it sets `run` (the command) and
# `validate` (checks of the parsed options, or None), or `forward=True` to receive the
# rest of the command line unparsed as `args.argv`.
SUBCOMMANDS = [_add_train, _add_gradcheck, _add_bench, _add_book]


def build_parser():
    parser = Parser(
        prog="fastbp",
        description="Train and check the networks of 'Deep Learning from Scratch' on MNIST, "
                    "with fastbp's fast kernels.",
    )
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in SUBCOMMANDS:
        add(sub)
    parser.commands = sub.choices  # name -> the subcommand's parser
    return parser


def _unrecognized(rest, parser):
    """``unrecognized arguments: ...``, with the option meant when one is close (a
    prefix, say, now that options are never abbreviated)."""
    known = [o for o in parser._option_string_actions if o.startswith("--")]
    for word in rest:
        name = word.split("=", 1)[0]
        if name.startswith("--"):
            close = ([o for o in known if o.startswith(name)]
                     or difflib.get_close_matches(name, known, n=1))
            if close:
                return f"unrecognized arguments: {' '.join(rest)} (did you mean {close[0]}?)"
    return f"unrecognized arguments: {' '.join(rest)}"


def _check_train_options(args):
    """Combinations argparse cannot express; a usage error (status 2), before any work."""
    net = NETWORKS[args.net]
    if not net.chapter6:
        extras = [name for name, used in (("--batchnorm", args.batchnorm), ("--dropout", args.dropout),
                                          ("--weight-decay", args.weight_decay)) if used]
        if extras:
            raise CommandError(f"{', '.join(extras)} {'needs' if len(extras) == 1 else 'need'} "
                               "--net multi", status=2)
    if args.hidden and net.hidden_layers is not None and len(args.hidden) > net.hidden_layers:
        layers = "one hidden layer" if net.hidden_layers == 1 else f"{net.hidden_layers} hidden layers"
        raise CommandError(f"--hidden: {net.label} has {layers}, got {len(args.hidden)} sizes "
                           "(use --net multi)", status=2)
    if args.resume and not args.checkpoint:
        raise CommandError("--resume needs --checkpoint FILE", status=2)
    if args.timeout is not None and not args.distributed:
        raise CommandError("--timeout needs --distributed", status=2)
    outputs = [("--save", args.save), ("--checkpoint", args.checkpoint),
               ("--plot", None if args.no_plot else (args.plot or DEFAULT_PLOT))]
    seen = {}
    for option, path in outputs:
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in seen:
            default = " (the default plot; use --plot or --no-plot)" if not args.plot and option == "--plot" else ""
            raise CommandError(f"{seen[real]} and {option} name the same file {path}{default}",
                               status=2)
        seen[real] = option


def _check_gradcheck_options(args):
    if args.hidden and len(args.hidden) != 1:
        raise CommandError(f"--hidden: TwoLayerNet has one hidden layer, got {len(args.hidden)} sizes",
                           status=2)


# ---------------------------------------------------------------------- output and checks

def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


class _Output:
    """What a run prints: everything on one process or MPI rank 0, nothing elsewhere;
    with --quiet only the final line (and errors)."""

    def __init__(self, root, quiet):
        self.root, self.quiet = root, quiet

    def note(self, message):
        if self.root and not self.quiet:
            print(f"fastbp: {message}", file=sys.stderr, flush=True)

    def line(self, text):
        if self.root and not self.quiet:
            print(text, flush=True)

    def final(self, text):
        if self.root:
            print(text, flush=True)


def _check_writable(path, what):
    """Fail before a long run, not after it, when an output cannot be written."""
    try:
        check_writable(path, what)
    except OSError as exc:
        raise CommandError(str(exc)) from None


def _check_backend(name):
    """The backend to use; refuses an unavailable one with a clear message."""
    name = name or kernels.get_backend()
    with kernels.use_backend(name):  # raises for a backend that is not built
        pass
    return name


def _load(args, out, *, progress):
    """Locate and load MNIST as the book does (normalized, flattened, integer labels);
    report on stderr which data is used. Returns ``(source, data)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleDataWarning)  # said below, in one line
        source = locate_mnist(args.data_dir, progress=progress)
    out.note(f"data: {source}")
    return source, load_mnist(source=source)


# ---------------------------------------------------------------------- train

def _one_line(work):
    """``work`` with the errors a user can fix turned into :class:`CommandError`."""
    def run():
        try:
            return work()
        except (OSError, ValueError, RuntimeError) as exc:
            raise CommandError(str(exc) or type(exc).__name__) from None
    return run


def _communicator(args):
    """MPI's world for --distributed (None without): a missing mpi4py or MPI library
    is a one-line error, status 2."""
    if not args.distributed:
        return None
    from .distributed.collectives import MPIUnavailable, mpi
    try:
        return mpi().COMM_WORLD
    except MPIUnavailable as exc:
        raise CommandError(str(exc), status=2) from None


def _run_length(args, train_size, sampler, out):
    """The number of iterations the options ask for."""
    if args.iters is not None:
        return args.iters
    if args.epochs is not None:
        return math.ceil(args.epochs * sampler.epoch_length)
    full_epochs = NETWORKS[args.net].epochs
    if train_size < 60000:  # the sample, or a small set given by --data-dir
        iters = math.ceil(SAMPLE_EPOCHS * sampler.epoch_length)
        out.note(f"on the sample the default run is {_plural(SAMPLE_EPOCHS, 'epoch')} "
                 f"({_plural(iters, 'iteration')}); "
                 "use --iters or --epochs to change it, --data-dir for the full set")
        return iters
    return BOOK_ITERS if full_epochs is None else math.ceil(full_epochs * sampler.epoch_length)


def _optimizer(args):
    """The optimizer of --optimizer and --lr, with the network's defaults."""
    net = NETWORKS[args.net]
    name = args.optimizer or net.optimizer
    lr = args.lr
    if lr is None:
        lr = net.lr if name == net.optimizer and net.lr is not None else (0.1 if name == "sgd" else None)
    return name, get_optimizer(name, **({} if lr is None else {"lr": lr}))


def cmd_train(args):
    comm = _communicator(args)
    if comm is None:
        return _train(args, None)
    from .distributed.collectives import abort_on_error
    # A failure on one rank aborts them all, except the errors every rank meets at the
    # same point (a bad checkpoint, a failed start-up check on rank 0): those end each
    # rank normally, with one line from rank 0.
    with abort_on_error(comm, agreed=(CommandError, SystemExit)):
        return _train(args, comm)


def _data_label(source, n_train, n_test):
    """Which data a run trained on, for its last line and its plot's title."""
    if source.is_sample:
        return f"the bundled MNIST sample ({n_train} training images)"
    if (n_train, n_test) == (60000, 10000):
        return "the full MNIST"
    return f"MNIST from {source.path} ({n_train} training images)"


def _scored(evaluation, n_train):
    """What a sampled :class:`~fastbp.loop.Evaluation` scores, in the words of each line
    that shows it: the note before the run, the marks of the last epoch line and of the
    final line, the plot's subtitle (all empty when it scores every image)."""
    some_train = evaluation.n_train < n_train
    some_test = evaluation.n_test < evaluation.n_final
    k, n_test = evaluation.n_train, evaluation.n_final
    test = (f"the first {evaluation.n_test} test images, after the last epoch all {n_test}"
            if some_test else f"all {n_test} test images")
    train = f"the first {k} training images" if some_train else f"all {k} training images"
    plot = (f"\non the first {k} images of each set\n(the last test point: all {n_test})"
            if some_test else f"\ntrain: the first {k} images; test: all" if some_train else "")
    return argparse.Namespace(
        note=(f"accuracies after each epoch on {train} and {test}, as the book's Trainer "
              "(--eval-samples all: every image, every epoch)") if evaluation.sampled else "",
        last_line=" (whole test set)" if some_test else "",
        train=f" (first {k} images)" if some_train else "",
        test=f" (all {n_test})" if some_test else "", plot=plot)


def _train(args, comm):
    timeout = None
    root = comm is None or comm.Get_rank() == 0
    out = _Output(root, args.quiet)
    bar_enabled = None if root and not args.quiet else False  # None: when stderr is a terminal

    def prepare():  # the checks and the data: one process, or MPI rank 0
        for option in ("save", "checkpoint", "plot"):  # a named plot must be writable
            if getattr(args, option):
                _check_writable(getattr(args, option), f"--{option}")
        _check_backend(args.backend)
        source, data = _load(args, out, progress=bar_enabled)
        seed = args.seed if args.seed is not None else secrets.randbits(32)
        return data, seed, _data_label(source, data[0][0].shape[0], data[1][0].shape[0])

    backend = args.backend or kernels.get_backend()
    if args.threads is not None:
        kernels.set_num_threads(args.threads)
    if comm is None:
        ((x_train, t_train), (x_test, t_test)), seed, data_label = prepare()
    else:
        from .distributed.collectives import DEFAULT_TIMEOUT, bcast, root_first
        from .distributed.data_parallel import broadcast_data, share_cores
        timeout = DEFAULT_TIMEOUT if args.timeout is None else (args.timeout or None)
        # Rank 0 checks and loads (a failure there is one line, and every rank stops),
        # then sends the data and the seed to the others.
        prepared = root_first(comm, _one_line(prepare), timeout=timeout)
        ((x_train, t_train), (x_test, t_test)), seed, data_label = (
            prepared or (((None,) * 2,) * 2, 0, None))
        header = np.array([seed], dtype=np.uint64)
        bcast(comm, header, 0, timeout, "the seed broadcast")
        seed = int(header[0])
        x_train, t_train, x_test, t_test = broadcast_data(
            comm, x_train, t_train, x_test, t_test, timeout=timeout)
        note = share_cores(comm)
        if note:
            out.note(note)

    sampler = SAMPLERS[args.sampler](x_train.shape[0], args.batch_size, seed)
    iters = _run_length(args, x_train.shape[0], sampler, out)
    n_epochs = max(sampler.epoch_of(iters - 1) + 1, 1)
    rng = np.random.default_rng(seed)  # the initial weights (the sampler has its own streams)
    net = NETWORKS[args.net]
    if net.images:  # the convolutional networks take (N, 1, 28, 28)
        x_train, x_test = x_train.reshape(-1, 1, 28, 28), x_test.reshape(-1, 1, 28, 28)
    network, description = net.build(args, x_train.shape[1] if x_train.ndim == 2 else None, 10, rng)
    optimizer_name, optimizer = _optimizer(args)
    ranks = "" if comm is None else f", data-parallel on {_plural(comm.Get_size(), 'MPI rank')}"
    out.line(f"{description}, {optimizer_name} lr {optimizer.lr:g}, {args.dtype}, {backend} backend"
             f"{ranks}; {_plural(iters, 'iteration')} of batch {args.batch_size} "
             f"({_plural(n_epochs, 'epoch')} of {sampler.epoch_length:.4g}), seed {seed}")

    run = {"seed": seed, "batch_size": args.batch_size, "train_size": int(x_train.shape[0]),
           "sampler": sampler.name, "net": args.net,
           "optimizer_name": optimizer_name}  # a resumed run must have the same
    bar = ProgressBar(None, label="train", enabled=bar_enabled)  # its total: below
    samples = net.eval_samples if args.eval_samples is None else args.eval_samples
    if comm is None:
        step = local_step(network, optimizer, x_train, t_train)
        # a CNN in chunks of 1,000 images, so that the evaluation's progress moves
        progress = ((lambda done, total: bar.status(f"evaluating {done}/{total} images"))
                    if bar.enabled else None)
        make = partial(accuracies, network, chunk=1000 if net.images else 10000, progress=progress)
        before_evaluate = None
    else:
        from .distributed.data_parallel import DataParallel
        dp = DataParallel(network, optimizer, comm, timeout=timeout)
        step = dp.make_step(x_train, t_train)
        make = dp.make_evaluate
        before_evaluate = dp.sync_state
    evaluation = Evaluation(make, x_train, t_train, x_test, t_test,
                            None if samples == "all" else samples, after=lambda: bar.status(""))
    scored = _scored(evaluation, x_train.shape[0])
    if scored.note:
        out.note(scored.note)

    start, history = _resume(args, comm, network, optimizer, run, timeout)
    if start:
        out.note(f"resumed from {args.checkpoint} after {_plural(start, 'iteration')}")
    history = History() if history is None else history

    bar.total = iters - start
    width = len(str(n_epochs))
    hooks = []
    estimate = None
    if root and not args.quiet:
        def show(r):
            partial = "" if r.complete else f" ({r.steps} it)"
            bar.write(f"epoch {r.epoch:>{width}}/{n_epochs}{partial}  loss {r.loss:.4f}  "
                      f"train acc {r.train_acc:.4f}  test acc {r.test_acc:.4f}"
                      f"{scored.last_line if r.iteration == iters else ''}  {r.seconds:.2f} s")
        hooks.append(show)
        estimate = DurationEstimate(lambda text: bar.write(f"fastbp: {text}", file=sys.stderr),
                                    iters, start, n_epochs, evaluation)
        hooks.append(estimate.on_epoch)
    if args.checkpoint and root:
        from .distributed.checkpoints import epoch_saver
        hooks.append(epoch_saver(args.checkpoint, network, optimizer, run, history))

    def on_epoch(record):
        for hook in hooks:
            hook(record)

    def on_step(i, loss):
        bar.update()
        if estimate is not None:
            estimate.on_step(i)

    tic = time.perf_counter()
    with kernels.use_backend(backend), bar:
        run_loop(sampler, step, iters, evaluate=evaluation.epoch, start=start, history=history,
                 on_step=on_step, on_epoch=on_epoch, before_evaluate=before_evaluate,
                 evaluate_final=evaluation.final)
    seconds = time.perf_counter() - tic
    if not root:
        return 0
    last = history.epochs[-1] if history.epochs else None
    result = (f"train acc {last.train_acc:.4f}{scored.train}, test acc {last.test_acc:.4f}"
              f"{scored.test}" if last else "nothing left to train")
    out.final(f"done: {_plural(iters, 'iteration')} in {seconds:.1f} s on {data_label}; {result}")

    if args.save:
        network.save_params(args.save)
        out.note(f"saved the network to {args.save} (load it with load_params)")
    plot_path = None if args.no_plot else (args.plot or DEFAULT_PLOT)
    if plot_path:
        final = f"final test accuracy {last.test_acc:.4f}" if last else "not evaluated"
        title = f"{description} on {data_label}, seed {seed}\n{final} after {_plural(iters, 'iteration')}"
        try:
            written = _plot(history, plot_path, title=title,
                            accuracy_title="accuracy after each epoch" + scored.plot)
        except OSError as exc:
            if args.plot:
                raise
            out.note(f"no plot: cannot write {plot_path} ({exc.strerror or exc}); see --plot")
        else:
            if written:
                out.note(f"wrote the loss and accuracy curves to {plot_path}")
            else:
                out.note(f"no plot: matplotlib is not installed; {plot_hint()} to get {plot_path}")
    return 0


def _resume(args, comm, network, optimizer, run, timeout):
    """``(start, history)`` from ``--checkpoint`` with ``--resume`` when it exists, else
    ``(0, None)``. A checkpoint of another run or a damaged one is an error (status 1)."""
    if not (args.resume and args.checkpoint):
        return 0, None
    from .distributed import checkpoints
    if comm is None:
        if not os.path.exists(args.checkpoint):
            return 0, None
        arrays = checkpoints.load_checkpoint(args.checkpoint)
        return checkpoints.resume_from(arrays, network, optimizer, args.checkpoint, run)
    from .distributed.collectives import bcast_arrays, root_first
    # Rank 0 reads the file (a damaged one is a one-line error there); every rank then
    # checks the same arrays against the same network, so all fail or none does.
    path = args.checkpoint
    arrays = root_first(comm, _one_line(lambda: checkpoints.load_checkpoint(path)
                                        if os.path.exists(path) else {}), timeout=timeout)
    arrays = bcast_arrays(comm, arrays, 0, timeout, "the checkpoint broadcast")
    if not arrays:
        return 0, None
    try:
        return checkpoints.resume_from(arrays, network, optimizer, path, run)
    except ValueError as exc:
        if comm.Get_rank() == 0:
            raise CommandError(str(exc)) from None
        raise SystemExit(1) from None


# ---------------------------------------------------------------------- the plot

def _plot(history, path, *, title, accuracy_title):
    """Write the loss and accuracy curves to ``path``; False when matplotlib is absent."""
    from ._plot import save_curves
    return save_curves(history, path, title=title, accuracy_title=accuracy_title)


# ---------------------------------------------------------------------- gradcheck

def cmd_gradcheck(args):
    if args.backend == "both":
        backends = [b for b in kernels.BACKENDS if b != "cython" or kernels.HAVE_CYTHON]
    else:
        backends = [_check_backend(args.backend)]
    _, ((x_train, t_train), _) = _load(args, _Output(True, False), progress=None)
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    x, t = x_train[:args.batch].astype(args.dtype), t_train[:args.batch]
    hidden = args.hidden or (50,)
    network = TwoLayerNet(x.shape[1], hidden[0], 10, dtype=args.dtype, rng=seed)
    print(f"gradient check: TwoLayerNet {x.shape[1]}-{hidden[0]}-10, {args.dtype}, "
          f"{x.shape[0]} training images, seed {seed}")
    report = gradient_check(network, x, t, backends=backends, tol=TOLERANCE[args.dtype])
    print(report)
    return 0 if report.ok else 1


# ---------------------------------------------------------------------- bench

def cmd_bench(args):
    from . import bench
    bench.run(quick=args.quick, dtypes=args.dtypes, only=args.only, threads=args.threads,
              budget=args.budget, repeats=args.repeats, json_path=args.json)
    return 0


# ---------------------------------------------------------------------- book

def cmd_book(args):
    from .book import main as book_main
    return book_main(args.argv, prog="fastbp book")


# ---------------------------------------------------------------------- main

def _parse(argv):
    """Parsed options, or :class:`CommandError` (status 2) for a bad command line."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        parser.error(f"no command given: {', '.join(parser.commands)}")
    if getattr(args, "forward", False):
        # a subcommand that parses its own options (book): every argument after its
        # name is passed on untouched, as args.argv
        args.argv = argv[argv.index(args.command) + 1:]
        return args
    hint = f" (see fastbp {args.command} --help)"
    if rest:
        raise CommandError(_unrecognized(rest, parser.commands[args.command]) + hint, status=2)
    try:
        args.validate(args)
    except CommandError as exc:
        raise CommandError(f"{exc}{hint}", status=exc.status) from None
    return args


def main(argv=None):
    """Run the ``fastbp`` command with ``argv`` (default: ``sys.argv[1:]``); returns the
    exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parse(argv)
        return args.run(args) or 0
    except BrokenPipeError:  # `fastbp train | head`: the reader has gone, stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit cannot fail
        except (OSError, ValueError):
            pass
        return 1
    except CommandError as exc:
        _error(exc)
        return exc.status
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as exc:
        _error(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _error("interrupted")
        return 130
    return 1


def _error(message):
    # Under mpirun every rank parses the same command line: let rank 0 alone say what
    # is wrong with it (the launcher names the rank in its environment).
    rank = os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("PMI_RANK") or "0"
    if rank == "0":
        print(f"fastbp: error: {message}", file=sys.stderr)
