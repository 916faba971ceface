"""The LLM benchmark's peer row: NNCF's weight compression as a user following NNCF's docs
would run it on the genai model (int4 with AWQ and scale estimation on the calibration
windows, every other setting at NNCF's default), kept in the form NNCF writes, and measured
by the engine's own functions against the same fp32 folder as our rows."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# Our rows' windows: the engine's defaults for awq (32 calibration windows), seed 0.
CALIBRATION_WINDOWS = 32


def _windows(original: Path, evaluate: dict[str, Any]):  # -> TextWindows
    from compress_engine.llm.text_data import bundled_prose, token_windows

    llm = evaluate["llm"]
    return token_windows(
        bundled_prose(),
        original / "tokenizer.json",
        window=llm["window_tokens"],
        calibration=CALIBRATION_WINDOWS,
        evaluation=llm["evaluation_windows"],
        seed=0,
    )


def nncf_awq_folder(original: Path, out: Path, evaluate: dict[str, Any]) -> Path:
    import nncf
    import onnx

    from compress_engine.llm.nncf_weights import window_feeds
    from compress_engine.llm.weight_quant import copy_side_files, decoder_config, save_model

    decoder = decoder_config(original)
    model = onnx.load(str(original / decoder["filename"]))
    windows = _windows(original, evaluate)
    # Two departures from NNCF's defaults, each what NNCF's own error message asks for:
    # - the tied embedding is left out: NNCF 3.4's ONNX backend takes Transpose(lm_head
    #   weight) for the embedding's constant weight and then fails to find it as a tensor;
    # - group_size_fallback_mode ADJUST: the default group of 128 does not divide SmolLM2's
    #   576 input channels, and NNCF refuses ("consider setting group_size_fallback_mode").
    gathers = [n.name for n in model.graph.node if n.op_type == "Gather"]
    compressed = nncf.compress_weights(
        model,
        mode=nncf.CompressWeightsMode.INT4_SYM,
        dataset=nncf.Dataset(window_feeds(model, decoder, windows.calibration)),
        awq=True,
        scale_estimation=True,
        ignored_scope=nncf.IgnoredScope(names=gathers, validate=False),
        advanced_parameters=nncf.AdvancedCompressionParameters(
            group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST
        ),
    )
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    save_model(compressed, out / decoder["filename"])
    copy_side_files(original, out, decoder["filename"])
    return out


def measure_folder(
    original: Path, folder: Path, evaluate: dict[str, Any], threads: int
) -> dict[str, Any]:
    import onnx

    from compress_engine.llm.decode_speed import interleaved_decode
    from compress_engine.llm.genai_build import folder_model_bytes
    from compress_engine.llm.generate import answer
    from compress_engine.llm.measure_stage import _prompt_ids
    from compress_engine.llm.memory import peak_rss_mb
    from compress_engine.llm.perplexity import compare_perplexity
    from compress_engine.llm.weight_quant import weight_form
    from compress_engine.llm_configs import DEFAULT_PROMPTS

    llm = evaluate["llm"]
    windows = _windows(original, evaluate)
    ppl = compare_perplexity(original, folder, windows.evaluation, threads=threads)
    decode = interleaved_decode(
        original,
        folder,
        tokens=llm["decode_tokens"],
        rounds=llm["decode_rounds"],
        prompt_ids=_prompt_ids(original, list(DEFAULT_PROMPTS)),
        prefill_ids=[int(t) for t in windows.evaluation[0]],
        threads=threads,
    )
    size, base = folder_model_bytes(folder), folder_model_bytes(original)
    answers = answer(
        folder, list(DEFAULT_PROMPTS), max_new_tokens=llm["answer_tokens"], threads=threads
    )
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    return {
        "size_bytes": size,
        "size_ratio": round(size / base, 4),
        "perplexity": round(ppl.compressed, 4),
        "ppl_delta_pct": round(ppl.delta_pct, 4),
        "decode_tok_s": round(decode.compressed.median_tok_s, 2),
        "decode_tok_s_range": [
            round(decode.compressed.low_tok_s, 2),
            round(decode.compressed.high_tok_s, 2),
        ],
        "fp32_decode_tok_s": round(decode.original.median_tok_s, 2),
        "decode_ratio": round(decode.ratio, 3),
        "prefill_ms": round(decode.compressed.median_prefill_ms, 1),
        "ttft_ms": round(decode.compressed.median_ttft_ms, 1),
        "peak_rss_mb": round(peak_rss_mb(folder, tokens=llm["decode_tokens"], threads=threads), 1),
        "next_token_agreement": round(ppl.next_token_agreement, 4),
        "answers": [text for text, _, _ in answers],
        "form": weight_form(graph),
    }
