"""Text datasets for language models: a .txt (passages between blank lines) or .jsonl (a `text`
field per line) upload, read with the engine's load_text, counted, previewed on the dataset
page; bad text is refused with the engine's message, leaving no row and no file."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from conftest import storage_files
from registry.models import Dataset

pytestmark = pytest.mark.django_db

PROSE = (
    "The quick brown fox jumps over the lazy dog.\n"
    "It was a bright cold day in April.\n\n"
    "  Call me Ishmael.  \n\n\n"
    "Über alles: naïve café text stays UTF-8."
)
PASSAGES = [
    "The quick brown fox jumps over the lazy dog.\nIt was a bright cold day in April.",
    "Call me Ishmael.",
    "Über alles: naïve café text stays UTF-8.",
]


def _upload(client, project, filename: str, content: bytes, name: str = ""):
    return client.post(
        reverse("registry-dataset-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile(filename, content), "name": name},
    )


def test_it_stores_a_txt_dataset_with_its_counts_and_preview(client, owner, project):
    client.force_login(owner.user)

    response = _upload(client, project, "prose.txt", PROSE.encode())

    assert response.status_code == 302
    dataset = Dataset.objects.get(project=project)
    assert dataset.kind == "text" and dataset.is_text and dataset.name == "prose"
    assert dataset.samples == 3 and dataset.characters == sum(len(p) for p in PASSAGES)
    assert dataset.previews == [{"text": p} for p in PASSAGES]
    assert dataset.file.name.endswith("/data.txt") and dataset.stored_suffix == ".txt"
    assert not dataset.has_labels and dataset.arrays == {}
    with dataset.file.open("rb") as stored:
        assert stored.read() == PROSE.encode()

    page = client.get(reverse("registry-dataset", args=[dataset.uuid])).content.decode()
    assert "Text (.txt, .jsonl)" in page
    assert 'data-testid="dataset-samples">3</dd>' in page
    assert f'data-testid="dataset-characters">{dataset.characters}</dd>' in page
    assert "tokenized with the model's own tokenizer and cut into windows" in page
    assert "Passages are the paragraphs between blank lines." in page
    assert page.count('data-testid="text-passage"') == 3
    assert "Call me Ishmael." in page and "naïve café" in page
    assert "It was a bright cold day in April." in page
    # No thumbnails for text; the sample URL answers 404.
    assert 'data-testid="thumbnail"' not in page
    assert client.get(reverse("registry-dataset-sample", args=[dataset.uuid, 0])).status_code == 404
    listing = client.get(reverse("registry-project", args=[project.uuid])).content.decode()
    assert "3 passages" in listing and f"text, {dataset.characters} characters" in listing


def test_it_stores_a_jsonl_dataset_and_previews_its_opening_text(client, owner, project):
    records = [{"text": f"Passage number {i}. " + "word " * 100, "id": i} for i in range(40)]
    content = "\n".join(json.dumps(r) for r in records) + "\n\n"
    client.force_login(owner.user)

    response = _upload(client, project, "chats.JSONL", content.encode(), name="chat logs")

    assert response.status_code == 302
    dataset = Dataset.objects.get(project=project)
    assert dataset.name == "chat logs" and dataset.stored_suffix == ".jsonl"
    assert dataset.samples == 40
    assert dataset.characters == sum(len(r["text"].strip()) for r in records)
    # The preview keeps about 2,000 characters: the first passages, the last one cut.
    shown = [p["text"] for p in dataset.previews]
    assert 1 < len(shown) < 40 and shown[0] == records[0]["text"].strip()
    assert shown[-1].endswith("…")
    page = client.get(reverse("registry-dataset", args=[dataset.uuid])).content.decode()
    assert "line's <code>text</code> field" in page
    assert f"The first {len(shown)} of 40 passages." in page


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "records.jsonl",
            b'{"text": "fine"}\n{"body": "no text field"}\n',
            "records.jsonl line 2: each line must be a JSON object with a string",
        ),
        ("records.jsonl", b'{"text": "fine"}\nnot json\n', "records.jsonl line 2: not valid JSON"),
        ("junk.txt", bytes(range(128, 256)) * 8, "junk.txt is not UTF-8 text (byte 0)"),
        ("zeros.txt", b"text\x00\x00\x00\x01\x02", "holds NUL bytes: it is a binary file"),
        ("empty.txt", b"\n\n   \n", "empty.txt holds no text"),
    ],
)
def test_it_refuses_bad_text_and_leaves_nothing_behind(
    client, owner, project, name, content, message
):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, name, content)

    assert response.status_code == 422
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Dataset.objects.exists()
    assert storage_files() == before


def test_it_refuses_text_over_the_size_bounds(client, owner, project, settings, monkeypatch):
    import compress_engine.llm.text_data as text_data

    client.force_login(owner.user)
    before = storage_files()
    settings.MODELPRESS_MAX_UPLOAD_BYTES = 100
    over_upload = _upload(client, project, "long.txt", b"words " * 50)
    # Within the upload limit, over the engine's bound on text (64 MiB, lowered here).
    settings.MODELPRESS_MAX_UPLOAD_BYTES = 2 * 1024**2
    monkeypatch.setattr(text_data, "MAX_TEXT_BYTES", 1024**2)
    over_engine = _upload(client, project, "long.txt", b"w" * (1024**2 + 1))

    assert over_upload.status_code == 422
    assert "larger than the upload limit" in over_upload.content.decode()
    assert over_engine.status_code == 422
    assert "long.txt is 1 MiB; text datasets are limited to 1 MiB" in over_engine.content.decode()
    assert not Dataset.objects.exists() and storage_files() == before


def test_the_api_takes_text_and_says_what_it_refuses(client, owner, project, tmp_path):
    from accounts.tokens import create_token

    token = create_token(user=owner.user, name="tests").raw
    good, bad = tmp_path / "prose.txt", tmp_path / "bad.jsonl"
    good.write_text(PROSE, encoding="utf-8")
    bad.write_text('{"texts": "x"}\n', encoding="utf-8")

    def post(path):
        with path.open("rb") as handle:
            return client.post(
                f"/api/v1/projects/{project.uuid}/datasets",
                {"file": handle},
                headers={"Authorization": f"Bearer {token}"},
            )

    created, refused = post(good), post(bad)

    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["kind"], body["samples"]) == ("text", 3)
    assert body["characters"] == sum(len(p) for p in PASSAGES)
    assert refused.status_code == 400
    assert "bad.jsonl line 1" in refused.json()["detail"]
    assert Dataset.objects.count() == 1
