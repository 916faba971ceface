"""compress_llm: a language model's run, from its onnxruntime-genai folder to a checked genai
zip and a report.

Stages: text windows (the dataset's, or the bundled prose) -> weight quantization (one plan, or
the auto search over per-layer precision) -> perplexity and next-token agreement on the
evaluation windows -> decode speed, prefill and time to first token, interleaved -> peak memory
-> the prompts answered by both -> the artifact, loaded and generating before it is offered.
"""

from __future__ import annotations

from pathlib import Path

from compress_engine.configs import LlmAutoConfig, Recipe, WeightOnlyConfig
from compress_engine.errors import EngineError
from compress_engine.llm.quantized import SEARCH_WINDOWS
from compress_engine.llm.stage_plan import PREPARING
from compress_engine.llm.text_data import TextWindows
from compress_engine.pipeline.state import Run
from compress_engine.report import Report


def llm_config(recipe: Recipe) -> WeightOnlyConfig | LlmAutoConfig:
    """The recipe's language-model quantize settings; EngineError for an ONNX-only recipe."""
    cfg = getattr(recipe.steps[0], "quantize", None)
    if not isinstance(cfg, WeightOnlyConfig | LlmAutoConfig):
        raise EngineError(
            "This model is a language model: use quantize mode weight-only (or llm-auto), "
            "e.g. the llm-int4 preset. The ONNX modes (dynamic-int8, static-int8, fp16, "
            "weight-int4, auto) work on single ONNX graphs, not on a generation loop."
        )
    return cfg


def run_llm(run: Run, text: Path | None) -> Report:
    """The stages in order on the unpacked genai folder holding `run.model`."""
    from compress_engine.llm.measure_stage import measure
    from compress_engine.llm.quantize_stage import quantize
    from compress_engine.llm.write_stage import write

    cfg = llm_config(run.recipe)
    original = run.model.parent
    with run.timed("Preparing text"):
        run.tracker.stage(*PREPARING)
        windows = _windows(run, original, cfg, text)
    with run.timed("Quantizing"):
        quantized = quantize(run, original, cfg, windows)
    with run.timed("Measuring"):
        measured = measure(run, original, quantized.folder, windows)
    with run.timed("Writing"):
        return write(run, original, cfg, windows, quantized, measured)


def _windows(
    run: Run, folder: Path, cfg: WeightOnlyConfig | LlmAutoConfig, text: Path | None
) -> TextWindows:
    from compress_engine.llm.text_data import bundled_prose, load_text, token_windows

    ev = run.ev.llm
    source = load_text(text) if text is not None else bundled_prose()
    calibration = cfg.calibration_windows if cfg.calibrated else 0
    if isinstance(cfg, LlmAutoConfig):
        calibration += SEARCH_WINDOWS
    windows = token_windows(
        source,
        folder / "tokenizer.json",
        window=ev.window_tokens,
        calibration=calibration,
        evaluation=ev.evaluation_windows,
        seed=run.ev.seed,
    )
    if len(windows.evaluation) == 0:
        raise EngineError(
            f"The text gives no evaluation window of {ev.window_tokens} tokens: upload more "
            "text, or lower evaluate.llm.window_tokens."
        )
    if windows.note:
        run.notes.append(windows.note)
    return windows
