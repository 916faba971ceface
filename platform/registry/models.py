"""Projects and the model versions uploaded into them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.models import Team


class Project(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="unique_project_name_per_team")
        ]

    def __str__(self) -> str:
        return self.name


def _model_upload_to(instance: ModelVersion, filename: str) -> str:
    # Never reuse the uploader's file name in the storage path.
    return f"models/{instance.project.team.uuid}/{instance.uuid}/model.onnx"


class ModelVersion(models.Model):
    """One uploaded file. Versions with the same name in a project form one model."""

    class Format(models.TextChoices):
        ONNX = "onnx", "ONNX"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.ONNX)
    original_filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=_model_upload_to, max_length=300)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    opset = models.PositiveIntegerField()
    ir_version = models.PositiveIntegerField()
    producer = models.CharField(max_length=200, blank=True)
    parameters = models.BigIntegerField()
    inputs = models.JSONField(default=list)
    outputs = models.JSONField(default=list)
    op_types = models.JSONField(default=dict)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name", "version"], name="unique_model_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def takes_same_inputs(self, other: ModelVersion) -> bool:
        """Whether both models can be fed the same samples (e.g. a distillation teacher):
        the engine's rule (compress_engine.inspect.same_inputs) on the recorded inputs."""
        from compress_engine.inspect import TensorInfo, same_inputs

        def infos(version: ModelVersion) -> list[TensorInfo]:
            return [TensorInfo.model_validate(t) for t in version.inputs]

        return same_inputs(infos(self), infos(other))


def _dataset_upload_to(instance: Dataset, filename: str) -> str:
    return f"datasets/{instance.project.team.uuid}/{instance.uuid}/data.npz"


class Dataset(models.Model):
    """An uploaded `.npz` of samples (arrays named after model inputs, or `x`; optional
    integer labels `y` or `labels`), used for calibration, training and evaluation."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    original_filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=_dataset_upload_to, max_length=300)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    samples = models.PositiveIntegerField()
    arrays = models.JSONField(default=dict, help_text="name -> {shape, dtype}")
    label_array = models.CharField(max_length=20, blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_labels(self) -> bool:
        return bool(self.label_array)
