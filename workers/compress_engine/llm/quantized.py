"""What the quantize stage of a language-model run hands on (the compressed folder and how it
was made), and how llm-auto's search windows are set apart from the calibration windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress_engine.errors import EngineError
from compress_engine.llm.text_data import TextWindows
from compress_engine.report_llm import LayerPrecision, PrecisionTrial

RESULT_FOLDER = "result"
# llm-auto scores its plans on windows of their own, apart from the calibration windows (which
# the data-aware methods fit on) and the evaluation windows (which the report is measured on).
SEARCH_WINDOWS = 8


@dataclass
class Quantized:
    """What the quantize stage made: the compressed folder and how."""

    folder: Path
    layers: list[LayerPrecision]
    form: str
    trials: list[PrecisionTrial]
    notes: list[str]


def search_split(windows: TextWindows) -> tuple[np.ndarray, np.ndarray]:
    """llm-auto's (calibration, search) windows out of the calibration share: the last
    SEARCH_WINDOWS (at least one) are for scoring plans."""
    n = len(windows.calibration)
    if n == 0:
        raise EngineError(
            "The text gives no window apart from the evaluation windows for llm-auto to "
            "score its plans on: upload more text, or lower evaluate.llm.evaluation_windows."
        )
    search = min(SEARCH_WINDOWS, max(1, n // 2)) if n < SEARCH_WINDOWS * 2 else SEARCH_WINDOWS
    return windows.calibration[: n - search], windows.calibration[n - search :]
