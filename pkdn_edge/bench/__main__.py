"""``python -m pkdn_edge.bench`` = ``pkdn-bench``."""

import sys

from .cli import main

sys.exit(main())
