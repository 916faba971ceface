from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import pre_delete

        from jobs.models import Artifact, Job
        from registry import stored_files

        stored_files.connect(Artifact)
        pre_delete.connect(
            stored_files.remove_folder_of_deleted_job, sender=Job, dispatch_uid="remove-job-folder"
        )
