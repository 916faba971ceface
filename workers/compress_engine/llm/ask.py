"""One prompt a user typed, answered by the original and the compressed model of a finished job,
each given as the zipped onnxruntime-genai folder the platform stores (the model version's file
and the job's model.genai.zip).

Both zips are unpacked into a temporary folder that is removed afterwards, whatever happens;
the models are loaded one at a time (generate.side_by_side), so memory holds one model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from compress_engine.errors import EngineError
from compress_engine.llm.generate import side_by_side
from compress_engine.onnx_files import unpack_zip
from compress_engine.report_llm import Generation

# Bounds the web's form also checks: what one typed prompt may ask of a worker.
MAX_PROMPT_CHARS = 500
MAX_ANSWER_TOKENS = 512


def answer_side_by_side(
    original_zip: Path,
    compressed_zip: Path,
    prompt: str,
    *,
    max_new_tokens: int = 96,
    threads: int | None = None,
    scratch: Path | None = None,
) -> Generation:
    """`prompt` (with the model's chat template, greedy, at most `max_new_tokens` new tokens)
    answered by both models, with tokens/s and tokens generated under each. `threads` sets the
    decoder's intra-op threads (None: ONNX Runtime's default); `scratch` is where the zips are
    unpacked (a temporary folder inside it; the system's default when None)."""
    text = prompt.strip()
    if not text:
        raise EngineError("The prompt is empty: type a question or the start of a text.")
    if len(text) > MAX_PROMPT_CHARS:
        raise EngineError(
            f"The prompt is {len(text)} characters; at most {MAX_PROMPT_CHARS} are answered."
        )
    if not 1 <= max_new_tokens <= MAX_ANSWER_TOKENS:
        raise EngineError(
            f"max_new_tokens is {max_new_tokens}; it must be between 1 and {MAX_ANSWER_TOKENS}."
        )
    with tempfile.TemporaryDirectory(prefix="ask-", dir=scratch) as tmp:
        original = unpack_zip(original_zip, Path(tmp) / "original").parent
        compressed = unpack_zip(compressed_zip, Path(tmp) / "compressed").parent
        [generation] = side_by_side(
            original, compressed, [text], max_new_tokens=max_new_tokens, threads=threads
        )
    return generation
