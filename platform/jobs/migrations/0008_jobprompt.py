import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0007_workerheartbeat_cannot_convert"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="JobPrompt",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("uuid", models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                (
                    "prompt",
                    models.TextField(
                        help_text="As typed (stripped); the chat template is applied."
                    ),
                ),
                ("max_new_tokens", models.PositiveSmallIntegerField(default=96)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Waiting for a worker"),
                            ("running", "Answering"),
                            ("done", "Answered"),
                            ("failed", "Failed"),
                        ],
                        default="queued",
                        max_length=16,
                    ),
                ),
                ("original_answer", models.TextField(blank=True)),
                ("compressed_answer", models.TextField(blank=True)),
                ("original_tokens", models.PositiveIntegerField(blank=True, null=True)),
                ("compressed_tokens", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "original_tok_s",
                    models.FloatField(blank=True, help_text="Decode tokens/s.", null=True),
                ),
                (
                    "compressed_tok_s",
                    models.FloatField(blank=True, help_text="Decode tokens/s.", null=True),
                ),
                ("error", models.TextField(blank=True)),
                ("worker", models.CharField(blank=True, max_length=200)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="prompts",
                        to="jobs.job",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "indexes": [
                    models.Index(fields=["job", "-created_at"], name="jobs_prompt_job_created")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("status__in", ["queued", "running"])),
                        fields=("job", "user"),
                        name="jobs_one_pending_prompt_per_user",
                    )
                ],
            },
        ),
    ]
