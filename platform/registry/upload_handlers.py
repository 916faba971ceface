"""Streams uploads to a temporary file and stops counting bytes past the configured limit."""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import SkipFile, TemporaryFileUploadHandler


class BoundedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Chunks go straight to disk; a file over MODELPRESS_MAX_UPLOAD_BYTES is dropped.

    The request is marked with `upload_too_large` so the form can say why the file is missing
    instead of a generic "this field is required".
    """

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self._received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self._received += len(raw_data)
        if self._received > settings.MODELPRESS_MAX_UPLOAD_BYTES:
            self.request.upload_too_large = True
            self.file.close()  # deletes the partial temporary file
            raise SkipFile()
        return super().receive_data_chunk(raw_data, start)
