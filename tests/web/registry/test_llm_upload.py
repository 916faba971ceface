"""Language-model uploads on the model upload form and the API: a zipped Hugging Face folder and
a GGUF file are stored and start `converting` (the worker builds them: tests/worker/
test_llm_ingest.py); what the engine refuses from their metadata is refused at upload with its
message, leaving no row and no file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from conftest import storage_files
from llm_builders import write_tiny_gguf, zip_folder
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def llm_files(tiny_hf_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """The tiny llama as uploads: a zip of its folder, a GGUF file, and broken variants."""
    folder = tmp_path_factory.mktemp("llm-uploads")
    config = json.loads((tiny_hf_dir / "config.json").read_text())
    weights = (tiny_hf_dir / "model.safetensors").read_bytes()
    shards = {
        "metadata": {},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00002-of-00002.safetensors",
        },
    }

    def variant(name: str, **kwargs) -> Path:
        return zip_folder(tiny_hf_dir, folder / name, **kwargs)

    fancy = json.dumps({**config, "architectures": ["FancyForCausalLM"]}).encode()

    return {
        "hf": variant("tiny-llama.zip", top="tiny-llama"),
        "gguf": write_tiny_gguf(tiny_hf_dir, folder / "tiny-llama.gguf"),
        "pickle": variant("pickle.zip", extra={"pytorch_model.bin": b"\x80\x04\x95 pickled"}),
        "shards": variant(
            "shards.zip",
            skip=["model.safetensors"],
            extra={
                "model.safetensors.index.json": json.dumps(shards).encode(),
                "model-00001-of-00002.safetensors": weights,
            },
        ),
        "architecture": variant(
            "architecture.zip",
            skip=["config.json"],
            extra={"config.json": fancy},
        ),
        "tokenizer": variant("tokenizer.zip", skip=["tokenizer.json"]),
        "bert_gguf": _bert_gguf(folder / "bert.gguf"),
    }


def _bert_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _upload(client, project, path: Path, shapes: str = ""):
    return client.post(
        reverse("registry-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile(path.name, path.read_bytes()), "input_shapes": shapes},
    )


@pytest.mark.parametrize(
    ("kind", "fmt", "label"),
    [
        ("hf", "hf-llm-zip", "Hugging Face causal LM (.zip)"),
        ("gguf", "gguf", "GGUF language model (.gguf)"),
    ],
)
def test_it_stores_a_language_model_and_queues_its_conversion(
    client, owner, project, llm_files, django_capture_on_commit_callbacks, kind, fmt, label
):
    client.force_login(owner.user)
    with django_capture_on_commit_callbacks() as enqueued:
        response = _upload(client, project, llm_files[kind])

    assert response.status_code == 302
    version = ModelVersion.objects.get(project=project)
    assert len(enqueued) == 1  # the conversion task, sent once the row is committed
    assert version.status == "converting" and version.source_format == fmt
    assert version.is_llm and version.llm is None and version.input_spec == []
    assert version.name == "tiny-llama" and not version.file
    assert version.source_file.name.endswith(f"/source{'.hf.zip' if kind == 'hf' else '.gguf'}")
    assert version.source_size_bytes == llm_files[kind].stat().st_size
    assert version.status_message == (
        f"Waiting for a worker to convert the {label} file to an onnxruntime-genai model "
        "(ONNX with a KV cache)."
    )
    page = client.get(response["Location"]).content.decode()
    assert 'hx-trigger="every 2s"' in page
    assert "built into an onnxruntime-genai model (ONNX with a KV cache) at ingest" in page


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("pickle", "The upload holds pickled files (pytorch_model.bin)"),
        (
            "shards",
            "sharded into 2 safetensors files, but the zip lacks model-00002-of-00002.safetensors",
        ),
        ("architecture", "model builder cannot export FancyForCausalLM"),
        ("tokenizer", "The zip holds no tokenizer.json"),
        ("bert_gguf", "holds a 'bert' model, which transformers' GGUF loader cannot read"),
    ],
)
def test_it_refuses_what_the_engine_refuses_and_leaves_nothing_behind(
    client, owner, project, llm_files, kind, message
):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, llm_files[kind])

    assert response.status_code == 422
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not ModelVersion.objects.exists()
    assert storage_files() == before


def test_it_refuses_a_gguf_too_large_once_dequantized(client, owner, project, llm_files, settings):
    # The file fits the limit; its 106,816 parameters as float32 (427 kB) do not.
    settings.MODELPRESS_MAX_UPLOAD_BYTES = 200_000
    assert llm_files["gguf"].stat().st_size < 200_000
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, llm_files["gguf"])

    assert response.status_code == 422
    assert "Dequantized to float32, the GGUF model (106,816 parameters)" in (
        response.content.decode()
    )
    assert not ModelVersion.objects.exists() and storage_files() == before


def test_it_refuses_input_shapes_for_a_language_model(client, owner, project, llm_files):
    client.force_login(owner.user)

    response = _upload(client, project, llm_files["hf"], shapes="input_ids: 1x128 int64")

    assert response.status_code == 422
    assert "needs no input shapes" in response.content.decode()
    assert not ModelVersion.objects.exists()


def _api(client, owner, path: Path, project):
    from accounts.tokens import create_token

    token = create_token(user=owner.user, name="tests").raw
    with path.open("rb") as handle:
        return client.post(
            f"/api/v1/projects/{project.uuid}/models",
            {"file": handle},
            headers={"Authorization": f"Bearer {token}"},
        )


def test_the_api_takes_a_language_model_and_says_what_it_refuses(client, owner, project, llm_files):
    response = _api(client, owner, llm_files["gguf"], project)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["source_format"], body["llm"]) == ("converting", "gguf", None)

    refused = _api(client, owner, llm_files["tokenizer"], project)

    assert refused.status_code == 400
    assert "The zip holds no tokenizer.json" in refused.json()["detail"]
    assert ModelVersion.objects.count() == 1
