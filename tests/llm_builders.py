"""Tiny language models for tests, built in the test session (nothing is downloaded).

- `build_tiny_hf(dest)`: a randomly initialised 2-block llama (vocab 512, hidden 64) with a
  byte-level BPE tokenizer trained on Python's bundled `pydoc_data` topics and a chat
  template, saved as a Hugging Face folder (model.safetensors, tokenizer.json, ...).
- `zip_folder(folder, target, ...)`: that folder as an upload zip, optionally with members
  left out or added (for the refusal tests).
- `write_tiny_gguf(hf_dir, target)`: the same model as a GGUF file the way llama.cpp's
  converter writes it (q/k rows permuted, Q8_0 matrices, the tokenizer as metadata), which
  transformers' GGUF loader reads back.

The session fixtures `tiny_hf_dir` and `tiny_genai_dir` (the latter built by
`compress_engine.llm.genai_build.build_genai`) are defined here; a suite's conftest.py makes
them its own with `from llm_builders import tiny_genai_dir, tiny_hf_dir  # noqa: F401`
(tests/engine/llm/conftest.py does).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{m['role']}}\n{{m['content']}}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CONFIG = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def prose(topics: int = 60) -> str:
    """English prose from Python's bundled documentation topics (always installed)."""
    import pydoc_data.topics

    return "\n".join(list(pydoc_data.topics.topics.values())[:topics])


def build_tiny_hf(dest: Path, *, seed: int = 0) -> Path:
    """Save the tiny llama and its tokenizer into `dest` (a Hugging Face folder)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_CONFIG["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([prose()], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**TINY_CONFIG))
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    fast.save_pretrained(dest)
    return dest


def zip_folder(
    folder: Path,
    target: Path,
    *,
    top: str | None = None,
    skip: Iterable[str] = (),
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Zip the files of `folder` (under the top folder `top` when given), leaving out the
    names in `skip` and adding `extra` {name: bytes}."""
    skipped = set(skip)
    prefix = f"{top}/" if top else ""
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            if path.is_file() and name not in skipped:
                zf.write(path, prefix + name)
        for name, data in (extra or {}).items():
            zf.writestr(prefix + name, data)
    return target


def genai_logits(folder: Path, ids: np.ndarray) -> np.ndarray:
    """Logits of one teacher-forced pass of a genai folder's model.onnx over `ids` [1, n] with
    an empty KV cache (ONNX Runtime directly, not onnxruntime-genai)."""
    import onnxruntime as ort

    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    empty = np.zeros((ids.shape[0], decoder["num_key_value_heads"], 0, decoder["head_size"]))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values"):  # [batch, kv_heads, past, head_size]
            feed[spec.name] = empty.astype(np.float32)
    return session.run(["logits"], feed)[0]


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout of q/k rows (transformers' loader undoes it)."""
    split = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
    return split.swapaxes(1, 2).reshape(w.shape)


_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _gguf_tensors(hf_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    tensors: dict[str, np.ndarray] = {}
    weights = load_file(hf_dir / "model.safetensors")
    for name, value in weights.items():
        value = value.astype(np.float32)
        if name == "model.embed_tokens.weight":
            tensors["token_embd.weight"] = value
        elif name == "model.norm.weight":
            tensors["output_norm.weight"] = value
        elif name == "lm_head.weight":
            tensors["output.weight"] = value
        else:
            _, _, block, rest = name.split(".", 3)
            if rest == "self_attn.q_proj.weight":
                value = _permute(value, heads)
            elif rest == "self_attn.k_proj.weight":
                value = _permute(value, kv_heads)
            tensors[f"blk.{block}.{_LAYER_NAMES[rest]}"] = value
    return tensors


def write_tiny_gguf(hf_dir: Path, target: Path, *, quantize: bool = True) -> Path:
    """Write the model in `hf_dir` (a llama built by `build_tiny_hf`) as a GGUF file; 2-D
    weights as Q8_0 when `quantize` (the file type then says "Q8_0"), norms in float32."""
    import gguf

    cfg = json.loads((hf_dir / "config.json").read_text())
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    tokens = [None] * len(vocab)
    for text, index in vocab.items():
        tokens[index] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer = gguf.GGUFWriter(target, "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    writer.add_rope_freq_base(float(cfg.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    writer.add_vocab_size(len(tokens))
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    special = {t: i for i, t in enumerate(tokens) if t in SPECIAL_TOKENS}
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special["<|im_start|>"])
    writer.add_eos_token_id(special["<|im_end|>"])
    writer.add_unk_token_id(special["<|endoftext|>"])
    writer.add_pad_token_id(special["<|endoftext|>"])
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, value in _gguf_tensors(hf_dir).items():
        if quantize and value.ndim == 2:
            q8 = gguf.GGMLQuantizationType.Q8_0
            # Quantized bytes: the writer derives the logical shape from the byte shape.
            writer.add_tensor(name, gguf.quants.quantize(value, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama's Hugging Face folder (model.safetensors, tokenizer.json, ...)."""
    return build_tiny_hf(tmp_path_factory.mktemp("llm") / "tiny_hf")


@pytest.fixture(scope="session")
def tiny_genai_dir(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama as an onnxruntime-genai folder (fp32, CPU) built by the model builder
    (about 12 s). Shared by the session: copy it before changing anything in it."""
    from compress_engine.llm.genai_build import build_genai

    return build_genai(tiny_hf_dir, tmp_path_factory.mktemp("llm") / "tiny_genai", timeout_s=300)
