"""The last stage of a language-model run: the genai zip (checked by loading it and generating
before it is offered), the report, and the files placed into out_dir with report.json last."""

from __future__ import annotations

import os
from pathlib import Path

from compress_engine.configs import LlmAutoConfig, WeightOnlyConfig
from compress_engine.device import CPU_PROVIDER, describe_device
from compress_engine.llm.genai_build import folder_model_bytes
from compress_engine.llm.genai_zip import ARTIFACT_NAME, write_genai_zip
from compress_engine.llm.measure_stage import LlmMeasured
from compress_engine.llm.quantized import Quantized
from compress_engine.llm.report_build import llm_details, llm_notes, llm_report
from compress_engine.llm.report_text import readme
from compress_engine.llm.stage_plan import WRITING
from compress_engine.llm.text_data import TextWindows
from compress_engine.measure.size import file_size, sha256_file
from compress_engine.pipeline.state import Run
from compress_engine.pipeline.write import RECIPE_NAME, REPORT_NAME, versions
from compress_engine.report import ArtifactCheck, ArtifactInfo, Report


def write(
    run: Run,
    original: Path,
    cfg: WeightOnlyConfig | LlmAutoConfig,
    windows: TextWindows,
    quantized: Quantized,
    measured: LlmMeasured,
) -> Report:
    from compress_engine.llm.genai_check import check_genai_folder
    from compress_engine.llm.llm_info import read_llm_info

    run.tracker.stage(*WRITING)
    info = read_llm_info(original)
    details = llm_details(
        run,
        info,
        cfg,
        windows,
        quantized,
        measured,
        sizes=(folder_model_bytes(original), folder_model_bytes(quantized.folder)),
    )
    sample = check_genai_folder(quantized.folder)
    target = write_genai_zip(quantized.folder, run.work / ARTIFACT_NAME, readme(details))
    artifact = ArtifactInfo(
        name=ARTIFACT_NAME,
        format="genai-zip",
        precision=_precision(details.bits, details.layers),
        size_bytes=file_size(target),
        sha256=sha256_file(target),
        check=ArtifactCheck(
            runtime=f"onnxruntime-genai {_genai_version()}",
            provider=CPU_PROVIDER,
            inputs=f"a prompt, {len(sample.split())} words generated",
            samples=1,
            cosine_similarity=None,
            max_abs_diff=None,
        ),
    )
    report = llm_report(
        run,
        details,
        artifact,
        device=describe_device(CPU_PROVIDER),
        versions={**versions(), **_llm_versions()},
        notes=llm_notes(details, quantized.notes) + run.notes,
    )
    (run.work / RECIPE_NAME).write_text(run.recipe.to_yaml(), encoding="utf-8")
    (run.work / REPORT_NAME).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    for src, name in ((target, ARTIFACT_NAME), (run.work / RECIPE_NAME, RECIPE_NAME)):
        _place(src, run.out_dir / name, run.placed)
    _place(run.work / REPORT_NAME, run.out_dir / REPORT_NAME, run.placed)
    run.tracker.done()
    return report


def _precision(bits: int, layers: list) -> str:
    eights = {layer.bits for layer in layers} - {bits}
    return f"int{bits}-weight-only" + ("+int8" if 8 in eights else "")


def _place(src: Path, dst: Path, placed: list[Path]) -> None:
    os.replace(src, dst)
    placed.append(dst)


def _genai_version() -> str:
    import onnxruntime_genai as og

    return str(getattr(og, "__version__", "?"))


def _llm_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"onnxruntime_genai": _genai_version()}
    for name in ("transformers", "nncf", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
