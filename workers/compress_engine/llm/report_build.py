"""A language-model run's figures as a Report: the LLM section (LlmDetails) and the generic
fields every page reads (size, per-token decode latency, next-token agreement as fidelity),
so lists, charts and the compare page treat LLM jobs like the others."""

from __future__ import annotations

from collections import Counter

from compress_engine.configs import LlmAutoConfig, WeightOnlyConfig
from compress_engine.device import CPU_PROVIDER
from compress_engine.llm.decode_speed import DecodeFigures
from compress_engine.llm.measure_stage import LlmMeasured
from compress_engine.llm.quantized import Quantized
from compress_engine.llm.text_data import TextWindows
from compress_engine.pipeline.state import Run
from compress_engine.report import (
    ArtifactInfo,
    DataSummary,
    Fidelity,
    Latency,
    ModelMeasurement,
    OutputFidelity,
    QuantizationDetails,
    Report,
)
from compress_engine.report_llm import LlmDetails, LlmFigures, LlmInfo


def llm_details(
    run: Run,
    info: LlmInfo,
    cfg: WeightOnlyConfig | LlmAutoConfig,
    windows: TextWindows,
    quantized: Quantized,
    measured: LlmMeasured,
    *,
    sizes: tuple[int, int],
) -> LlmDetails:
    ev = run.ev.llm
    ppl, decode = measured.perplexity, measured.decode
    bits = cfg.bits if isinstance(cfg, WeightOnlyConfig) else 4
    return LlmDetails(
        info=info,
        method=cfg.method if bits == 4 else "rtn",
        bits=bits,
        block_size=cfg.block_size,
        symmetric=cfg.symmetric,
        accuracy_level=cfg.accuracy_level,
        form=quantized.form,  # type: ignore[arg-type]
        layers=quantized.layers,
        text_data=windows.label,
        window_tokens=windows.window,
        evaluation_windows=len(windows.evaluation),
        calibration_windows=len(windows.calibration),
        original=_figures(sizes[0], ppl.original, decode.original, measured.memory[0]),
        result=_figures(sizes[1], ppl.compressed, decode.compressed, measured.memory[1]),
        ppl_delta_pct=ppl.delta_pct,
        decode_ratio=decode.ratio,
        decode_rounds=decode.rounds,
        decode_tokens=decode.tokens,
        next_token_agreement=ppl.next_token_agreement,
        threads=run.threads,
        generations=measured.generations,
        trials=quantized.trials,
        max_perplexity_increase=ev.max_perplexity_increase,
        max_size_ratio=cfg.max_size_ratio if isinstance(cfg, LlmAutoConfig) else None,
    )


def _figures(size: int, perplexity: float, d: DecodeFigures, rss: float | None) -> LlmFigures:
    return LlmFigures(
        size_bytes=size,
        perplexity=perplexity,
        decode_tok_s=d.median_tok_s,
        decode_tok_s_low=d.low_tok_s,
        decode_tok_s_high=d.high_tok_s,
        prefill_ms=d.median_prefill_ms,
        ttft_ms=d.median_ttft_ms,
        peak_rss_mb=rss,
    )


def quality_reasons(details: LlmDetails) -> list[str]:
    """Why the result is not recommended: over the perplexity budget, or decoding slower
    than the original beyond the spread of its rounds ([] = it is recommended)."""
    reasons = []
    budget = details.max_perplexity_increase
    if budget is not None and details.ppl_delta_pct > budget:
        reasons.append(
            f"perplexity rose {details.ppl_delta_pct:+.1f}%, over the {budget:g}% budget "
            "(evaluate.llm.max_perplexity_increase)"
        )
    if details.slower:
        reasons.append(
            f"it decodes slower than the original ({details.result.decode_tok_s:.1f} vs "
            f"{details.original.decode_tok_s:.1f} tokens/s, beyond the spread of the rounds)"
        )
    return reasons


def llm_notes(details: LlmDetails, stage_notes: list[str]) -> list[str]:
    notes = []
    info = details.info
    if info.source_format == "gguf" and info.source_quantization:
        notes.append(
            f"The upload was a GGUF file with {info.source_quantization} weights, dequantized "
            "to fp32; that fp32 model is the reference of every figure here. A compressed "
            "format close to the GGUF's own (e.g. asymmetric int4 in blocks of 32 for Q4_1) "
            "can look nearly lossless against it without being so against the model before "
            "its GGUF quantization."
        )
    if details.form != "MatMulNBits":
        notes.append(
            f"The weights are in the {details.form} form, which decodes slowly on CPU; it is "
            "offered as it is, not as a speed result."
        )
    notes.append(
        f"Perplexity: {details.evaluation_windows} windows of {details.window_tokens} tokens "
        f"({details.text_data}); decode speed: {details.decode_rounds} interleaved rounds of "
        f"{details.decode_tokens} greedy tokens at batch 1, {details.threads} threads."
    )
    return notes + stage_notes


def llm_report(
    run: Run,
    details: LlmDetails,
    artifact: ArtifactInfo,
    *,
    device: str,
    versions: dict[str, str],
    notes: list[str],
) -> Report:
    reasons = quality_reasons(details)
    window = details.window_tokens
    return Report(
        recipe=run.recipe.to_dict(),
        original=_measurement(details.original, details, details.info.parameters),
        result=_measurement(details.result, details, details.info.parameters),
        fidelity=_fidelity(details),
        recommended=not reasons,
        quality_reasons=reasons,
        quality_floor=_floor_text(details),
        artifacts=[artifact],
        steps=run.timings,
        quantization=_quantization(details),
        data=DataSummary(
            samples=details.evaluation_windows + details.calibration_windows,
            calibration_samples=details.calibration_windows,
            evaluation_samples=details.evaluation_windows,
            labels=False,
            seed=run.ev.seed,
            preprocessing=f"windows of {window} tokens: {details.text_data}",
        ),
        input_shapes={"input_ids": [1, window]},
        input_shape_sources={"input_ids": "dataset"},
        device=device,
        versions=versions,
        notes=notes,
        latency_ratio_by_batch={"1": details.decode_ratio},
        llm=details,
    )


def _measurement(fig: LlmFigures, details: LlmDetails, parameters: int) -> ModelMeasurement:
    # Latency of a language model: milliseconds per generated token at batch 1.
    ms = 1000.0 / fig.decode_tok_s
    slowest = 1000.0 / fig.decode_tok_s_low
    latency = Latency(
        p50_ms=ms,
        p90_ms=slowest,
        p99_ms=slowest,
        mean_ms=ms,
        runs=details.decode_rounds,
        warmup=1,
        batch_size=1,
        throughput_per_s=fig.decode_tok_s,
        provider=CPU_PROVIDER,
        threads=details.threads,
        interleaved=True,
    )
    return ModelMeasurement(
        size_bytes=fig.size_bytes,
        parameters=parameters,
        latency=latency,
        latency_by_batch={"1": latency},
    )


def _fidelity(details: LlmDetails) -> Fidelity:
    summary = OutputFidelity(
        name="logits",
        max_abs_diff=None,
        mean_abs_diff=None,
        cosine_similarity=None,
        top1_agreement=details.next_token_agreement,
        kind="sequence",
        metric="step_agreement",
        metric_label="next-token agreement",
        agreement=details.next_token_agreement,
    )
    return Fidelity(
        samples=details.evaluation_windows,
        inputs="evaluation split",
        summary=summary,
        per_output=[summary],
    )


def _quantization(details: LlmDetails) -> QuantizationDetails:
    bits = Counter(layer.bits for layer in details.layers)
    op_types = {f"int{b}" if b else "float": n for b, n in sorted(bits.items(), key=str)}
    return QuantizationDetails(
        mode="weight-only",
        weight_type=f"int{details.bits}",
        quantized_nodes=sum(n for b, n in bits.items() if b),
        op_types=op_types,
        excluded=[layer.name for layer in details.layers if layer.bits is None],
        preprocessed=False,
        block_size=details.block_size,
        symmetric=details.symmetric,
        calibration=details.method if details.method != "rtn" else None,
        calibration_samples=details.calibration_windows or None,
    )


def _floor_text(details: LlmDetails) -> str:
    budget = details.max_perplexity_increase
    parts = [f"perplexity at most {budget:g}% higher"] if budget is not None else []
    return " and ".join([*parts, "decoding no slower than the original"])
