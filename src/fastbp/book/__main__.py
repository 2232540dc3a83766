"""``python -m fastbp.book SCRIPT [ARGS]``: run one of the book's scripts on fastbp."""
import sys

from ._runner import main

if __name__ == "__main__":
    sys.exit(main())
