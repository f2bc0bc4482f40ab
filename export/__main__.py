"""``python -m pkdn_edge.export``: same as ``pkdn-export``."""

import sys

from .cli import main

sys.exit(main())
