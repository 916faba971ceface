"""Language models converted by the worker (jobrunner.ingest.convert_model_version): the tiny
llama uploaded as a zipped Hugging Face folder and as a GGUF file becomes a ready version whose
stored file is its onnxruntime-genai folder in one zip, with the model's facts in `llm`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from django.urls import reverse

from conftest import _ingest, storage_files
from jobrunner.ingest import convert_model_version
from llm_builders import CHAT_TEMPLATE, write_tiny_gguf, zip_folder
from registry.models import ModelVersion
from registry.services import ingest_model_upload

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def llm_uploads(tiny_hf_dir: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("llm-uploads")
    return {
        "hf": zip_folder(tiny_hf_dir, folder / "tiny-llama.zip", top="tiny-llama"),
        "gguf": write_tiny_gguf(tiny_hf_dir, folder / "tiny-llama.gguf"),
        # Members pass the upload's checks; the weights' header is broken.
        "broken": zip_folder(
            tiny_hf_dir,
            folder / "broken.zip",
            skip=["model.safetensors"],
            extra={"model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"},
        ),
    }


def _stored_genai(version: ModelVersion, folder: Path) -> Path:
    """The version's stored zip, fetched and opened the way the engine opens a model zip."""
    from compress_engine.onnx_files import unpack_zip

    local = folder / f"stored{version.stored_suffix}"
    with version.file.open("rb") as stored:
        local.write_bytes(stored.read())
    with zipfile.ZipFile(local) as zf:
        members = zf.infolist()
    # The folder's files at the zip's root, stored (not deflated).
    assert all("/" not in m.filename and m.compress_type == zipfile.ZIP_STORED for m in members)
    return unpack_zip(local, folder / "unzipped")


@pytest.mark.parametrize(
    ("kind", "fmt", "source", "quantization"),
    [("hf", "hf-llm-zip", "hf-folder", None), ("gguf", "gguf", "gguf", "Q8_0")],
)
def test_it_converts_a_language_model_into_a_stored_genai_zip(
    client, project, owner, llm_uploads, tmp_path, kind, fmt, source, quantization
):
    from compress_engine.llm.genai_check import check_genai_folder
    from compress_engine.llm.llm_info import INFO_FILE, read_llm_info

    version = _ingest(ingest_model_upload, project, owner, llm_uploads[kind])
    assert version.status == "converting" and version.source_format == fmt

    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "ready", version.status_message
    assert version.file.name.endswith("/model.genai.zip") and version.stored_suffix == ".genai.zip"
    info = version.llm_info
    assert info is not None and version.is_llm
    assert (info.architecture, info.layers, info.hidden_size) == ("llama", 2, 64)
    assert (info.attention_heads, info.kv_heads, info.vocab_size) == (4, 2, 512)
    assert (info.context_length, info.parameters, info.tie_word_embeddings) == (512, 106_816, True)
    assert info.tokenizer == "BPE, 512 tokens" and info.chat_template == CHAT_TEMPLATE
    assert (info.source_format, info.source_quantization) == (source, quantization)
    assert "onnxruntime-genai" in version.status_message
    assert version.inputs[0]["name"] == "input_ids" and version.outputs[0]["name"] == "logits"
    assert version.size_bytes > 4 * 106_816  # float32 weights (the builder unties lm_head)
    assert version.source_file  # the upload is kept, as for other converted formats

    model = _stored_genai(version, tmp_path)
    assert model.name == "model.onnx"
    names = {p.name for p in model.parent.iterdir()}
    assert {"genai_config.json", "tokenizer.json", INFO_FILE} <= names
    # The facts travel in the zip too, for runs that never see the database.
    assert read_llm_info(model.parent) == info
    # The stored folder is one onnxruntime-genai loads and generates with.
    assert check_genai_folder(model.parent)

    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()
    assert "<dt>Architecture</dt><dd>llama</dd>" in page
    assert ("Q8_0 weights were dequantized" in page) is (kind == "gguf")


def test_a_model_whose_weights_cannot_be_read_fails_cleanly(project, owner, llm_uploads):
    before = storage_files()
    version = _ingest(ingest_model_upload, project, owner, llm_uploads["broken"])
    assert version.status == "converting"

    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "failed" and version.llm is None
    assert "model.safetensors is not a safetensors file" in version.status_message
    assert not version.file and not version.source_file
    assert storage_files() == before
