"""The language-model artifact: a zip of the compressed onnxruntime-genai folder that
`onnxruntime_genai.Model` loads as it is once unzipped, with an example chat.py and a README.

Members are stored (not deflated): the weights are integers and scales that barely compress,
and a stored member unzips at disk speed.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

from compress_engine.llm.genai_build import genai_folder_files

ARTIFACT_NAME = "model.genai.zip"

CHAT_PY = '''"""Chat with the compressed model in this folder (onnxruntime-genai).

    pip install onnxruntime-genai      # or onnxruntime-genai-cuda beside onnxruntime-gpu
    python chat.py                     # interactive
    python chat.py --prompt "What is the capital of France?"

Greedy decoding; the model's chat template is applied to each message.
"""

import argparse
import time
from pathlib import Path

import onnxruntime_genai as og

HERE = Path(__file__).resolve().parent


def answer(model, tokenizer, prompt, max_new_tokens):
    messages = '[{"role": "user", "content": %s}]' % _json(prompt)
    text = tokenizer.apply_chat_template(messages=messages, add_generation_prompt=True)
    ids = tokenizer.encode(text)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream = tokenizer.create_stream()
    start, count = time.perf_counter(), 0
    while not generator.is_done():
        generator.generate_next_token()
        count += 1
        print(stream.decode(generator.get_next_tokens()[0]), end="", flush=True)
    seconds = time.perf_counter() - start
    print(f"\\n[{count} tokens, {count / seconds:.1f} tokens/s]")


def _json(text):
    import json

    return json.dumps(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt", help="answer this one prompt and exit")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    model = og.Model(str(HERE))
    tokenizer = og.Tokenizer(model)
    if args.prompt:
        answer(model, tokenizer, args.prompt, args.max_new_tokens)
        return
    while True:
        try:
            prompt = input("> ")
        except EOFError:
            return
        if prompt.strip():
            answer(model, tokenizer, prompt, args.max_new_tokens)


if __name__ == "__main__":
    main()
'''


def pack_genai_folder(folder: Path, target: Path, extra: Mapping[str, str] | None = None) -> Path:
    """The genai folder's files at the archive root, plus `extra` {name: text} (ModelPress's
    stored form of an uploaded language model has none: one .onnx, so
    `onnx_files.unpack_zip` opens it); written to a temporary name first, so `target` never
    holds a partial zip."""
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in genai_folder_files(folder):
            zf.write(path, path.relative_to(folder).as_posix())
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    os.replace(tmp, target)
    return target


def write_genai_zip(folder: Path, target: Path, readme: str) -> Path:
    """The artifact: the genai folder with chat.py and README.md."""
    return pack_genai_folder(folder, target, {"chat.py": CHAT_PY, "README.md": readme})
