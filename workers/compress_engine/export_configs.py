"""Recipe settings of the export targets (`export: [onnx, tflite]` and the `tflite:` section).

Like configs.py this imports only pydantic: the web app validates forms with it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ExportFormat = Literal["onnx", "tflite"]
TflitePrecision = Literal["fp32", "fp16", "dynamic-int8", "int8"]
TFLITE_PRECISIONS: tuple[TflitePrecision, ...] = ("fp32", "fp16", "dynamic-int8", "int8")


class TfliteConfig(BaseModel):
    """Settings of the TFLite (LiteRT) files, used when `export` lists `tflite`.

    The TFLite files are converted (onnx2tf) from the float model the recipe's prune, distill
    and finetune steps produced, before any quantize step: TFLite quantizes them itself.
    Every file is run in the LiteRT interpreter on the evaluation split (or seeded random
    inputs) and compared with the original before it is offered.
    """

    model_config = ConfigDict(extra="forbid")

    precisions: list[TflitePrecision] = Field(
        default_factory=lambda: list(TFLITE_PRECISIONS),
        min_length=1,
        description=(
            "Files to produce. fp32: float; fp16: float16 weights, float32 compute on CPU; "
            "dynamic-int8: int8 weights, activations quantized at run time; int8: full-integer "
            "(weights and activations int8), calibrated on representative samples from the "
            "dataset's calibration split, so it needs a dataset."
        ),
    )
    int8_io: bool = Field(
        default=False,
        description=(
            "int8: give the full-integer model int8 inputs and outputs (for integer-only "
            "accelerators and microcontrollers; callers quantize inputs with the scale and "
            "zero point in the file) instead of float32 ones."
        ),
    )
    representative_samples: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="int8: calibration samples fed to the TFLite converter.",
    )
    timeout_s: int = Field(
        default=900,
        ge=30,
        le=6 * 3600,
        description=(
            "Wall-clock limit of the converter process; a conversion that runs longer is "
            "stopped and reported as failed, the other files are kept."
        ),
    )

    @field_validator("precisions")
    @classmethod
    def _dedupe(cls, precisions: list[str]) -> list[str]:
        return list(dict.fromkeys(precisions))
