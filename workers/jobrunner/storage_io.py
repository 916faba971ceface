"""Moving files between Django storage and a worker's scratch directory."""

from __future__ import annotations

import contextlib
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
        except BaseException:
            partial.unlink(missing_ok=True)
            _remove_if_empty(final.parent)  # made above for this file (disk full, say)
            raise
        return name
    with source.open("rb") as handle:
        return storage.save(name, File(handle))


def delete_stored(storage: Storage, name: str) -> None:
    """Delete a stored file; on a local filesystem also its folder once empty.

    Every stored file lives in a folder of its own object (models/<team>/<version>/,
    datasets/<team>/<dataset>/, artifacts/<team>/<job>/), which nothing else writes to once the
    object is gone, so removing it cannot race another upload. Object stores have no folders.
    """
    storage.delete(name)
    if isinstance(storage, FileSystemStorage):
        _remove_if_empty(Path(storage.path(name)).parent)


def delete_folder(storage: Storage, folder: str) -> None:
    """Delete every file in a folder of one object (hidden leftovers included), and the folder."""
    try:
        _, files = storage.listdir(folder)
    except FileNotFoundError:  # a local folder never made; object stores list nothing instead
        return
    for name in files:
        delete_stored(storage, f"{folder}/{name}")


def _remove_if_empty(folder: Path) -> None:
    # OSError: not empty (another file of the object), or already gone.
    with contextlib.suppress(OSError):
        folder.rmdir()
