"""Named recipes for common goals, listable by the CLI and the web form.

Each preset is a plain mapping validated through Recipe, so it can never drift from the
schema; the choices behind them were measured on the engine's test models (see the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from compress_engine.configs import Recipe
from compress_engine.errors import EngineError
from compress_engine.tensors import ModelInfo


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str
    needs_data: bool
    steps: tuple[dict[str, Any], ...]
    evaluate: tuple[tuple[str, Any], ...] = ()
    tflite: tuple[tuple[str, Any], ...] = ()  # set: TFLite files are exported too
    llm: bool = False  # for language models (weight-only / llm-auto), not ONNX graphs

    def recipe(self, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Recipe:
        """The preset as a recipe; `input_shapes` (e.g. {"x": [1, 3, 48, 320]}) sets the
        shapes it times and measures at (evaluate.input_shapes)."""
        source: dict[str, Any] = {"version": 1, "steps": [dict(s) for s in self.steps]}
        if self.evaluate:
            source["evaluate"] = dict(self.evaluate)
        if self.tflite:
            source["export"] = ["onnx", "tflite"]
            source["tflite"] = dict(self.tflite)
        return with_input_shapes(Recipe.parse(source), input_shapes)


def with_input_shapes(recipe: Recipe, input_shapes: Mapping[str, Sequence[int]] | None) -> Recipe:
    """`recipe` with these inputs' shapes set in evaluate.input_shapes (others kept), checked
    by the schema again."""
    if not input_shapes:
        return recipe
    source = recipe.to_dict()
    evaluate = dict(source.get("evaluate") or {})
    shapes = dict(evaluate.get("input_shapes") or {})
    shapes.update({name: list(dims) for name, dims in input_shapes.items()})
    evaluate["input_shapes"] = shapes
    return Recipe.parse({**source, "evaluate": evaluate})


# Half the channels, then up to 30 epochs of distillation from the original (early stopping
# after 5 without improvement): the pruning presets share it.
PRUNE_HALF_AND_DISTILL: tuple[dict[str, Any], ...] = (
    {"prune": {"method": "channel", "amount": 0.5, "importance": "l2"}},
    {"distill": {"teacher": "original", "epochs": 30, "patience": 5}},
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="fast-int8",
            title="Fast int8 (dynamic)",
            description=(
                "Dynamic int8 of MatMul/Gemm weights; no data needed. About 4x smaller fully "
                "connected layers, faster on CPUs for MLPs, transformers and RNNs."
            ),
            needs_data=False,
            steps=({"quantize": {"mode": "dynamic-int8"}},),
        ),
        Preset(
            name="static-int8",
            title="Static int8 (calibrated)",
            description=(
                "Static int8 of weights and activations, per-channel weights, percentile "
                "calibration on your data. The int8 that holds accuracy best and runs fastest "
                "on CPUs, convolutions included. Needs a dataset."
            ),
            needs_data=True,
            # On the trained test CNN percentile and minmax tied (top-1 +0.33 points, cosine
            # 0.9999) and entropy was slower with a lower cosine (0.9991); percentile is kept
            # because clipping the extreme tail protects against activation outliers in real
            # data, which minmax lets stretch the int8 range.
            steps=(
                {
                    "quantize": {
                        "mode": "static-int8",
                        "per_channel": True,
                        "calibration": "percentile",
                        "percentile": 99.999,
                        "samples": 256,
                    }
                },
            ),
        ),
        Preset(
            name="accuracy-aware-int8",
            title="Static int8 that holds accuracy",
            description=(
                "Static int8 as above; if the result loses more than 0.3 top-1 points (with "
                "labels; without them, if the output cosine falls below 0.999), the layers "
                "whose int8 error matters most per byte stay in float, one more per trial, up "
                "to 6 trials, stopping early when two bring nothing. Every trial is in the "
                "report. Needs a dataset."
            ),
            needs_data=True,
            steps=(
                {
                    "quantize": {
                        "mode": "static-int8",
                        "per_channel": True,
                        "calibration": "percentile",
                        "samples": 256,
                        "accuracy_aware": True,
                        "max_trials": 6,
                    }
                },
            ),
            evaluate=(("max_accuracy_drop", 0.3), ("min_fidelity", 0.999)),
        ),
        Preset(
            name="auto",
            title="Automatic int8 (measured)",
            description=(
                "Tries the int8 modes that suit the model (static int8 for convolution models "
                "when you give data, dynamic int8 otherwise), times each against the original "
                "on the worker beside an identical copy of the original (the timing's noise) "
                "and keeps the fastest that is at least 5% faster beyond that noise; "
                "otherwise keeps the original and says why."
            ),
            needs_data=False,
            steps=({"quantize": {"mode": "auto", "objective": "latency"}},),
        ),
        Preset(
            name="fp16-gpu",
            title="Float16 for GPUs/NPUs",
            description=(
                "Float16 weights and arithmetic, float32 inputs and outputs; half the size, "
                "near-identical outputs. For GPUs and NPUs; usually slower on CPUs."
            ),
            needs_data=False,
            steps=({"quantize": {"mode": "fp16", "keep_io_types": True}},),
        ),
        Preset(
            name="int4-weights",
            title="Weight-only int4",
            description=(
                "4-bit MatMul/Gemm weights in blocks of 32, activations float; about 7x smaller "
                "weights, no data needed. For large fully connected and transformer models."
            ),
            needs_data=False,
            steps=({"quantize": {"mode": "weight-int4", "block_size": 32, "symmetric": True}},),
        ),
        Preset(
            name="prune-distill-int8",
            title="Prune + distill + int8 (smallest, fastest)",
            description=(
                "Removes half the channels of every prunable layer (the output layer stays "
                "whole), recovers accuracy by distilling from the original for up to 30 "
                "epochs, then static int8. The flagship pipeline for CNNs: typically under a "
                "tenth of the size. Needs a dataset (labels help, not required)."
            ),
            needs_data=True,
            steps=(
                *PRUNE_HALF_AND_DISTILL,
                {"quantize": {"mode": "static-int8"}},
            ),
        ),
        Preset(
            name="prune-distill",
            title="Prune + distill (float)",
            description=(
                "Half the channels removed, accuracy recovered by distilling from the original; "
                "stays float32, for runtimes without int8. Needs a dataset."
            ),
            needs_data=True,
            steps=(*PRUNE_HALF_AND_DISTILL,),
        ),
        Preset(
            name="mobile-tflite-int8",
            title="Smallest for mobile (TFLite int8)",
            description=(
                "Prune + distill as above, then full-integer int8 TFLite (calibrated on your "
                "data) beside an int8 ONNX model, plus fp32 TFLite for reference. Every file is "
                "run in its runtime and compared with the original before it is offered. "
                "Needs a dataset."
            ),
            needs_data=True,
            steps=(
                *PRUNE_HALF_AND_DISTILL,
                {"quantize": {"mode": "static-int8"}},
            ),
            tflite=(("precisions", ["fp32", "int8"]),),
        ),
        Preset(
            name="llm-int4",
            title="Language model: int4 (AWQ), embedding and lm_head int8",
            description=(
                "4-bit weights in blocks of 32 chosen by NNCF's AWQ with scale estimation on "
                "calibration text (your dataset, or the bundled prose), the embedding and the "
                "output layer at 8 bits, in ONNX Runtime's fast MatMulNBits form. Measured on "
                "perplexity, decode speed, memory and side-by-side answers."
            ),
            needs_data=False,
            steps=({"quantize": {"mode": "weight-only", "bits": 4, "method": "awq"}},),
            llm=True,
        ),
        Preset(
            name="llm-int8",
            title="Language model: int8 weights",
            description=(
                "8-bit weights (round to nearest, blocks of 32) everywhere: about a quarter of "
                "the float size with perplexity within about 1%, no data needed."
            ),
            needs_data=False,
            steps=({"quantize": {"mode": "weight-only", "bits": 8, "method": "rtn"}},),
            llm=True,
        ),
        Preset(
            name="llm-auto",
            title="Language model: auto int4/int8 search",
            description=(
                "int4 (AWQ) first, then the most error-prone layers moved to int8 until the "
                "perplexity budget (10% by default) is met within a size budget of 0.19 of the "
                "float model; every plan tried is in the report."
            ),
            needs_data=False,
            steps=({"quantize": {"mode": "llm-auto"}},),
            llm=True,
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise EngineError(f"Unknown preset {name!r}; available: {', '.join(PRESETS)}") from None


# --- which preset a model should start from ------------------------------------------------

# Op types that carry a convolution's or a fully connected layer's weights.
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
MATMUL_OPS = frozenset({"MatMul", "Gemm"})


@dataclass(frozen=True)
class PresetSuggestion:
    """The preset a job on this model starts from, and why (shown on the job form)."""

    preset: Preset
    reason: str


def suggest_preset(
    model: ModelInfo | Mapping[str, int], has_dataset: bool, *, llm: bool = False
) -> PresetSuggestion:
    """The preset that does something useful for this model (a ModelInfo, or its op_types).

    A language model (`llm`) gets `llm-int4`: int4 weights chosen on calibration text (the
    dataset's, or the bundled prose without one), the embedding and lm_head at int8.

    Dynamic int8 (`fast-int8`) quantizes MatMul/Gemm weights only: on a CNN it touches the
    last fully connected layer and nothing else. So a model with more convolutions than
    MatMul/Gemm nodes gets static int8 (weights and activations, convolutions included) when
    there is data to calibrate on, and `auto` without data (it times dynamic int8 and keeps
    the original when that is not faster, saying so). MatMul-heavy models (MLPs,
    transformers) get dynamic int8, which needs no data; a model with neither gets `auto`.
    """
    if llm:
        text = "your text dataset" if has_dataset else "the bundled prose (no text dataset)"
        return PresetSuggestion(
            PRESETS["llm-int4"],
            f"a causal language model: int4 weights by AWQ on {text}, embedding and lm_head "
            "at int8, in the fast MatMulNBits form",
        )
    op_types = model.op_types if isinstance(model, ModelInfo) else model
    convs = sum(n for op, n in op_types.items() if op in CONV_OPS)
    matmuls = sum(n for op, n in op_types.items() if op in MATMUL_OPS)
    if convs and convs >= matmuls:
        kind = f"convolutional ({convs} Conv, {matmuls} MatMul/Gemm)"
        if has_dataset:
            return PresetSuggestion(
                PRESETS["static-int8"], f"{kind}: static int8, calibrated on your dataset"
            )
        return PresetSuggestion(
            PRESETS["auto"],
            f"{kind}, no dataset: automatic int8 (static int8 needs a dataset to calibrate on; "
            "dynamic int8 alone would only quantize the fully connected layers)",
        )
    if matmuls:
        return PresetSuggestion(
            PRESETS["fast-int8"],
            f"MatMul/Gemm-heavy ({matmuls} MatMul/Gemm, {convs} Conv): dynamic int8, no data "
            "needed",
        )
    return PresetSuggestion(
        PRESETS["auto"], "no convolution or MatMul/Gemm layers: automatic int8 (measured)"
    )


def matching_preset(recipe: Recipe) -> Preset | None:
    """The preset this recipe was made from: the one with the same steps and exports (its
    evaluate settings, data split and normalisation may differ); None for a custom recipe."""
    steps = [s.model_dump(mode="json") for s in recipe.steps]
    for preset in PRESETS.values():
        made = _preset_recipe(preset.name)
        same_files = made.export == recipe.export and (
            "tflite" not in recipe.export or made.tflite == recipe.tflite
        )
        if same_files and [s.model_dump(mode="json") for s in made.steps] == steps:
            return preset
    return None


@cache
def _preset_recipe(name: str) -> Recipe:
    return PRESETS[name].recipe()
