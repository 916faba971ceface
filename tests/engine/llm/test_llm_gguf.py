"""A GGUF upload: its header read without dequantizing, refused when transformers cannot read
it, and ingested (dequantized in a child process, then built) into a genai folder that computes
what the original model computes, up to the file's Q8_0 rounding."""

from __future__ import annotations

import numpy as np
import pytest

import llm_builders
from compress_engine import EngineError
from compress_engine.ingest import ModelFormat, convert_to_onnx, detect_format
from compress_engine.llm.gguf_upload import read_gguf_header


@pytest.fixture(scope="module")
def tiny_gguf(tiny_hf_dir, tmp_path_factory):
    return llm_builders.write_tiny_gguf(tiny_hf_dir, tmp_path_factory.mktemp("gguf") / "t.gguf")


def test_it_reads_the_header(tiny_gguf):
    assert detect_format(tiny_gguf, "t.gguf") is ModelFormat.GGUF
    summary = read_gguf_header(tiny_gguf)
    assert (summary.architecture, summary.name, summary.quantization) == (
        "llama",
        "tiny-llama",
        "Q8_0",
    )
    assert (summary.tensors, summary.layers, summary.context_length) == (20, 2, 512)
    assert summary.parameters == 106_816 and summary.float32_bytes == 4 * 106_816


def test_it_refuses_what_is_not_a_readable_gguf(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(EngineError, match="GGUF file cannot be read"):
        read_gguf_header(fake)
    onnx_like = tmp_path / "x.gguf"
    onnx_like.write_bytes(b"\x08\x07rest")
    with pytest.raises(EngineError, match="not a GGUF file"):
        read_gguf_header(onnx_like)


def test_it_refuses_an_architecture_transformers_cannot_read(tmp_path):
    import gguf

    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(path, "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(EngineError, match=r"'bert' model, which transformers' GGUF loader cannot"):
        read_gguf_header(path)


def test_a_gguf_is_ingested_and_computes_what_the_original_computes(
    tiny_gguf, tiny_genai_dir, tmp_path
):
    result = convert_to_onnx(tiny_gguf, ModelFormat.GGUF, tmp_path / "out", timeout_s=300)
    assert result.llm is not None
    assert (result.llm.source_format, result.llm.source_quantization) == ("gguf", "Q8_0")
    assert result.llm.parameters == 106_816 and result.llm.tie_word_embeddings
    assert result.llm.tokenizer == "BPE, 512 tokens"
    assert result.llm.chat_template == llm_builders.CHAT_TEMPLATE
    assert "Q8_0" in result.log and "dequantized" in result.log
    folder = result.model.parent
    # The tokenizer rebuilt from the GGUF metadata splits text as the original does.
    text = "The quick brown fox, <|im_start|>user\nsaid: def f(x): return x ** 2<|im_end|>"
    assert _encode(folder, text) == _encode(tiny_genai_dir, text)
    ids = np.array([[5, 17, 42, 99, 300, 7]], dtype=np.int64)
    ours, original = (
        llm_builders.genai_logits(folder, ids),
        llm_builders.genai_logits(tiny_genai_dir, ids),
    )
    # Q8_0 rounds each weight to 1/127 of its block's largest; q/k rows laid out the wrong way
    # (llama.cpp permutes them) would differ by the size of the logits themselves.
    assert np.abs(ours - original).max() < 0.05 * np.abs(original).max()
    assert np.abs(ours - original).max() > 0  # the Q8_0 weights really are the reference


def test_a_gguf_too_big_once_dequantized_is_refused_before_converting(tiny_gguf, tmp_path):
    with pytest.raises(EngineError, match="Dequantized to float32, the GGUF model"):
        convert_to_onnx(tiny_gguf, ModelFormat.GGUF, tmp_path / "out", max_bytes=200_000)


def _encode(folder, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids
