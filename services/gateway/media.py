"""Responses carrying stored bytes: the submitted image, the heatmap, the overlay.

Shared by the API (``/v1/jobs/{id}/...``) and the dashboard, so both answer the same
way: the bytes with their media type, cacheable by the caller only, never sniffed
(the image is the client's upload), and 404 with the reason when they are gone.
"""

from __future__ import annotations

from fastapi import HTTPException, status
from fastapi.responses import Response
from sqlalchemy.orm import Session

from common.blobstore import BlobNotFoundError
from common.db.models import Job
from common.originals import ImageMissingError, read_original
from services.gateway.state import GatewayState

_HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}


def stored_response(data: bytes, media_type: str) -> Response:
    return Response(data, media_type=media_type, headers=_HEADERS)


def blob_response(state: GatewayState, key: str | None, what: str) -> Response:
    """A PNG the gradcam stage wrote to the blob store under ``key`` (None: not yet)."""
    if not key:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"this job has no {what} (yet)")
    try:
        data = state.blobs.get(key)
    except BlobNotFoundError as exc:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"the {what} is missing from the blob store"
        ) from exc
    return stored_response(data, "image/png")


def original_response(session: Session, state: GatewayState, job: Job) -> Response:
    """The image as the client sent it, from wherever it is kept."""
    try:
        data = read_original(session, state.blobs, job.image_sha256)
    except ImageMissingError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the image is missing from storage") from exc
    return stored_response(data, job.image.content_type)
