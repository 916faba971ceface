"""`python -m compress_engine ...` runs the `modelpress` CLI."""

from __future__ import annotations

import sys

from compress_engine.cli import main

sys.exit(main())
