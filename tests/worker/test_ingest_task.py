"""The conversion task run by Celery (eagerly, in this process), and jobs on converted
versions: the runner fetches the stored form with its suffix and uses the chosen dims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import _ingest, storage_files
from jobrunner.runner import run_job
from jobrunner.tasks import convert_model_version
from jobs.models import Job
from registry.models import ModelVersion
from registry.services import ingest_model_upload

pytestmark = pytest.mark.django_db


def _ingest_with_shapes(project, owner, path: Path, shapes: str) -> ModelVersion:
    def ingest(**kwargs):
        return ingest_model_upload(**kwargs, input_shapes=shapes)

    return _ingest(ingest, project, owner, path)


def test_the_celery_task_converts_a_version(project, owner, torch_model_files):
    version = _ingest_with_shapes(
        project, owner, torch_model_files["torchscript"], "input: 1x3x16x16"
    )
    assert version.status == "converting"

    result = convert_model_version.apply(args=[str(version.uuid)])

    assert result.successful()
    version.refresh_from_db()
    assert version.status == "ready", version.status_message
    assert version.inputs[0]["name"] == "input" and version.outputs[0]["name"] == "output"


def test_the_celery_task_fails_a_version_cleanly(project, owner, torch_model_files):
    before = storage_files()
    version = _ingest_with_shapes(project, owner, torch_model_files["torchscript"], "1x3x2x2")

    convert_model_version.apply(args=[str(version.uuid)])

    version.refresh_from_db()
    assert version.status == "failed" and "does not run on inputs" in version.status_message
    assert storage_files() == before


def _job(version: ModelVersion, owner, recipe: dict) -> Job:
    return Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        recipe=recipe,
        created_by=owner.user,
    )


def test_a_job_runs_on_a_version_stored_with_external_data(
    project, owner, tiny_cnn_onnx, fast_recipe, tmp_path, monkeypatch
):
    from compress_engine.onnx_files import THRESHOLD_ENV, pack_zip, save_model

    monkeypatch.setenv(THRESHOLD_ENV, "1024")
    assert save_model(onnx.load(str(tiny_cnn_onnx)), tmp_path / "cnn.onnx")
    pack_zip(tmp_path / "cnn.onnx", tmp_path / "cnn.zip")
    version = _ingest(ingest_model_upload, project, owner, tmp_path / "cnn.zip")
    convert_model_version.apply(args=[str(version.uuid)])
    version.refresh_from_db()
    assert version.stored_suffix == ".onnx.zip", version.status_message
    job = _job(version, owner, fast_recipe)

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "succeeded", job.error


def _sequence_model(path: Path) -> Path:
    """x [batch, seq, 4] @ W [4, 4]: a MatMul for dynamic int8, with a dynamic `seq`."""
    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("recipe_shapes", "measured"), [(None, [2, 24, 4]), ([1, 5, 4], [1, 5, 4])]
)
def test_a_job_uses_the_dims_chosen_on_the_version(
    project, owner, fast_recipe, tmp_path, recipe_shapes, measured
):
    from registry.services import set_input_shapes

    version = _ingest(ingest_model_upload, project, owner, _sequence_model(tmp_path / "seq.onnx"))
    set_input_shapes(version, {"dim_0": 24})
    recipe = {**fast_recipe, "evaluate": {**fast_recipe["evaluate"], "batch_size": 2}}
    if recipe_shapes:
        # A recipe's own evaluate.input_shapes wins over the version's.
        recipe["evaluate"]["input_shapes"] = {"x": recipe_shapes}
    job = _job(version, owner, recipe)

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.report["input_shapes"] == {"x": measured}
