from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("registry", "0004_dataset_image_folders")]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="preprocessing",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="How the model expects image pixels (registry.preprocessing): "
                "{mean, std, scale}, set once on the version page and the default of every "
                "job's evaluate.image_mean/image_std. Empty: no normalisation (pixels scaled "
                "to [0, 1]).",
            ),
        ),
    ]
