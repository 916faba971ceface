from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0006_job_progress_help_text"),
    ]

    operations = [
        migrations.AddField(
            model_name="workerheartbeat",
            name="cannot_convert",
            field=models.CharField(
                blank=True,
                help_text="What this worker cannot convert or run for want of a package, checked "
                "at start: 'torch-export (onnxscript missing); ...'.",
                max_length=500,
            ),
        ),
    ]
