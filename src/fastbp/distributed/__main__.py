"""``python -m fastbp.distributed [options]``: ``fastbp train --distributed [options]``."""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--distributed", *sys.argv[1:]]))
