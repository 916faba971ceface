"""Entry point: `python -m benchmarks --suite quick`."""

from __future__ import annotations

import sys

from benchmarks.run import main

sys.exit(main())
