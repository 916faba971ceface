from __future__ import annotations

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from conftest import storage_files
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def _upload(client, project, name: str, content: bytes, **extra):
    return client.post(
        reverse("registry-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile(name, content), **extra.pop("data", {})},
        **extra,
    )


def test_it_stores_a_valid_model_with_its_metadata(client, owner, project, tiny_cnn_onnx):
    client.force_login(owner.user)
    content = tiny_cnn_onnx.read_bytes()

    response = _upload(client, project, "tiny_cnn.onnx", content)

    version = ModelVersion.objects.get(project=project)
    assert response.status_code == 302
    assert response["Location"] == reverse("registry-model-version", args=[version.uuid])
    assert version.name == "tiny_cnn" and version.version == 1
    assert version.size_bytes == len(content)
    assert version.sha256 == hashlib.sha256(content).hexdigest()
    assert version.inputs[0]["name"] == "input"
    assert version.inputs[0]["dtype"] == "float32"
    assert version.inputs[0]["shape"][1:] == [1, 8, 8]
    assert version.outputs[0]["name"] == "logits"
    assert version.parameters > 0 and version.opset >= 13
    with version.file.open("rb") as stored:
        assert stored.read() == content
    page = client.get(response["Location"]).content.decode()
    assert version.sha256 in page and "logits" in page


def test_it_numbers_versions_of_the_same_model(client, owner, project, tiny_cnn_onnx):
    client.force_login(owner.user)
    for _ in range(2):
        _upload(client, project, "tiny_cnn.onnx", tiny_cnn_onnx.read_bytes())
    assert sorted(project.model_versions.values_list("version", flat=True)) == [1, 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.onnx", b"\x00\xffnot a protobuf at all" * 50, "not a valid onnx"),
        ("empty.onnx", b"", "empty"),
        ("notes.txt", b"hello", "not a model format modelpress recognises"),
        ("weights.pt", b"\x80\x04\x95 a pickled state dict", "never loads them"),
    ],
)
def test_it_rejects_a_bad_file_and_leaves_nothing_behind(
    client, owner, project, name, content, message
):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, name, content)

    assert response.status_code == 422
    assert message in response.content.decode().lower()
    assert not ModelVersion.objects.exists()
    assert storage_files() == before


def test_it_rejects_a_truncated_model(client, owner, project, tiny_cnn_onnx):
    client.force_login(owner.user)
    content = tiny_cnn_onnx.read_bytes()
    response = _upload(client, project, "cut.onnx", content[: len(content) // 2])
    assert response.status_code == 422
    assert not ModelVersion.objects.exists()


def test_it_rejects_a_file_over_the_size_limit(client, owner, project, tiny_cnn_onnx, settings):
    settings.MODELPRESS_MAX_UPLOAD_BYTES = 1024
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, "tiny_cnn.onnx", tiny_cnn_onnx.read_bytes())

    assert response.status_code == 422
    assert "larger than the upload limit of 1.0\xa0KB" in response.content.decode()
    assert not ModelVersion.objects.exists()
    assert storage_files() == before


def test_it_answers_htmx_uploads_with_a_client_redirect(client, owner, project, tiny_cnn_onnx):
    client.force_login(owner.user)
    response = _upload(
        client, project, "tiny_cnn.onnx", tiny_cnn_onnx.read_bytes(), HTTP_HX_REQUEST="true"
    )
    version = ModelVersion.objects.get()
    assert response["HX-Redirect"] == reverse("registry-model-version", args=[version.uuid])


def test_it_re_renders_only_the_form_for_a_rejected_htmx_upload(client, owner, project):
    client.force_login(owner.user)
    response = _upload(client, project, "bad.onnx", b"junk" * 10, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200  # htmx swaps only 2xx responses by default
    assert body.lstrip().startswith("<form") and "<html" not in body
    assert "not a valid onnx" in body.lower()


def test_it_forbids_viewers_to_upload(client, viewer, project, tiny_cnn_onnx):
    client.force_login(viewer.user)
    response = _upload(client, project, "tiny_cnn.onnx", tiny_cnn_onnx.read_bytes())
    assert response.status_code == 403
    assert not ModelVersion.objects.exists()


def test_it_refuses_a_model_onnx_runtime_cannot_load_at_upload(client, owner, project):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")],
    )
    # onnx 1.23's default IR version (14) is newer than ONNX Runtime 1.31 loads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=14)
    client.force_login(owner.user)

    response = _upload(client, project, "new_ir.onnx", model.SerializeToString())

    assert response.status_code == 422
    assert "newer than ONNX Runtime on this server loads" in response.content.decode()
    assert not ModelVersion.objects.exists()
