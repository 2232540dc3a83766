"""Rebuild the small MNIST sample that ships inside fastbp.

    PYTHONPATH=src python tools/make_mnist_sample.py [--src ../shared/data/mnist]

Reads the full MNIST set (the four standard IDX files, checked against their SHA-256),
draws a stratified subset with a fixed seed (each digit in the proportion it has in the
full set; 5000 training and 1000 test images, kept in their original order) and writes
it as gzip IDX files to ``src/fastbp/datasets/data/``. The output is deterministic: the
same input gives byte-identical files. It prints the SHA-256 of the decompressed files,
which must match ``SAMPLE_SHA256`` in ``src/fastbp/datasets/mnist.py`` (it says so and
exits with status 1 when they do not).
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from fastbp.datasets import mnist  # noqa: E402
from fastbp.datasets._idx import read_idx, sha256_of_idx, write_idx  # noqa: E402

SEED = 20240101
SIZES = {"train": 5000, "test": 1000}
LIMIT = 2 * 1024 * 1024  # bytes: the package must stay small


def stratified(labels, n, rng):
    """Indices of ``n`` samples, each class in its proportion in ``labels`` (largest
    remainder rounding), drawn at random within each class, returned sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / labels.size
    take = np.floor(exact).astype(int)
    short = n - take.sum()
    take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=os.path.join(ROOT, "..", "shared", "data", "mnist"),
                   help="folder with the full MNIST set (default: ../shared/data/mnist)")
    p.add_argument("--out", default=os.path.join(ROOT, "src", "fastbp", "datasets", "data"),
                   help="where to write the sample (default: the package's data folder)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(SEED)
    os.makedirs(args.out, exist_ok=True)
    digests, total = {}, 0
    for split, n in SIZES.items():
        img_name, lbl_name = mnist.FILES[split]
        images = read_idx(mnist.find_file(args.src, img_name), sha256=mnist.FULL_SHA256[img_name])
        labels = read_idx(mnist.find_file(args.src, lbl_name), sha256=mnist.FULL_SHA256[lbl_name])
        idx = stratified(labels, n, rng)
        for name, arr in ((img_name, images[idx]), (lbl_name, labels[idx])):
            path = os.path.join(args.out, name + ".gz")
            write_idx(path, arr)
            digests[name] = sha256_of_idx(arr)
            total += os.path.getsize(path)
            print(f"{path}: shape {arr.shape}, {os.path.getsize(path)} bytes, sha256 {digests[name]}")
        print(f"{split} label counts: {np.bincount(labels[idx], minlength=10).tolist()}")
    print(f"total {total} bytes (limit {LIMIT})")
    status = 0
    if total > LIMIT:
        print("error: the sample is larger than the limit", file=sys.stderr)
        status = 1
    if digests != mnist.SAMPLE_SHA256:
        print("SAMPLE_SHA256 in src/fastbp/datasets/mnist.py does not match; set it to:", file=sys.stderr)
        print("SAMPLE_SHA256 = {", file=sys.stderr)
        for name, d in digests.items():
            print(f'    "{name}": "{d}",', file=sys.stderr)
        print("}", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
