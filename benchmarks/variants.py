"""The variants compared per model: the original, what a user would script with ONNX Runtime
or NNCF (benchmarks/peers.py), and ModelPress recipes.

Adding an engine row is adding a recipe to ENGINE_VARIANTS. Recipes the installed engine
rejects (a mode that has not landed yet) are listed as pending in the results' meta instead
of being run or faked.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import BenchModel
from benchmarks.peers import nncf_accuracy_control, nncf_default

# compress() measures the model itself; these keep its own timing short because every
# figure in the benchmark is re-measured by the harness, identically for all variants.
ENGINE_EVALUATE = {"latency_runs": 3, "warmup": 1, "fidelity_samples": 4}


@dataclass(frozen=True)
class Variant:
    """One row per model: how the artifact is produced from the original ONNX file."""

    name: str
    produce: Callable[[BenchModel, Path], Path] | None  # None: the original itself
    models: tuple[str, ...] | None = None  # None: every model
    # Why a model is left out, by model name (recorded in meta, never silently dropped).
    skip: dict[str, str] = field(default_factory=dict)

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class EngineVariant:
    """A ModelPress recipe run through `compress_engine.compress`."""

    name: str
    steps: list[dict[str, Any]]
    needs_data: bool = False  # pass the model's calibration .npz as `data=`
    trains: bool = False  # pass the model's whole training split as `data=` instead
    models: tuple[str, ...] | None = None
    evaluate: dict[str, Any] = field(default_factory=dict)
    tflite: str | None = None  # a TFLite precision: the row is that .tflite file, in LiteRT

    def recipe(self) -> dict[str, Any]:
        recipe = {
            "version": 1,
            "steps": self.steps,
            "evaluate": {**ENGINE_EVALUATE, **self.evaluate},
        }
        if self.tflite:
            recipe |= {"export": ["onnx", "tflite"], "tflite": {"precisions": [self.tflite]}}
        return recipe


PRUNE50 = {"prune": {"method": "channel", "amount": 0.5, "importance": "l2"}}
# Every epoch runs (no early stopping), so fine-tuning and distillation take the same steps.
RECOVERY = {"epochs": 30, "batch_size": 64, "lr": 1e-3, "patience": None, "seed": 0}
PRUNE_EVAL = {"calibration_fraction": 0.9}

ENGINE_VARIANTS: list[EngineVariant] = [
    # Given the calibration samples like the static rows and the peers: dynamic int8 needs
    # none, but with them the engine can smooth activation outliers (SmoothQuant, kept only
    # when it measurably helps on held-out samples).
    EngineVariant("dynamic-int8", [{"quantize": {"mode": "dynamic-int8"}}], needs_data=True),
    EngineVariant(
        "static-int8",
        [{"quantize": {"mode": "static-int8"}}],
        needs_data=True,
        models=("digits-cnn", "efficientnet-lite0", "nudenet-320n"),
    ),
    EngineVariant("fp16", [{"quantize": {"mode": "fp16"}}]),
    EngineVariant("weight-int4", [{"quantize": {"mode": "weight-int4"}}]),
    # auto measures candidates itself to choose one: give it the engine's default timing
    # (ENGINE_EVALUATE's short runs would make its choice a coin toss).
    EngineVariant(
        "auto",
        [{"quantize": {"mode": "auto"}}],
        needs_data=True,
        evaluate={"latency_runs": 50, "warmup": 5},
    ),
    EngineVariant(
        "accuracy-aware",
        [{"quantize": {"mode": "static-int8", "accuracy_aware": True}}],
        needs_data=True,
        models=("digits-cnn",),
        evaluate={"max_accuracy_drop": 0.3},
    ),
    # Embeddings have no labels: the budget is cosine similarity to fp32 on the held-out
    # part of the calibration sentences, a notch above the 0.995 target.
    EngineVariant(
        "accuracy-aware",
        [{"quantize": {"mode": "dynamic-int8", "accuracy_aware": True}}],
        needs_data=True,
        models=("minilm-l6",),
        evaluate={"min_fidelity": 0.996},
    ),
    # No labels for EfficientNet either: the budget is the logits' cosine on the held-out
    # calibration crops, above the ~0.997 plain static int8 reaches there. nudenet-320n has
    # none: the cosine of its raw output (box pixels next to 0..1 scores) stays ~0.999 even
    # when quantization wipes its scores out, so no cosine budget would guard its detections.
    EngineVariant(
        "accuracy-aware",
        [{"quantize": {"mode": "static-int8", "accuracy_aware": True}}],
        needs_data=True,
        models=("efficientnet-lite0",),
        evaluate={"min_fidelity": 0.998},
    ),
    # Pruning: the same 50% channel pruning, then nothing, plain fine-tuning, or distillation
    # from the original, with the same epochs, batch, learning rate and data (90% of the
    # training split; the engine holds out a tenth of that to pick the best epoch).
    *(
        EngineVariant(name, steps, trains=True, models=("digits-cnn",), evaluate=PRUNE_EVAL)
        for name, steps in (
            ("prune50-noft", [PRUNE50]),
            ("prune50-finetune", [PRUNE50, {"finetune": RECOVERY}]),
            ("prune50-distill", [PRUNE50, {"distill": RECOVERY}]),
            (
                "prune50-distill-int8",
                [PRUNE50, {"distill": RECOVERY}, {"quantize": {"mode": "static-int8"}}],
            ),
        )
    ),
    # TFLite files of the original (float) model; the dynamic-int8 step only satisfies the
    # recipe (TFLite is converted from the float model before any quantize step).
    *(
        EngineVariant(
            f"tflite-{precision}",
            [{"quantize": {"mode": "dynamic-int8"}}],
            needs_data=True,
            # efficientnet-lite0 converts too (fp32 max abs error 2.4e-5, int8 top-5
            # agreement 0.993) but each row took 90-105 s on a loaded 2-core machine:
            # left out to keep `make bench` under its time budget.
            models=("digits-cnn",),
            tflite=precision,
        )
        for precision in ("fp32", "int8")
    ),
]


# --- ONNX Runtime baselines ---------------------------------------------------------------


def ort_default_dynamic(model: BenchModel, out: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    path = out / "model.ort-dynamic.onnx"
    quantize_dynamic(str(model.onnx_path), str(path))
    return path


def ort_default_static(model: BenchModel, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        """The model's calibration samples, in batches of its large batch size."""

        def __init__(self) -> None:
            self._batches = _batches(model.calib_inputs, model.large_batch)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    path = out / "model.ort-static.onnx"
    quantize_static(str(model.onnx_path), str(path), Reader())
    return path


def _batches(inputs: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(inputs.values())))
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in inputs.items()}


BASELINES: list[Variant] = [
    Variant("original", None),
    Variant("ort-default-dynamic", ort_default_dynamic),
    Variant("ort-default-static", ort_default_static),
    # NNCF's post-training quantization on the same samples (benchmarks/peers.py).
    Variant("nncf-default", nncf_default),
    Variant(
        "nncf-accuracy-control",
        nncf_accuracy_control,
        skip={
            "minilm-l6": "nncf 3.4.0's accuracy control cannot revert a layer of a TRANSFORMER "
            "model: it restores the float weights but keeps its SmoothQuant scales, so every "
            "revert makes the model worse; measured here (2026-12-07): 923 s, every layer back "
            "in float, cosine to fp32 0.053 (benchmarks/peers.py)",
        },
    ),
]


# --- engine variants ----------------------------------------------------------------------


def engine_data_support() -> str | None:
    """None when compress() accepts a dataset, else why not (the reason pending rows give)."""
    from compress_engine import compress

    annotation = inspect.signature(compress).parameters.get("data")
    if annotation is None:
        return "compress() has no data parameter"
    # `data: None = None` (under postponed annotations: the string "None") takes no dataset.
    if annotation.annotation in (None, "None"):
        return "compress() does not accept a dataset (data=) yet"
    return None


def engine_variant(ev: EngineVariant) -> tuple[Variant | None, str | None]:
    """(runnable variant, None) or (None, reason it is pending)."""
    try:
        from compress_engine.configs import Recipe
        from compress_engine.errors import EngineError
        from compress_engine.passes import pass_for_step

        try:
            recipe = Recipe.parse(ev.recipe())
            # A mode the schema knows but no registered pass implements yet.
            for step in recipe.steps:
                pass_for_step(step)
        except EngineError as exc:
            return None, f"engine rejects the recipe: {' '.join(str(exc).split())}"
        if ev.needs_data or ev.trains:
            reason = engine_data_support()
            if reason:
                return None, reason
    except Exception as exc:  # an engine mid-edit must not take the suite down
        return None, f"engine unavailable: {type(exc).__name__}: {exc}"

    def produce(model: BenchModel, out: Path) -> Path:
        from compress_engine import compress

        result_dir = out / "engine"
        data = model.train_path if ev.trains else (model.calib_path if ev.needs_data else None)
        kwargs = {"data": data} if data is not None else {}
        report = compress(model.onnx_path, ev.recipe(), out_dir=result_dir, **kwargs)
        wanted = "tflite" if ev.tflite else "onnx"
        artifact = next(a for a in report.artifacts if a.format == wanted)
        if not artifact.ok:
            raise RuntimeError(f"{artifact.name} failed its check: {artifact.failure}")
        return result_dir / artifact.name

    return Variant(ev.name, produce, models=ev.models), None


def timed(fn: Callable[[], Path]) -> tuple[Path, float]:
    start = time.perf_counter()
    path = fn()
    return path, time.perf_counter() - start
