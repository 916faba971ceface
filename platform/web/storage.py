"""Stored files through the storage API: the web streams, signs and deletes them; workers
copy them to their scratch directory and store their results with the same helpers.

Everything here goes through the storage API, so web and workers need not share a disk: the
default storage is the local filesystem or an S3-compatible object store (settings.STORAGES).
Object stores get a few shortcuts of their own (direct downloads, streamed reads, presigned
URLs); django-storages is imported only when the storage is one of its.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage
from django.utils.http import content_disposition_header


def is_object_store(storage: Storage) -> bool:
    """True for django-storages' S3 backend (AWS S3, MinIO and other S3-compatible services)."""
    if isinstance(storage, FileSystemStorage):
        return False
    from storages.backends.s3 import S3Storage

    return isinstance(storage, S3Storage)  # default_storage, a LazyObject, passes too


def fetch_to_scratch(storage: Storage, name: str, destination: Path) -> Path:
    """Copy a stored file to local scratch in blocks (workers need not share the web's disk)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with storage.open(name, "rb") as source:
        if is_object_store(storage):
            # Straight to the destination in parallel ranged parts; reading the S3File would
            # first download the whole object into a temporary file of its own.
            source.obj.download_file(str(destination), Config=storage.transfer_config)
            return destination
        with destination.open("wb") as target:
            shutil.copyfileobj(source, target, length=1024 * 1024)
    return destination


def open_stream(storage: Storage, name: str) -> IO[bytes]:
    """A stored file opened for one sequential read, as a response body streams it: on an
    object store the GET response body itself (nothing buffered), elsewhere storage.open."""
    if is_object_store(storage):
        with storage.open(name, "rb") as stored:  # checks that the object exists (404 → raise)
            return stored.obj.get()["Body"]
    return storage.open(name, "rb")


def presigned_url(storage: Storage, name: str, *, filename: str, seconds: int) -> str | None:
    """A URL that downloads the stored file as `filename` without credentials for `seconds`
    (S3 presigned GET, signature v4); None where the storage cannot sign URLs (filesystem)."""
    if not is_object_store(storage):
        return None
    parameters: dict[str, Any] = {
        "ResponseContentDisposition": content_disposition_header(True, filename),
        "ResponseContentType": "application/octet-stream",
    }
    return storage.url(name, parameters=parameters, expire=seconds)


def save_atomically(storage: Storage, name: str, source: Path) -> str:
    """Store `source` under `name` (or a free variant of it) so readers never see a
    half-written file; returns the name it was stored under.

    On a local filesystem the bytes go to a hidden temporary name first and are renamed into
    place. Object stores publish an object only once its upload completes (large files go up
    in multipart chunks, streamed from disk), so the storage's own save is already atomic
    there; the S3 settings turn overwriting off, so a name in use gets a suffix there too.
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
    """Delete every file under a folder of one object (hidden leftovers and sub-folders
    included), and the folder. On an object store that is every key under the prefix."""
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:  # a local folder never made; object stores list nothing instead
        return
    for sub in folders:
        delete_folder(storage, f"{folder}/{sub}")
    for name in files:
        delete_stored(storage, f"{folder}/{name}")
    if isinstance(storage, FileSystemStorage):
        _remove_if_empty(Path(storage.path(folder)))


def _remove_if_empty(folder: Path) -> None:
    # OSError: not empty (another file of the object), or already gone.
    with contextlib.suppress(OSError):
        folder.rmdir()
