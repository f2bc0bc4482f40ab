"""``python -m pkdn_edge.export.compress``: same as ``pkdn-compress``."""

import sys

from .cli import main

sys.exit(main())
