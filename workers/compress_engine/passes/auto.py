"""`quantize: {mode: auto}`: registered so the UI and job checks can list it like any mode.

The work itself needs the original's measurements and sessions, so compress() runs it
(compress_engine.tuning.auto_quantize) instead of this class's `run`.
"""

from __future__ import annotations

from pathlib import Path

from compress_engine.configs import AutoConfig
from compress_engine.errors import EngineError
from compress_engine.passes.base import Pass, PassContext, PassInfo, PassResult
from compress_engine.passes.registry import register


@register
class AutoQuantize(Pass[AutoConfig]):
    info = PassInfo(
        name="quantize-auto",
        title="Automatic int8 quantization",
        stage="Quantizing (auto: trying int8 modes)",
        description=(
            "Tries the int8 modes that suit the model (static int8 only with a dataset), "
            "measures each against the original on this machine and keeps the best one within "
            "the budget; keeps the original, and says why, when none is better."
        ),
        step="quantize",
        mode="auto",
        needs_data=False,
        needs_labels=False,
        compute="light",
    )
    config_type = AutoConfig

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        raise EngineError("quantize mode auto runs through compress(), not as a single pass.")
