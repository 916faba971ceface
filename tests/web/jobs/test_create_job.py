"""create_job's checks before anything is queued: teachers, datasets and labels."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from conftest import _ingest
from jobs.models import Job
from jobs.services import JobRejected, create_job

pytestmark = pytest.mark.django_db

PRUNE_DISTILL = """version: 1
steps:
  - prune: {method: channel, amount: 0.5}
  - distill: {epochs: 2, batch_size: 32, teacher: TEACHER}
evaluate: {latency_runs: 3, warmup: 1, batch_sizes: []}
"""
FINETUNE = """version: 1
steps:
  - prune: {method: channel, amount: 0.5}
  - finetune: {epochs: 1}
"""


@pytest.fixture
def teacher_version(project, owner, trained_cnn_onnx):
    """A second model of the same team, with the same inputs as `model_version`."""
    from registry.services import ingest_model_upload

    return _ingest(ingest_model_upload, project, owner, trained_cnn_onnx)


@pytest.fixture
def outsiders_version(outsider, tmp_path, trained_cnn_onnx):
    from factories import ProjectFactory
    from registry.services import ingest_model_upload

    other = ProjectFactory(team=outsider.user.memberships.get().team, created_by=outsider.user)
    return _ingest(ingest_model_upload, other, outsider, trained_cnn_onnx)


def _create(version, user, recipe, dataset=None) -> Job:
    return create_job(model_version=version, user=user, recipe=recipe, dataset=dataset)


def test_it_accepts_a_teacher_from_the_same_team_in_canonical_form(
    owner, model_version, teacher_version, dataset, django_capture_on_commit_callbacks
):
    typed = str(teacher_version.uuid).upper()  # as someone might paste it
    with django_capture_on_commit_callbacks(execute=False):
        job = _create(model_version, owner.user, PRUNE_DISTILL.replace("TEACHER", typed), dataset)
    assert job.recipe["steps"][1]["distill"]["teacher"] == str(teacher_version.uuid)


def test_it_accepts_the_original_as_teacher_for_a_member(
    member, model_version, dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = _create(
            model_version, member.user, PRUNE_DISTILL.replace("TEACHER", "original"), dataset
        )
    assert job.recipe["steps"][1]["distill"]["teacher"] == "original"


def test_it_refuses_an_outsiders_model_version_as_teacher(
    client, owner, model_version, outsiders_version, dataset
):
    client.force_login(owner.user)
    response = client.post(
        reverse("jobs-create", args=[model_version.uuid]),
        {
            "recipe": PRUNE_DISTILL.replace("TEACHER", str(outsiders_version.uuid)),
            "dataset": str(dataset.uuid),
        },
        follow=True,
    )
    assert not Job.objects.exists()
    body = response.content.decode()
    assert "The job was not started" in body and "is not a model you can use" in body
    # The outsider's model is not named: the refusal is the same as for an unknown id.
    assert outsiders_version.project.name not in body


@pytest.mark.parametrize("teacher", ["my-best-model", str(uuid.uuid4())])
def test_it_refuses_a_teacher_that_is_no_model_version(owner, model_version, dataset, teacher):
    with pytest.raises(JobRejected, match="is not a model you can use"):
        _create(model_version, owner.user, PRUNE_DISTILL.replace("TEACHER", teacher), dataset)
    assert not Job.objects.exists()


def test_it_refuses_a_teacher_with_other_inputs(owner, project, model_version, dataset, tmp_path):
    from model_builders import export_tiny_mlp
    from registry.services import ingest_model_upload

    # Also an input named "input", but [batch, 64] instead of [batch, 1, 8, 8].
    mlp = _ingest(ingest_model_upload, project, owner, export_tiny_mlp(tmp_path / "mlp.onnx"))
    with pytest.raises(JobRejected, match="takes other inputs"):
        _create(model_version, owner.user, PRUNE_DISTILL.replace("TEACHER", str(mlp.uuid)), dataset)
    assert not Job.objects.exists()


def test_it_refuses_finetune_on_a_dataset_without_labels(
    client, owner, model_version, unlabelled_dataset
):
    client.force_login(owner.user)
    response = client.post(
        reverse("jobs-create", args=[model_version.uuid]),
        {"recipe": FINETUNE, "dataset": str(unlabelled_dataset.uuid)},
        follow=True,
    )
    assert not Job.objects.exists()
    body = response.content.decode()
    assert "Fine-tuning trains on labels" in body and "unlabelled" in body


def test_it_accepts_distill_on_a_dataset_without_labels(
    owner, model_version, unlabelled_dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        job = _create(
            model_version,
            owner.user,
            PRUNE_DISTILL.replace("TEACHER", "original"),
            unlabelled_dataset,
        )
    assert job.dataset == unlabelled_dataset


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (PRUNE_DISTILL.replace("TEACHER", "original"), "Distillation needs training samples"),
        ("version: 1\nsteps:\n  - prune: {importance: taylor}\n", "needs training samples"),
        (
            "version: 1\nsteps:\n  - prune: {iterations: 2}\n  - quantize: {mode: static-int8}\n",
            "need calibration and training samples",
        ),
    ],
)
def test_it_refuses_steps_that_need_data_without_a_dataset(owner, model_version, recipe, message):
    with pytest.raises(JobRejected, match=message):
        _create(model_version, owner.user, recipe)
    assert not Job.objects.exists()


def test_it_starts_a_plain_channel_prune_without_a_dataset(
    owner, model_version, django_capture_on_commit_callbacks
):
    # l2 importance and no recovery: the step as configured needs no data.
    with django_capture_on_commit_callbacks(execute=False):
        job = _create(model_version, owner.user, "version: 1\nsteps:\n  - prune: {amount: 0.5}\n")
    assert job.status == "queued" and job.dataset is None


def test_it_lists_prune_presets_and_says_they_need_a_dataset(
    client, owner, model_version, teacher_version
):
    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid])).content
    page = page.decode()
    assert 'value="prune-distill"' in page and 'value="prune-distill-int8"' in page
    option = page.split('value="prune-distill"', 1)[1].split("</option>", 1)[0]
    assert "(needs a dataset)" in option
    help_text = page.split('data-testid="dataset-help">', 1)[1].split("</small>", 1)[0]
    assert "prune + distill presets train on it" in help_text
    # Candidate teachers: the team's other versions with the same inputs, by id.
    teachers = page.split('data-testid="teachers">', 1)[1].split("</details>", 1)[0]
    assert str(teacher_version.uuid) in teachers and str(model_version.uuid) not in teachers
