"""Stored files go with their rows.

Deleting a model version (its canonical model and any uploaded source), a dataset or a job's
artifact removes the files from storage once the deletion commits, however the row goes:
alone, in the cascade of a project, a model version or a team, or from Django admin; a deleted
job takes its whole artifact folder with it. Bundles are streamed from the artifacts and never
stored. Receivers are connected per model (in the
apps' ready()), so models without files keep Django's fast bulk deletes.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import models, transaction

from web.storage import delete_folder, delete_stored

log = logging.getLogger(__name__)


def remove_files_of_deleted_row(sender: type[models.Model], instance: Any, **kwargs: Any) -> None:
    """post_delete receiver: delete the row's stored files after the transaction commits (a
    rollback must not leave rows pointing at missing files)."""
    stored = [
        getattr(instance, f.name) for f in sender._meta.fields if isinstance(f, models.FileField)
    ]
    files = [(file.storage, file.name) for file in stored if file.name]
    if not files:
        return

    def remove() -> None:
        for storage, name in files:
            try:
                delete_stored(storage, name)
            except Exception:  # the rows are gone either way; an operator can sweep the rest
                log.exception("could not remove %s of a deleted %s", name, sender.__name__)

    transaction.on_commit(remove)


def remove_folder_of_deleted_job(sender: type[models.Model], instance: Any, **kwargs: Any) -> None:
    """pre_delete receiver for jobs: once the deletion commits, everything in the job's
    artifact folder goes, recorded artifacts and files no row knows of alike (a worker killed
    between storing an artifact and recording it leaves one). Read before the delete, while
    the job's team can still be looked up."""
    from jobs.models import Artifact, artifact_folder

    storage = Artifact._meta.get_field("file").storage
    folder = artifact_folder(instance)

    def remove() -> None:
        try:
            delete_folder(storage, folder)
        except Exception:
            log.exception("could not remove %s of a deleted job", folder)

    transaction.on_commit(remove)


def connect(*senders: type[models.Model]) -> None:
    for sender in senders:
        models.signals.post_delete.connect(
            remove_files_of_deleted_row,
            sender=sender,
            dispatch_uid=f"remove-files-{sender._meta.label}",
        )
