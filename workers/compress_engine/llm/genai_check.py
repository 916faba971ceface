"""Is a folder an onnxruntime-genai model, and does it load and generate?

A built or compressed folder is offered only after onnxruntime-genai has loaded it and
generated a few tokens greedily from a short prompt: the file checks of ONNX cannot see a
genai_config.json that does not fit the graph.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress_engine.errors import EngineError, short_message
from compress_engine.llm.genai_build import GENAI_CONFIG

CHECK_PROMPT = "The capital of France is"


def is_genai_folder(folder: Path) -> bool:
    """A folder holding genai_config.json whose decoder model file is there."""
    folder = Path(folder)
    try:
        config = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
        name = config["model"]["decoder"].get("filename") or "model.onnx"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return isinstance(name, str) and (folder / name).is_file()


def check_genai_folder(folder: Path, *, tokens: int = 8, prompt: str = CHECK_PROMPT) -> str:
    """Load the folder with onnxruntime-genai (CPU) and generate `tokens` tokens greedily from
    `prompt`; returns the generated text. EngineError when it cannot load or generate."""
    import onnxruntime_genai as og

    folder = Path(folder)
    if not is_genai_folder(folder):
        raise EngineError(f"{folder.name} is not an onnxruntime-genai model folder.")
    try:
        config = og.Config(str(folder))
        config.clear_providers()  # the CUDA build would follow a GPU provider in the config
        model = og.Model(config)
        tokenizer = og.Tokenizer(model)
    except Exception as exc:  # genai raises plain RuntimeError for a bad folder
        raise EngineError(
            f"onnxruntime-genai cannot load the model: {short_message(exc)}"
        ) from None
    try:
        ids = tokenizer.encode(prompt)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + tokens, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        out: list[int] = []
        while not generator.is_done() and len(out) < tokens:
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        text = tokenizer.decode(out)
    except Exception as exc:
        raise EngineError(
            f"onnxruntime-genai loads the model but cannot generate with it: {short_message(exc)}"
        ) from None
    if not out:
        raise EngineError("onnxruntime-genai loads the model but it generated no token.")
    return str(text)
