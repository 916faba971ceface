"""Projects and the model versions uploaded into them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models

from accounts.models import Team
from compress_engine import ModelFormat

if TYPE_CHECKING:
    from compress_engine import LlmInfo


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


# The names a model version's files may have in storage: the canonical model (one file, a
# zip of the .onnx with its external data, or a language model's onnxruntime-genai folder
# zipped) and the uploaded source of a converted version.
GENAI_ZIP = "model.genai.zip"
_STORED_NAMES = {"model.onnx", "model.onnx.zip", GENAI_ZIP} | {
    f"source{f.suffix}" for f in ModelFormat
}


# The start of the status message of a version a worker is converting.
_STARTED = "Converting"


def conversion_target(fmt: ModelFormat) -> str:
    """What a format is converted to at ingest, in words."""
    return "an onnxruntime-genai model (ONNX with a KV cache)" if fmt.is_llm else "ONNX"


def _model_upload_to(instance: ModelVersion, filename: str) -> str:
    # Never reuse the uploader's file name in the storage path: only our own fixed names.
    name = filename.rsplit("/", 1)[-1]
    if name not in _STORED_NAMES:
        name = "model.onnx"
    return f"models/{instance.project.team.uuid}/{instance.uuid}/{name}"


class ModelVersion(models.Model):
    """One uploaded file. Versions with the same name in a project form one model.

    `file` is always the canonical ONNX form (`format`); `source_format` is what was
    uploaded. A non-ONNX upload is kept in `source_file` and converted by a worker: the
    version is `converting` until then, and the fields only the conversion can tell (size,
    opset, parameters, inputs, ...) stay empty until it is `ready`. A language model (a
    zipped Hugging Face folder or a GGUF file) is stored as its onnxruntime-genai folder,
    zipped (`model.genai.zip`), and `llm` holds its facts.
    """

    class Format(models.TextChoices):
        ONNX = "onnx", "ONNX"

    class Status(models.TextChoices):
        CONVERTING = "converting", "Converting"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.ONNX)
    source_format = models.CharField(
        max_length=16,
        choices=[(f.value, f.label) for f in ModelFormat],
        default=ModelFormat.ONNX.value,
        help_text="The format that was uploaded; converted to ONNX at ingest.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    status_message = models.TextField(
        blank=True, help_text="Why the conversion failed, or what it did."
    )
    original_filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=_model_upload_to, max_length=300, blank=True)
    source_file = models.FileField(
        upload_to=_model_upload_to,
        max_length=300,
        blank=True,
        help_text="The uploaded file, for versions converted to ONNX at ingest.",
    )
    size_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="The ONNX model's size (with its external data)."
    )
    source_size_bytes = models.BigIntegerField(
        default=0, help_text="The kept upload's size, for converted versions (counts to quota)."
    )
    sha256 = models.CharField(max_length=64, help_text="Of the uploaded file.")
    opset = models.PositiveIntegerField(null=True, blank=True)
    ir_version = models.PositiveIntegerField(null=True, blank=True)
    producer = models.CharField(max_length=200, blank=True)
    parameters = models.BigIntegerField(null=True, blank=True)
    inputs = models.JSONField(default=list)
    outputs = models.JSONField(default=list)
    op_types = models.JSONField(default=dict)
    input_spec = models.JSONField(
        default=list,
        blank=True,
        help_text="Input shapes given at upload for the conversion (InputSpec list).",
    )
    input_shapes = models.JSONField(
        default=dict,
        blank=True,
        help_text="Concrete shape per input with dynamic dims, chosen once on the version page; "
        "null stands for the batch dim, which each job's evaluate.batch_size fills in.",
    )
    preprocessing = models.JSONField(
        default=dict,
        blank=True,
        help_text="How the model expects image pixels (registry.preprocessing): "
        "{mean, std, scale}, set once on the version page and the default of every job's "
        "evaluate.image_mean/image_std. Empty: no normalisation (pixels scaled to [0, 1]).",
    )
    llm = models.JSONField(
        null=True,
        blank=True,
        help_text="A language model's facts (compress_engine.LlmInfo), set by its conversion; "
        "null for other models.",
    )
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

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def is_converting(self) -> bool:
        return self.status == self.Status.CONVERTING

    @property
    def source_format_label(self) -> str:
        return ModelFormat(self.source_format).label

    @property
    def is_llm(self) -> bool:
        """A causal language model: uploaded as one (also while it converts), or with facts."""
        return self.llm is not None or ModelFormat(self.source_format).is_llm

    @property
    def llm_info(self) -> LlmInfo | None:
        """`llm` read back through the engine's type."""
        from compress_engine import LlmInfo

        return None if self.llm is None else LlmInfo.model_validate(self.llm)

    @property
    def stored_suffix(self) -> str:
        """`.genai.zip` for a language model's zipped genai folder, `.onnx.zip` when the stored
        model carries external data, else `.onnx`: workers fetch it to a scratch name with the
        same suffix."""
        for suffix in (".genai.zip", ".onnx.zip"):
            if self.file.name.endswith(suffix):
                return suffix
        return ".onnx"

    @property
    def conversion_started(self) -> bool:
        """A worker has taken the conversion (mark_conversion_started's message)."""
        return self.is_converting and self.status_message.startswith(_STARTED)

    def mark_conversion_started(self) -> bool:
        """Say on a converting version that a worker is converting it now (no longer waiting
        in the convert queue)."""
        fmt = ModelFormat(self.source_format)
        return bool(
            ModelVersion.objects.filter(pk=self.pk, status=self.Status.CONVERTING).update(
                status_message=f"{_STARTED} the {fmt.label} file to {conversion_target(fmt)}."
            )
        )

    def finish_conversion(self, *, file_name: str, fields: dict[str, object], message: str) -> bool:
        """converting -> ready with the converted model's facts. A conditional UPDATE: a
        duplicate delivery of the conversion task, or a version already failed, changes
        nothing and gets False (the caller then removes the file it stored)."""
        updated = ModelVersion.objects.filter(pk=self.pk, status=self.Status.CONVERTING).update(
            status=self.Status.READY, status_message=message, file=file_name, **fields
        )
        if updated:
            self.refresh_from_db()
        return bool(updated)

    def fail_conversion(self, message: str) -> bool:
        """converting -> failed, forgetting the source file (the caller deletes it)."""
        updated = ModelVersion.objects.filter(pk=self.pk, status=self.Status.CONVERTING).update(
            status=self.Status.FAILED,
            status_message=message,
            source_file="",
            file="",
            source_size_bytes=0,
        )
        if updated:
            self.refresh_from_db()
        return bool(updated)

    def evaluation_shapes(self, batch_size: int) -> dict[str, list[int]]:
        """`input_shapes` for a recipe's evaluate.input_shapes: the batch dim (null) set to
        the job's batch size."""
        return {
            name: [batch_size if d is None else int(d) for d in shape]
            for name, shape in (self.input_shapes or {}).items()
        }

    def takes_same_inputs(self, other: ModelVersion) -> bool:
        """Whether both models can be fed the same samples (e.g. a distillation teacher):
        the engine's rule (compress_engine.same_inputs) on the recorded inputs."""
        from compress_engine import TensorInfo, same_inputs

        def infos(version: ModelVersion) -> list[TensorInfo]:
            return [TensorInfo.model_validate(t) for t in version.inputs]

        return same_inputs(infos(self), infos(other))


# Our own fixed names only; the suffix tells workers how the engine reads the file.
DATASET_NAMES = ("data.npz", "data.zip", "data.txt", "data.jsonl")


def _dataset_upload_to(instance: Dataset, filename: str) -> str:
    name = filename.rsplit("/", 1)[-1]
    if name not in DATASET_NAMES:
        name = "data.npz"
    return f"datasets/{instance.project.team.uuid}/{instance.uuid}/{name}"


class Dataset(models.Model):
    """Samples for calibration, training and evaluation: an uploaded `.npz` (arrays named
    after model inputs, or `x`; optional integer labels `y` or `labels`), a `.zip` of
    image folders, one per class, or text for language models (`.txt`, passages split at
    blank lines, or `.jsonl` with a `text` field per line; `samples` counts the passages).
    registry.datasets records what the preview shows."""

    class Kind(models.TextChoices):
        NPZ = "npz", "NumPy arrays (.npz)"
        IMAGES = "images", "Image folders (.zip)"
        TEXT = "text", "Text (.txt, .jsonl)"

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
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.NPZ)
    classes = models.JSONField(
        default=list,
        blank=True,
        help_text="[{name, count}] by class id: image folders (sorted), or the label values.",
    )
    image_width = models.PositiveIntegerField(null=True, blank=True, help_text="Most common.")
    image_height = models.PositiveIntegerField(null=True, blank=True, help_text="Most common.")
    image_sizes_vary = models.BooleanField(default=False)
    image_channels = models.CharField(
        max_length=3, blank=True, help_text="L when every image is grayscale, else RGB."
    )
    image_stats = models.JSONField(
        default=dict,
        blank=True,
        help_text="{L|RGB: {mean: [...], std: [...]}} over all pixels, scaled to [0, 1].",
    )
    previews = models.JSONField(
        default=list,
        blank=True,
        help_text="Sample thumbnails: [{label, member}] (images) or [{label, array, index}]; "
        "for text, the opening passages: [{text}].",
    )
    characters = models.BigIntegerField(
        null=True, blank=True, help_text="Characters of a text dataset's passages."
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_image_folder(self) -> bool:
        return self.kind == self.Kind.IMAGES

    @property
    def is_text(self) -> bool:
        return self.kind == self.Kind.TEXT

    @property
    def has_labels(self) -> bool:
        # One class folder is accepted (calibration needs no labels) but labels nothing.
        if self.is_image_folder:
            return len(self.classes) >= 2
        return bool(self.label_array)

    @property
    def stored_suffix(self) -> str:
        """`.zip` (image folders), `.txt` or `.jsonl` (text), else `.npz`: workers fetch the
        file to a scratch name with this suffix, which is how the engine tells them apart."""
        suffix = "." + self.file.name.rsplit(".", 1)[-1] if "." in self.file.name else ""
        return suffix if suffix in (".zip", ".txt", ".jsonl") else ".npz"

    def image_normalisation(self, channels: int) -> tuple[list[float], list[float]] | None:
        """The recorded (mean, std) per channel for a model taking `channels` (1 or 3)."""
        stats = self.image_stats.get("L" if channels == 1 else "RGB")
        if not stats:
            return None
        return list(stats["mean"]), list(stats["std"])
