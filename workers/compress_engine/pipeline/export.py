"""Stage 5: check the compressed ONNX file (the checker's verdict plus what ONNX Runtime
measured) and, when the recipe exports TFLite, convert the last float model and check each
converted file in its own runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.errors import short_message
from compress_engine.export.litert import output_shapes
from compress_engine.export.routes import convert_and_check
from compress_engine.export.tflite import TfliteConversion
from compress_engine.export.verify import Checked, check_tflite
from compress_engine.pipeline.compare import compare
from compress_engine.pipeline.original import Original
from compress_engine.pipeline.result import Measured
from compress_engine.pipeline.sessions import open_session, shapes_at
from compress_engine.pipeline.state import Run
from compress_engine.pipeline.steps import Steps
from compress_engine.pipeline.validate import Validated
from compress_engine.report import ArtifactCheck

if TYPE_CHECKING:
    import onnxruntime


@dataclass
class OnnxCheck:
    check: ArtifactCheck
    failure: str | None  # why onnx.checker rejects the file, if it does
    opset: int | None


@dataclass
class Exported:
    onnx: OnnxCheck
    converted: list[Checked]  # TFLite files, one per precision (empty without tflite)


def export_artifacts(
    run: Run, original: Original, steps: Steps, validated: Validated, measured: Measured
) -> Exported:
    run.tracker.stage("Checking artifacts", run.layout.export, run.layout.write)
    with run.timed("Export and check"):
        onnx_check = check_onnx(steps.current, validated.session, measured)
        converted: list[Checked] = []
        if "tflite" in run.recipe.export:
            run.tracker.stage("Converting to TFLite", run.layout.export, run.layout.write)
            converted = export_tflite(run, original, steps, validated)
    return Exported(onnx=onnx_check, converted=converted)


def check_onnx(path: Path, session: onnxruntime.InferenceSession, measured: Measured) -> OnnxCheck:
    """The compressed ONNX file: the checker's verdict plus what ONNX Runtime measured."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))
        failure = None
    except Exception as exc:  # ValidationError, or a protobuf error on a damaged file
        failure = f"onnx.checker rejects it: {short_message(exc)}"
    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    check = ArtifactCheck.measured(
        measured.fidelity,
        measured.accuracy,
        runtime=f"ONNX Runtime {ort.__version__}",
        provider=session.get_providers()[0],
        latency=measured.result.latency,
    )
    return OnnxCheck(check, failure, opset)


def export_tflite(
    run: Run, original: Original, steps: Steps, validated: Validated
) -> list[Checked]:
    """Convert the float model to TFLite in every configured precision (through each
    converter route in turn, at the run's shapes with batch 1) and check each file."""
    ev, data, float_model = run.ev, original.data, steps.float_model
    progress = run.tracker.sub
    # Converted from the original: the comparison's reference outputs are the source's.
    from_original = float_model == run.model
    source = None
    if not from_original:
        source = (
            validated.session
            if float_model == steps.current
            else open_session(
                float_model,
                run.providers,
                run.threads,
                "ONNX Runtime cannot load the model to convert",
            )
        )
    made_by = [title for title, r in steps.results if float_model == r.model_path]
    source_name = (
        "the original model" if from_original else f"the model after {made_by[-1]}"
    ) + " (float32)"
    routes = len(run.recipe.tflite.converters)
    done = [0]

    def check(conversion: TfliteConversion) -> list[Checked]:
        # Each route's conversion takes the first half of its share, the check the second.
        share = 1 / routes
        base = min(done[0], routes - 1) * share
        progress(base + share / 2)
        done[0] += 1
        return check_tflite(
            conversion,
            source=source,
            source_name=source_name,
            compare=lambda s, hook: compare(
                original.session,
                s,
                original.info,
                original.shapes,
                ev,
                data,
                lambda _: None,
                [],
                hook,
            ),
            input_names=[t.name for t in original.info.inputs],
            onnx_outputs=output_shapes(original.info.outputs),
            latency_feed=original.feed,
            threads=run.threads,
            warmup=ev.warmup,
            runs=ev.latency_runs,
            progress=lambda f: progress(base + share / 2 + share / 2 * f),
        )

    return convert_and_check(
        float_model,
        run.work / "tflite",
        run.recipe.tflite,
        None if data is None else data.calibration,
        shapes=shapes_at(original.info, original.shapes, 1),
        constants=ev.constants,
        check=check,
    )
