"""Language models (ModelVersion.llm, the HF-zip and GGUF source formats) and text datasets."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0005_model_version_preprocessing"),
    ]

    operations = [
        migrations.AddField(
            model_name="dataset",
            name="characters",
            field=models.BigIntegerField(
                blank=True, help_text="Characters of a text dataset's passages.", null=True
            ),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="llm",
            field=models.JSONField(
                blank=True,
                help_text="A language model's facts (compress_engine.LlmInfo), set by its conversion; null for other models.",
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="dataset",
            name="kind",
            field=models.CharField(
                choices=[
                    ("npz", "NumPy arrays (.npz)"),
                    ("images", "Image folders (.zip)"),
                    ("text", "Text (.txt, .jsonl)"),
                ],
                default="npz",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="dataset",
            name="previews",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Sample thumbnails: [{label, member}] (images) or [{label, array, index}]; for text, the opening passages: [{text}].",
            ),
        ),
        migrations.AlterField(
            model_name="modelversion",
            name="source_format",
            field=models.CharField(
                choices=[
                    ("onnx", "ONNX"),
                    ("onnx-zip", "ONNX with external data (.zip)"),
                    ("torchscript", "TorchScript (torch.jit.save)"),
                    ("torch-export", "torch.export program (.pt2)"),
                    ("savedmodel", "TensorFlow SavedModel (.zip)"),
                    ("keras", "Keras (.keras)"),
                    ("hf-llm-zip", "Hugging Face causal LM (.zip)"),
                    ("gguf", "GGUF language model (.gguf)"),
                ],
                default="onnx",
                help_text="The format that was uploaded; converted to ONNX at ingest.",
                max_length=16,
            ),
        ),
    ]
