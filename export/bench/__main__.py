"""``python -m pkdn_edge.export.bench`` = ``pkdn-bench``."""

import sys

from .cli import main

sys.exit(main())
