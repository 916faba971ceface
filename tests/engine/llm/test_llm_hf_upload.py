"""A Hugging Face causal LM uploaded as a zip: recognised, checked before anything loads it,
refused with a message that says what to do, and described without loading a tensor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import llm_builders
from compress_engine import EngineError, LlmInfo
from compress_engine.ingest import ModelFormat, detect_format
from compress_engine.llm.hf_upload import builder_architectures, check_hf_zip, unpack_hf_zip
from compress_engine.llm.llm_info import llm_info


def _config_with(hf_dir: Path, **changes: object) -> bytes:
    config = json.loads((hf_dir / "config.json").read_text())
    return json.dumps({**config, **changes}).encode()


@pytest.mark.parametrize("top", [None, "tiny-llama"])
def test_it_recognises_and_unpacks_a_folder_zip(tiny_hf_dir, tmp_path, top):
    upload = llm_builders.zip_folder(tiny_hf_dir, tmp_path / "m.zip", top=top)
    assert detect_format(upload, "m.zip") is ModelFormat.HF_LLM_ZIP
    assert ModelFormat.HF_LLM_ZIP.is_llm and not ModelFormat.ONNX_ZIP.is_llm
    names = check_hf_zip(upload, max_bytes=None)
    assert any(n.endswith("model.safetensors") for n in names)
    folder = unpack_hf_zip(upload, tmp_path / "out", max_bytes=None)
    assert folder == (tmp_path / "out" / top if top else tmp_path / "out")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()


def test_it_recognises_a_gguf_file_by_its_first_bytes(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 32)
    assert detect_format(path, "model.bin") is ModelFormat.GGUF


def test_it_refuses_pickled_weights_in_the_zip(tiny_hf_dir, tmp_path):
    pickled = {"pytorch_model.bin": b"\x80\x04pickle", "training_args.bin": b"\x80\x04"}
    upload = llm_builders.zip_folder(tiny_hf_dir, tmp_path / "m.zip", extra=pickled)
    with pytest.raises(EngineError, match=r"pickled files \(pytorch_model.bin, training_args"):
        detect_format(upload, "m.zip")
    with pytest.raises(EngineError, match="save_pretrained"):
        unpack_hf_zip(upload, tmp_path / "out", max_bytes=None)
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()


def test_it_refuses_a_folder_with_pickles_only(tiny_hf_dir, tmp_path):
    upload = llm_builders.zip_folder(
        tiny_hf_dir,
        tmp_path / "m.zip",
        skip={"model.safetensors"},
        extra={"pytorch_model.bin": b"\x80\x04"},
    )
    with pytest.raises(EngineError, match="never loads them"):
        detect_format(upload, "m.zip")


def test_it_refuses_a_sharded_model_with_a_missing_shard(tiny_hf_dir, tmp_path):
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {"weight_map": {"model.embed_tokens.weight": shards[0], "model.norm.weight": shards[1]}}
    upload = llm_builders.zip_folder(
        tiny_hf_dir,
        tmp_path / "m.zip",
        skip={"model.safetensors"},
        extra={
            shards[0]: (tiny_hf_dir / "model.safetensors").read_bytes(),
            "model.safetensors.index.json": json.dumps(index).encode(),
        },
    )
    with pytest.raises(EngineError, match=r"sharded into 2 .* lacks model-00002-of-00002"):
        check_hf_zip(upload, max_bytes=None)


def test_it_refuses_shards_without_their_index(tiny_hf_dir, tmp_path):
    upload = llm_builders.zip_folder(
        tiny_hf_dir,
        tmp_path / "m.zip",
        skip={"model.safetensors"},
        extra={"model-00001-of-00002.safetensors": b"x"},
    )
    with pytest.raises(EngineError, match=r"lacks model\.safetensors\.index\.json"):
        check_hf_zip(upload, max_bytes=None)


def test_it_refuses_a_zip_without_tokenizer_json(tiny_hf_dir, tmp_path):
    upload = llm_builders.zip_folder(tiny_hf_dir, tmp_path / "m.zip", skip={"tokenizer.json"})
    with pytest.raises(EngineError, match=r"no tokenizer\.json, which onnxruntime-genai needs"):
        detect_format(upload, "m.zip")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # A causal LM the builder has no exporter for.
        (
            {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"},
            r"cannot export GPT2LMHeadModel \(model_type 'gpt2'\)\. It exports: .*LlamaForCausalLM",
        ),
        ({"architectures": ["BertForMaskedLM"]}, "not a causal language model"),
        ({"architectures": []}, "names no architecture"),
        ({"quantization_config": {"quant_method": "gptq"}}, "already quantized .*gptq"),
    ],
)
def test_it_refuses_what_the_builder_cannot_export(tiny_hf_dir, tmp_path, changes, message):
    upload = llm_builders.zip_folder(
        tiny_hf_dir,
        tmp_path / "m.zip",
        skip={"config.json"},
        extra={"config.json": _config_with(tiny_hf_dir, **changes)},
    )
    with pytest.raises(EngineError, match=message):
        detect_format(upload, "m.zip")


def test_the_builders_architectures_come_from_its_source():
    supported = builder_architectures()
    assert {"LlamaForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM"} <= supported
    assert all(a.endswith("ForCausalLM") for a in supported)


def test_it_describes_the_model_from_its_files(tiny_hf_dir, tmp_path):
    info = llm_info(tiny_hf_dir, source_format="hf-folder")
    assert isinstance(info, LlmInfo)
    # The tied lm_head is stored once: embedding 512x64 + 2 blocks + final norm.
    block = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64
    assert info.parameters == 512 * 64 + 2 * block + 64
    assert (info.architecture, info.layers, info.hidden_size) == ("llama", 2, 64)
    assert (info.attention_heads, info.kv_heads, info.vocab_size) == (4, 2, 512)
    assert info.context_length == 512 and info.tie_word_embeddings
    assert info.tokenizer == "BPE, 512 tokens"
    assert info.chat_template == llm_builders.CHAT_TEMPLATE
    # Older folders keep the template in tokenizer_config.json.
    old = shutil.copytree(tiny_hf_dir, tmp_path / "old")
    (old / "chat_template.jinja").unlink()
    config = json.loads((old / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": "{{ messages }}"}]
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    assert llm_info(old, source_format="hf-folder").chat_template == "{{ messages }}"
