"""Tests of the benchmark harness (benchmarks/), which lives at the repository root.

`python -m pytest` puts the root on sys.path; a bare `pytest` does not, so it is added here
(else `import benchmarks` would find this folder as a namespace package).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
