"""Data-aware int4 weights for the MatMuls of a genai decoder: NNCF's AWQ + scale estimation.

It sees the model as it runs in a perplexity window: input_ids [1, window], an all-ones
attention mask and an empty KV cache, so the activations it calibrates on are the real ones.

NNCF 3.4's ONNX backend refuses `gptq` (and `lora_correction`) outright: "ONNX backend does not
support gptq option(s)"; ONNX Runtime's GPTQ measured worse than round to nearest on SmolLM2
(llm_configs.WeightMethod), so there is no GPTQ here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx

from compress_engine.errors import EngineError


def window_feeds(
    model: onnx.ModelProto, decoder: dict[str, Any], windows: np.ndarray
) -> list[dict[str, np.ndarray]]:
    """One session feed per window: ids, attention mask, empty past keys/values."""
    inputs = decoder["inputs"]
    declared = {i.name for i in model.graph.input}
    heads, size = int(decoder["num_key_value_heads"]), int(decoder["head_size"])
    cache: dict[str, np.ndarray] = {}
    for layer in range(int(decoder["num_hidden_layers"])):
        for key in ("past_key_names", "past_value_names"):
            name = inputs[key] % layer
            cache[name] = np.zeros((1, heads, 0, size), dtype=_cache_dtype(model, name))
    feeds = []
    for window in windows:
        ids = np.asarray(window, dtype=np.int64).reshape(1, -1)
        feed = {inputs["input_ids"]: ids, **cache}
        mask = inputs.get("attention_mask", "attention_mask")
        if mask in declared:
            feed[mask] = np.ones_like(ids)
        feeds.append(feed)
    missing = declared - set(feeds[0]) if feeds else set()
    if missing:
        raise EngineError(f"calibration cannot feed the decoder's inputs {sorted(missing)}.")
    return feeds


def _cache_dtype(model: onnx.ModelProto, name: str) -> type:
    for info in model.graph.input:
        if info.name == name:
            return (
                np.float16
                if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
                else np.float32
            )
    raise EngineError(f"the decoder has no input {name} named in genai_config.json.")


def awq_int4(
    model: onnx.ModelProto,
    names: list[str],
    *,
    block_size: int,
    symmetric: bool,
    calibration: np.ndarray,
    decoder: dict[str, Any],
    scale_estimation: bool = True,
) -> onnx.ModelProto:
    """NNCF int4 (AWQ + scale estimation) on exactly the MatMuls `names`, every other MatMul
    ignored; the result is in NNCF's DequantizeLinear + MatMul form (plus AWQ's Mul nodes).

    ratio 1 and all_layers keep NNCF from moving any of `names` to its 8-bit backup.
    """
    import nncf

    wanted = set(names)
    # Every other node, the embedding Gather included: NNCF reads Transpose(lm_head weight) as
    # a constant weight of the tied embedding and then fails to find it as a tensor.
    ignored = [n.name for n in model.graph.node if n.name not in wanted]
    dataset = nncf.Dataset(window_feeds(model, decoder, calibration))
    mode = nncf.CompressWeightsMode.INT4_SYM if symmetric else nncf.CompressWeightsMode.INT4_ASYM
    _quiet_nncf()
    try:
        return nncf.compress_weights(
            model,
            mode=mode,
            ratio=1.0,
            group_size=block_size,
            all_layers=True,
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
            dataset=dataset,
            subset_size=len(calibration),
            awq=True,
            scale_estimation=scale_estimation,
        )
    except nncf.ParameterNotSupportedError as exc:
        raise EngineError(f"NNCF could not compress this model's weights: {exc}") from exc


def _quiet_nncf() -> None:
    # NNCF logs a progress bar and per-layer tables at INFO; the job log keeps warnings only.
    logging.getLogger("nncf").setLevel(logging.WARNING)
