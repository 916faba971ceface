"""Where each stage of a compress() run sits in its overall progress (0..1).

The pipeline reports progress against these slices and the catalog's stage plan reads the
same numbers, so the web's live page and the engine cannot drift apart. Imports nothing
heavy: the web lists stages without torch or onnxruntime.
"""

from __future__ import annotations

# Progress fractions at which each stage starts; the steps share their slice equally.
MEASURE_ORIGINAL = 0.0
STEPS = 0.35
VALIDATE = 0.50
MEASURE_RESULT = 0.55
FIDELITY = 0.75
EXPORT = 0.82
WRITE = 0.97
