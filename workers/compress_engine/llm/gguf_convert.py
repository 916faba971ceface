"""Child process of `gguf_to_hf`: dequantize a GGUF file to a float32 Hugging Face folder.

    python -m compress_engine.llm.gguf_convert SPEC.json

SPEC holds `folder` and `file` (the GGUF file in a folder of its own), `out` (the folder to
write) and `supported` (the architecture classes onnxruntime-genai's builder exports). Writes
`result.json` beside SPEC: {"log": ...}, {"error": ...} (a message for the user) or
{"missing": module}. Runs offline (HF_HUB_OFFLINE=1 is set by the parent).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class Refused(Exception):
    """The file is readable but cannot go on (its message is for the user)."""


def convert(spec: dict[str, Any]) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder, name, out = spec["folder"], spec["file"], Path(spec["out"])
    start = time.perf_counter()
    # The config first (metadata only): refuse what the builder cannot export before spending
    # minutes dequantizing.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if arch not in spec["supported"]:
        raise Refused(
            f"The GGUF file holds a {config.model_type!r} model ({arch or 'no causal-LM class'}), "
            "which onnxruntime-genai's model builder cannot export. It exports: "
            f"{', '.join(spec['supported'])}."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # Dequantized weights are plain float32 tensors, but transformers still marks the model as
    # GGUF-quantized and refuses to save it ("not serializable") until the marks are removed.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    return (
        f"Dequantized the GGUF file ({config.model_type}, {params:,} parameters) to float32 "
        f"in {time.perf_counter() - start:.0f} s."
    )


def main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    try:
        result = {"log": convert(spec)}
    except Refused as exc:
        result = {"error": str(exc)}
    except ImportError as exc:
        result = {"missing": (exc.name or "transformers").split(".")[0]}
    except Exception as exc:  # transformers' loader on a file it cannot read
        text = " ".join(str(exc).split())[:400] or type(exc).__name__
        result = {"error": f"transformers could not load the GGUF file: {text}"}
    (spec_path.parent / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
