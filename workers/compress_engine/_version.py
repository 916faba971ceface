"""Engine version, recorded in every report so results can be traced to the code."""

from __future__ import annotations

ENGINE_VERSION = "0.1.0"
