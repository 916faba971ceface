"""Loading an onnxruntime-genai folder on the CPU with a chosen thread count, and greedy
generators over it. Shared by decode speed, generation and the memory probe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compress_engine.errors import EngineError, short_message


def open_model(folder: Path, *, threads: int | None = None) -> Any:
    """An `og.Model` of the folder; `threads` sets the decoder's intra-op threads through a
    config overlay (genai 0.18 reads session_options from the config), leaving the folder as is.
    """
    import onnxruntime_genai as og

    try:
        config = og.Config(str(folder))
        # The CUDA build of genai would otherwise follow any provider in the file: measure CPU.
        config.clear_providers()
        if threads:
            options = {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        return og.Model(config)
    except Exception as exc:  # genai raises plain RuntimeError/OrtException for a bad folder
        raise EngineError(
            f"onnxruntime-genai cannot load {folder.name}: {short_message(exc)}"
        ) from exc


def greedy(model: Any, *, max_length: int, min_length: int = 0) -> Any:
    """A greedy generator; `min_length` (total tokens, prompt included) suppresses EOS until then,
    so timed rounds of two models generate the same count."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(
        do_sample=False, max_length=max_length, min_length=min_length, num_beams=1
    )
    return og.Generator(model, params)


def context_length(folder: Path) -> int:
    """The longest sequence the folder was built for (genai_config.json's model.context_length)."""
    config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    return int(config["model"].get("context_length") or config["search"]["max_length"])
