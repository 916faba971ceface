"""onnxruntime-genai's model builder in a child process: the folder it writes loads and
generates, its files are listed, a hang is stopped, a missing package is named; and an HF
folder zip goes through ingest end to end."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import llm_builders
from compress_engine import EngineError
from compress_engine.ingest import ModelFormat, convert_to_onnx
from compress_engine.llm import genai_build
from compress_engine.llm.genai_build import build_genai, folder_model_bytes, genai_folder_files
from compress_engine.llm.genai_check import check_genai_folder, is_genai_folder


def test_the_builder_writes_a_folder_that_loads_and_generates(tiny_genai_dir):
    names = {p.name for p in genai_folder_files(tiny_genai_dir)}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= names
    assert is_genai_folder(tiny_genai_dir)
    text = check_genai_folder(tiny_genai_dir, tokens=6)
    assert isinstance(text, str) and text
    onnx_files = [tiny_genai_dir / "model.onnx", tiny_genai_dir / "model.onnx.data"]
    assert folder_model_bytes(tiny_genai_dir) == sum(p.stat().st_size for p in onnx_files)
    # fp32 weights: the 106,816 parameters take at least 4 bytes each.
    assert folder_model_bytes(tiny_genai_dir) > 4 * 106_816


def test_folder_files_leave_out_scratch_models(tiny_genai_dir, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_genai_dir, tmp_path / "copy")
    (folder / "scratch.onnx").write_bytes(b"x")
    (folder / "scratch.onnx.data").write_bytes(b"x")
    files = genai_folder_files(folder)
    assert files[:2] == [folder / "model.onnx", folder / "model.onnx.data"]
    assert not {"scratch.onnx", "scratch.onnx.data"} & {p.name for p in files}


def test_a_broken_folder_is_refused(tiny_genai_dir, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_genai_dir, tmp_path / "copy")
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["vocab_size"] = "many"
    (folder / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match="onnxruntime-genai cannot load the model"):
        check_genai_folder(folder)
    (folder / "model.onnx").unlink()
    assert not is_genai_folder(folder)


def test_a_build_past_its_time_limit_is_stopped(tiny_hf_dir, tmp_path):
    with pytest.raises(EngineError, match="ran past its 1 s limit"):
        build_genai(tiny_hf_dir, tmp_path / "genai", timeout_s=1)


def test_a_missing_onnx_ir_is_named(tiny_hf_dir, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        genai_build.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnx_ir" else real(name, *a),
    )
    with pytest.raises(EngineError, match=r"'onnx_ir' is missing.*pip install onnx-ir"):
        build_genai(tiny_hf_dir, tmp_path / "genai", timeout_s=60)


def test_other_precisions_are_refused(tiny_hf_dir, tmp_path):
    with pytest.raises(EngineError, match="not 'fp16'"):
        build_genai(tiny_hf_dir, tmp_path / "genai", precision="fp16", timeout_s=60)


def test_an_hf_zip_is_ingested_as_a_genai_folder(tiny_hf_dir, tiny_genai_dir, tmp_path):
    upload = llm_builders.zip_folder(tiny_hf_dir, tmp_path / "m.zip", top="tiny")
    result = convert_to_onnx(upload, ModelFormat.HF_LLM_ZIP, tmp_path / "out", timeout_s=300)
    assert result.model == tmp_path / "out" / "genai" / "model.onnx"
    assert result.external_data and result.source_format is ModelFormat.HF_LLM_ZIP
    assert result.llm is not None and result.llm.source_format == "hf-folder"
    assert result.llm.parameters == 106_816 and result.llm.source_quantization is None
    assert [t.name for t in result.info.inputs][:2] == ["input_ids", "attention_mask"]
    assert result.info.outputs[0].name == "logits"
    assert "model builder" in result.log and "generated" in result.log
    # No scratch left beside the folder.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["genai"]
    # The same weights as the session's folder, built the same way: the same logits.
    feed_ids = np.array([[5, 17, 42, 99]], dtype=np.int64)
    np.testing.assert_allclose(
        llm_builders.genai_logits(result.model.parent, feed_ids),
        llm_builders.genai_logits(tiny_genai_dir, feed_ids),
    )
