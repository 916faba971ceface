from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from registry import stored_files
        from registry.models import Dataset, ModelVersion

        stored_files.connect(ModelVersion, Dataset)
