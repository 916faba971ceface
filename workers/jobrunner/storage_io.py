"""Moving files between Django storage and a worker's scratch directory."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage


def fetch_to_scratch(storage: Storage, name: str, destination: Path) -> Path:
    """Copy a stored file to local scratch in blocks (workers need not share the web's disk)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with storage.open(name, "rb") as source, destination.open("wb") as target:
        shutil.copyfileobj(source, target, length=1024 * 1024)
    return destination


def save_atomically(storage: Storage, name: str, source: Path) -> str:
    """Store `source` under `name` so readers never see a half-written file.

    On a local filesystem the bytes go to a hidden temporary name first and are renamed into
    place. Object stores (S3) publish an object only once its upload completes, so the
    storage's own save is already atomic there.
    """
    if isinstance(storage, FileSystemStorage):
        name = storage.get_available_name(name)
        final = Path(storage.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        return name
    with source.open("rb") as handle:
        return storage.save(name, File(handle))
