"""``python -m fastbp.bench``: the same as ``fastbp bench``."""
import sys

from . import main

sys.exit(main())
