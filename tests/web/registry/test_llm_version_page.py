"""The version page of a ready language model: its facts (ModelVersion.llm) instead of the
inputs table, the chat template folded away, the GGUF reference note, and no image-only forms."""

from __future__ import annotations

import pytest
from django.urls import reverse

from llm_builders import CHAT_TEMPLATE
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db

KV = [
    {"name": f"past_key_values.0.{kv}", "dtype": "float32", "shape": ["batch", 2, "past", 16]}
    for kv in ("key", "value")
]


def _llm_version(project, owner, **facts) -> ModelVersion:
    """A version as the worker leaves a converted language model (the conversion itself is
    tests/worker/test_llm_ingest.py's)."""
    from compress_engine import LlmInfo

    info = LlmInfo(
        architecture="llama",
        parameters=134_515_008,
        layers=30,
        hidden_size=576,
        attention_heads=9,
        kv_heads=3,
        vocab_size=49152,
        context_length=8192,
        tokenizer="BPE, 49152 tokens",
        chat_template=CHAT_TEMPLATE,
        source_format="gguf",
        source_quantization="Q4_1",
        tie_word_embeddings=True,
    ).model_copy(update=facts)
    return ModelVersion.objects.create(
        project=project,
        name="smollm2",
        version=1,
        source_format="gguf" if info.source_format == "gguf" else "hf-llm-zip",
        original_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        file=f"models/{project.team.uuid}/x/model.genai.zip",
        size_bytes=540_000_000,
        sha256="0" * 64,
        opset=21,
        ir_version=10,
        parameters=162_826_560,
        inputs=[
            {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
            {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "total"]},
            *KV,
        ],
        outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 49152]}],
        status_message="GGUF file (llama, Q4_1) dequantized to float32.",
        llm=info.model_dump(mode="json"),
        uploaded_by=owner.user,
    )


def test_it_shows_a_language_models_facts(client, owner, project):
    version = _llm_version(project, owner)
    client.force_login(owner.user)

    response = client.get(reverse("registry-model-version", args=[version.uuid]))

    assert response.status_code == 200
    page = response.content.decode()
    assert version.is_llm and version.stored_suffix == ".genai.zip"
    for fact in (
        "<dt>Architecture</dt><dd>llama</dd>",
        "<dt>Parameters</dt><dd>134,515,008</dd>",
        "<dt>Layers</dt><dd>30</dd>",
        "<dt>Hidden size</dt><dd>576</dd>",
        "<dt>Attention heads</dt><dd>9 query, 3 key/value (grouped-query attention)</dd>",
        "<dt>Vocabulary</dt><dd>49,152 tokens</dd>",
        "<dt>Context length</dt><dd>8,192 tokens</dd>",
        "<dt>Tokenizer</dt><dd>BPE, 49152 tokens</dd>",
        "<dt>Output layer</dt><dd>tied to the embedding</dd>",
        "<dt>Source format</dt><dd>GGUF file, Q4_1 weights</dd>",
    ):
        assert fact in page
    assert "weights were dequantized to float32: that float32 model is the reference" in page
    # The chat template, escaped, in a closed <details>.
    assert '<details data-testid="chat-template">' in page
    assert "{% for m in messages %}&lt;|im_start|&gt;" in page
    # Image-only things are not offered: the inputs table, dims to choose, preprocessing.
    assert "past_key_values.0.key" not in page and "Inputs and outputs" not in page
    assert 'data-testid="input-shapes"' not in page
    assert 'data-testid="model-preprocessing"' not in page
    assert "stored as an onnxruntime-genai folder with its tokenizer" in page


def test_it_says_so_when_a_model_has_no_chat_template(client, owner, project):
    version = _llm_version(
        project,
        owner,
        chat_template=None,
        source_format="hf-folder",
        source_quantization=None,
        kv_heads=9,
        tie_word_embeddings=False,
    )
    client.force_login(owner.user)

    page = client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()

    assert "<dt>Source format</dt><dd>Hugging Face folder (safetensors, zipped)</dd>" in page
    assert "<dt>Attention heads</dt><dd>9 query</dd>" in page
    assert "<dt>Output layer</dt><dd>its own</dd>" in page
    assert "has no chat template" in page and "chat-template" not in page
    assert "the reference" not in page


def test_it_refuses_image_settings_for_a_language_model(client, owner, project):
    version = _llm_version(project, owner)
    client.force_login(owner.user)

    preprocessing = client.post(
        reverse("registry-model-version-preprocessing", args=[version.uuid]),
        {"mean": "0.5", "std": "0.5", "scale": "1"},
        follow=True,
    )
    shapes = client.post(
        reverse("registry-model-version-input-shapes", args=[version.uuid]),
        {"batch": "1"},
        follow=True,
    )

    assert "A language model takes text, not images." in preprocessing.content.decode()
    assert "no dynamic input dims to set" in shapes.content.decode()
    version.refresh_from_db()
    assert version.preprocessing == {} and version.input_shapes == {}


def test_the_api_gives_a_language_models_facts(client, owner, project):
    from accounts.tokens import create_token

    version = _llm_version(project, owner)
    token = create_token(user=owner.user, name="tests").raw

    response = client.get(
        f"/api/v1/models/{version.uuid}", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200
    llm = response.json()["llm"]
    assert (llm["architecture"], llm["layers"], llm["source_quantization"]) == ("llama", 30, "Q4_1")
    assert llm["chat_template"] == CHAT_TEMPLATE


def test_version_pages_render_beside_a_text_dataset(client, owner, project, model_version):
    """Which datasets a job on each may use is the job form's business; neither page breaks."""
    from registry.models import Dataset

    Dataset.objects.create(
        project=project,
        name="prose",
        original_filename="prose.txt",
        file=f"datasets/{project.team.uuid}/x/data.txt",
        size_bytes=10,
        sha256="0" * 64,
        samples=2,
        kind=Dataset.Kind.TEXT,
        characters=9,
        previews=[{"text": "Some"}, {"text": "text"}],
    )
    version = _llm_version(project, owner)
    client.force_login(owner.user)

    for shown in (version, model_version):
        response = client.get(reverse("registry-model-version", args=[shown.uuid]))
        assert response.status_code == 200
