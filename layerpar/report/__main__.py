"""``python -m layerpar.report [--check] [--root ROOT] [FILE...]``: see ``layerpar.report.cli``."""

from __future__ import annotations

import sys

from layerpar.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
