"""Non-ONNX uploads: stored as a source file, converted to ONNX by the worker-side function
(jobrunner.ingest.convert_model_version), with the status shown and polled on the page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from onnx import TensorProto, helper

from conftest import storage_files, tiny_torch_net
from jobrunner.ingest import convert_model_version
from registry.models import ModelVersion
from registry.services import RegistryRejected, require_ready

pytestmark = pytest.mark.django_db


def _upload(client, project, path: Path, name: str | None = None, shapes: str = ""):
    return client.post(
        reverse("registry-upload", args=[project.uuid]),
        {
            "file": SimpleUploadedFile(name or path.name, path.read_bytes()),
            "input_shapes": shapes,
        },
    )


def _stored_model(version: ModelVersion, folder: Path) -> Path:
    """The version's canonical ONNX, fetched and (for a zip) unpacked, ready for ORT."""
    from compress_engine.onnx_files import unpack_zip

    folder.mkdir(parents=True, exist_ok=True)
    local = folder / f"stored{version.stored_suffix}"
    with version.file.open("rb") as stored:
        local.write_bytes(stored.read())
    return unpack_zip(local, folder / "unzipped") if local.name.endswith(".zip") else local


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _torch(x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return tiny_torch_net()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(
    ("kind", "shapes", "fmt"),
    [("torchscript", "input: 1x3x16x16", "torchscript"), ("export", "", "torch-export")],
)
def test_it_converts_a_torch_upload_in_the_worker(
    client,
    owner,
    project,
    torch_model_files,
    tmp_path,
    django_capture_on_commit_callbacks,
    kind,
    shapes,
    fmt,
):
    client.force_login(owner.user)
    with django_capture_on_commit_callbacks() as enqueued:
        response = _upload(client, project, torch_model_files[kind], shapes=shapes)

    version = ModelVersion.objects.get(project=project)
    assert response.status_code == 302
    assert len(enqueued) == 1  # the conversion task, sent once the row is committed
    assert version.status == "converting" and version.source_format == fmt
    assert version.format == "onnx" and not version.file and version.source_file
    assert version.size_bytes is None and version.parameters is None
    page = client.get(response["Location"]).content.decode()
    assert reverse("registry-model-version-status", args=[version.uuid]) in page
    assert 'hx-trigger="every 2s"' in page

    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "ready", version.status_message
    assert version.file.name.endswith("/model.onnx")
    weights = sum(p.numel() for p in tiny_torch_net().parameters())
    # The count includes the exporter's small shape constants (dynamo adds a few).
    assert weights <= version.parameters < weights + 10
    assert version.inputs[0]["shape"][1:] == [3, 16, 16]
    assert version.size_bytes == version.file.size
    assert "Checked against the source model" in version.status_message
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(_stored_model(version, tmp_path), x), _torch(x), atol=1e-4)
    page = client.get(response["Location"]).content.decode()
    assert "every 2s" not in page and version.sha256 in page and "Ready" in page


def test_it_converts_an_onnx_zip_and_keeps_the_external_data(
    client, owner, project, tiny_cnn_onnx, tmp_path, monkeypatch
):
    from compress_engine.onnx_files import THRESHOLD_ENV, pack_zip, save_model

    monkeypatch.setenv(THRESHOLD_ENV, "1024")
    assert save_model(onnx.load(str(tiny_cnn_onnx)), tmp_path / "cnn.onnx")
    pack_zip(tmp_path / "cnn.onnx", tmp_path / "cnn.zip")
    client.force_login(owner.user)

    _upload(client, project, tmp_path / "cnn.zip")
    version = ModelVersion.objects.get(project=project)
    assert version.status == "converting" and version.source_format == "onnx-zip"
    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "ready", version.status_message
    assert version.file.name.endswith("/model.onnx.zip") and version.stored_suffix == ".onnx.zip"
    x = np.zeros((2, 1, 8, 8), np.float32)
    np.testing.assert_allclose(
        _run(_stored_model(version, tmp_path / "check"), x), _run(tiny_cnn_onnx, x), atol=1e-6
    )


@pytest.mark.parametrize("file", ["net.keras", "saved.zip"])
def test_it_converts_a_tensorflow_upload(client, owner, project, keras_model_files, tmp_path, file):
    client.force_login(owner.user)
    _upload(client, project, keras_model_files / file)
    version = ModelVersion.objects.get(project=project)

    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "ready", version.status_message
    reference = np.load(keras_model_files / "reference.npz")
    got = _run(_stored_model(version, tmp_path), reference["x"])
    np.testing.assert_allclose(got, reference["y"], atol=1e-4)


def test_it_marks_a_failed_conversion_and_leaves_no_files(
    client, owner, project, torch_model_files
):
    client.force_login(owner.user)
    before = storage_files()
    # Five channels for a Conv2d that takes three: torch itself refuses the example input.
    _upload(client, project, torch_model_files["torchscript"], shapes="input: 1x5x16x16")
    version = ModelVersion.objects.get(project=project)
    assert storage_files() != before  # the source file, until the conversion ends

    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "failed"
    assert version.status_message.startswith(
        "The model does not run on inputs of the given shapes (input: 1x5x16x16)"
    )
    assert "to have 3 channels, but got 5 channels" in version.status_message
    assert not version.source_file and not version.file
    assert storage_files() == before
    page = client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()
    assert "conversion-error" in page and "upload it again" in page
    with pytest.raises(RegistryRejected, match="could not be converted"):
        require_ready(version)


def test_it_does_nothing_when_a_finished_conversion_is_delivered_again(
    client, owner, project, torch_model_files
):
    client.force_login(owner.user)
    _upload(client, project, torch_model_files["export"])
    version = ModelVersion.objects.get(project=project)
    convert_model_version(str(version.uuid))
    version.refresh_from_db()
    files = storage_files()

    convert_model_version(str(version.uuid))

    assert storage_files() == files
    assert ModelVersion.objects.get(pk=version.pk).file.name == version.file.name


def test_it_asks_for_torchscript_shapes_at_upload(client, owner, project, torch_model_files):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, torch_model_files["torchscript"])

    assert response.status_code == 422
    assert "does not record the shapes of its inputs" in response.content.decode()
    assert not ModelVersion.objects.exists() and storage_files() == before


def test_it_rejects_unreadable_input_shapes(client, owner, project, torch_model_files):
    client.force_login(owner.user)

    response = _upload(client, project, torch_model_files["torchscript"], shapes="input: 1 by 3")

    assert response.status_code == 422
    assert "Cannot read the input shape" in response.content.decode()
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize("kind", ["state_dict", "module"])
def test_it_refuses_torch_save_checkpoints(client, owner, project, torch_model_files, kind):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, torch_model_files[kind])

    assert response.status_code == 422
    assert "never loads them" in response.content.decode()
    assert not ModelVersion.objects.exists() and storage_files() == before


def test_a_viewer_cannot_upload(client, viewer, project, torch_model_files):
    client.force_login(viewer.user)
    before = storage_files()

    response = _upload(client, project, torch_model_files["export"])

    assert response.status_code == 403
    assert not ModelVersion.objects.exists() and storage_files() == before


def test_the_status_region_stops_polling_once_the_conversion_ends(
    client, owner, project, torch_model_files
):
    client.force_login(owner.user)
    _upload(client, project, torch_model_files["export"])
    version = ModelVersion.objects.get(project=project)
    url = reverse("registry-model-version-status", args=[version.uuid])

    converting = client.get(url, headers={"HX-Request": "true"})
    convert_model_version(str(version.uuid))
    done = client.get(url, headers={"HX-Request": "true"})

    assert converting.status_code == 200 and "every 2s" in converting.content.decode()
    assert done.status_code == 286 and done["HX-Refresh"] == "true"
    assert "every 2s" not in done.content.decode()


def test_jobs_wait_for_a_ready_version(client, owner, project, torch_model_files):
    client.force_login(owner.user)
    _upload(client, project, torch_model_files["export"])
    version = ModelVersion.objects.get(project=project)

    with pytest.raises(RegistryRejected, match="still being converted"):
        require_ready(version)
    convert_model_version(str(version.uuid))
    version.refresh_from_db()
    require_ready(version)


def test_the_project_page_lists_the_status(client, owner, project, torch_model_files):
    client.force_login(owner.user)
    _upload(client, project, torch_model_files["export"])

    page = client.get(reverse("registry-project", args=[project.uuid])).content.decode()

    assert "Converting" in page and "torch.export program" in page


def test_an_outsider_gets_404(client, outsider, owner, project, torch_model_files):
    client.force_login(owner.user)
    _upload(client, project, torch_model_files["export"])
    version = ModelVersion.objects.get(project=project)
    client.force_login(outsider.user)

    for name in ("registry-model-version", "registry-model-version-status"):
        assert client.get(reverse(name, args=[version.uuid])).status_code == 404
    shapes_url = reverse("registry-model-version-input-shapes", args=[version.uuid])
    assert client.post(shapes_url, {"dim_0": "8"}).status_code == 404


# --- dynamic input dims, chosen once on the version page --------------------------------


def _dynamic_model(path: Path) -> Path:
    """x [batch, seq, 4] and mask [batch, seq] -> Relu: `seq` is a dynamic non-batch dim."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["mask"], ["m"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["batch", "seq"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_it_remembers_sizes_for_dynamic_dims(client, member, project, tmp_path):
    client.force_login(member.user)
    _upload(client, project, _dynamic_model(tmp_path / "seq.onnx"))
    version = ModelVersion.objects.get(project=project)
    page = client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()
    assert "seq (x[1], mask[1])" in page

    response = client.post(
        reverse("registry-model-version-input-shapes", args=[version.uuid]), {"dim_0": "32"}
    )

    version.refresh_from_db()
    assert response.status_code == 302
    assert version.input_shapes == {"x": [None, 32, 4], "mask": [None, 32]}
    assert version.evaluation_shapes(8) == {"x": [8, 32, 4], "mask": [8, 32]}
    page = client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()
    assert "seq (x[1], mask[1]) = 32" in page


def test_it_refuses_a_size_out_of_range(client, member, project, tmp_path):
    client.force_login(member.user)
    _upload(client, project, _dynamic_model(tmp_path / "seq.onnx"))
    version = ModelVersion.objects.get(project=project)

    response = client.post(
        reverse("registry-model-version-input-shapes", args=[version.uuid]),
        {"dim_0": "0"},
        follow=True,
    )

    version.refresh_from_db()
    assert version.input_shapes == {}
    assert "were not saved" in response.content.decode()


def test_a_viewer_cannot_set_sizes(client, viewer, owner, project, tmp_path):
    client.force_login(owner.user)
    _upload(client, project, _dynamic_model(tmp_path / "seq.onnx"))
    version = ModelVersion.objects.get(project=project)
    client.force_login(viewer.user)

    response = client.post(
        reverse("registry-model-version-input-shapes", args=[version.uuid]), {"dim_0": "32"}
    )

    assert response.status_code == 403
    version.refresh_from_db()
    assert version.input_shapes == {}


def test_a_model_with_only_a_dynamic_batch_asks_nothing(client, owner, model_version):
    client.force_login(owner.user)

    page = client.get(reverse("registry-model-version", args=[model_version.uuid]))

    assert page.status_code == 200
    assert 'data-testid="input-shapes"' not in page.content.decode()
