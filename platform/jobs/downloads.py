"""How an artifact's bytes reach the client, once the caller has checked access and recorded
the download: a redirect to a short-lived presigned URL on S3 storage (the web app carries
none of the bytes), or the file streamed in blocks by the web app (filesystem storage, or S3
with MODELPRESS_S3_REDIRECT_DOWNLOADS=false)."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect

from jobs.models import Artifact
from web.storage import open_stream, presigned_url


def artifact_response(artifact: Artifact, *, redirect: bool = True) -> HttpResponse:
    """`redirect=False` always streams (API clients that hold a token, jobs.api)."""
    storage, name = artifact.file.storage, artifact.file.name
    if redirect and settings.MODELPRESS_S3_REDIRECT_DOWNLOADS:
        url = presigned_url(
            storage, name, filename=artifact.name, seconds=settings.MODELPRESS_S3_PRESIGNED_SECONDS
        )
        if url is not None:
            response = HttpResponseRedirect(url)
            # The target expires within seconds: never reuse this answer.
            response["Cache-Control"] = "private, no-store"
            return response
    # Streamed in blocks; never read whole into memory (on S3: the GET response's body).
    response = FileResponse(open_stream(storage, name), as_attachment=True, filename=artifact.name)
    if not response.has_header("Content-Length"):  # a stream that cannot tell its size
        response["Content-Length"] = str(storage.size(name))
    return response
