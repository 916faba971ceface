"""The quantize stage of a language-model run: one per-layer plan (weight-only), or the auto
search over plans (llm-auto), into the run's result folder."""

from __future__ import annotations

from pathlib import Path

from compress_engine.configs import LlmAutoConfig, WeightOnlyConfig
from compress_engine.llm.quantized import RESULT_FOLDER, Quantized
from compress_engine.llm.stage_plan import QUANTIZING, quantize_label
from compress_engine.llm.text_data import TextWindows
from compress_engine.pipeline.state import Run


def quantize(
    run: Run, original: Path, cfg: WeightOnlyConfig | LlmAutoConfig, windows: TextWindows
) -> Quantized:
    if isinstance(cfg, LlmAutoConfig):
        from compress_engine.llm.auto_precision import search

        run.tracker.stage(quantize_label(cfg), *QUANTIZING)
        return search(
            original,
            cfg,
            windows,
            work=run.work,
            threads=run.threads,
            budget=run.ev.llm.max_perplexity_increase,
            progress=run.tracker.sub,
        )
    from compress_engine.llm.weight_plan import plan, weight_matrices
    from compress_engine.llm.weight_quant import quantize_folder

    method = cfg.method if cfg.calibrated else "rtn"
    run.tracker.stage(quantize_label(cfg), *QUANTIZING)
    matrices = weight_matrices(_graph(original))
    chosen = plan(matrices, bits=cfg.bits, int8=cfg.int8, float_=cfg.float_layers)
    outcome = quantize_folder(
        original,
        run.work / RESULT_FOLDER,
        plan=chosen,
        block_size=cfg.block_size,
        symmetric=cfg.symmetric,
        accuracy_level=cfg.accuracy_level,
        method=method,
        calibration=windows.calibration if method != "rtn" else None,
    )
    return Quantized(outcome.folder, outcome.layers, outcome.form, [], outcome.notes)


def _graph(folder: Path):  # -> onnx.ModelProto
    import onnx

    from compress_engine.llm.weight_quant import decoder_config

    name = decoder_config(folder)["filename"]
    return onnx.load(str(folder / name), load_external_data=False)
