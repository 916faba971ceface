"""Recipe settings of the export targets (`export: [onnx, tflite]` and the `tflite:` section).

Like configs.py this imports only pydantic: the web app validates forms with it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ExportFormat = Literal["onnx", "tflite"]
TflitePrecision = Literal["fp32", "fp16", "dynamic-int8", "int8"]
TFLITE_PRECISIONS: tuple[TflitePrecision, ...] = ("fp32", "fp16", "dynamic-int8", "int8")
TfliteConverter = Literal["onnx2tf", "litert-torch"]


class TfliteConfig(BaseModel):
    """Settings of the TFLite (LiteRT) files, used when `export` lists `tflite`.

    The TFLite files are converted from the float model the recipe's prune, distill and
    finetune steps produced, before any quantize step: TFLite quantizes them itself. Free
    input dims are fixed first, at the shapes the run measured (evaluate.input_shapes, else
    the dataset's) with batch 1, so the files take those shapes. Every file is run in the
    LiteRT interpreter on the evaluation split (or seeded random inputs) and compared with
    the original before it is offered.
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
    converters: list[TfliteConverter] = Field(
        default_factory=lambda: ["onnx2tf", "litert-torch"],
        min_length=1,
        description=(
            "Converter routes, tried in this order for each precision: a precision one route "
            "cannot convert, or whose file fails its check in LiteRT, goes to the next. "
            "onnx2tf converts the ONNX graph (image inputs become channel-last, NHWC); "
            "litert-torch converts the torch module onnx2torch rebuilds from it (inputs keep "
            "the ONNX layout; fp16/int8 files are made by ai-edge-quantizer, with float32 "
            "inputs and outputs). The report names the route that made each file."
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

    @field_validator("precisions", "converters")
    @classmethod
    def _dedupe(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(values))
