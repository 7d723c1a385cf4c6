"""``python -m visionkit``: the same command line as the ``visionkit`` script."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
