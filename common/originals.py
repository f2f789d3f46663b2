"""A submitted image's bytes, wherever the gateway kept them.

The gateway writes an upload into Postgres (``image_data``) with its job, unless
``AIGI_IMAGE_STORE=blob_store``; images from before migration 0003 are in the blob
store only. Readers look in Postgres first, then in the blob store, so a deployment can
switch between the two without moving anything.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.blobstore import BlobNotFoundError, BlobStore, image_key
from common.db.models import ImageData


class ImageMissingError(LookupError):
    """The image's bytes are in neither Postgres nor the blob store."""


def read_original(session: Session, blobs: BlobStore, sha256: str) -> bytes:
    # A column select, not ``session.get``: the bytes stay out of the identity map.
    data = session.scalar(select(ImageData.data).where(ImageData.sha256 == sha256))
    if data is not None:
        return data
    try:
        return blobs.get(image_key(sha256))
    except BlobNotFoundError as exc:
        raise ImageMissingError(
            f"image {sha256} is in neither Postgres (image_data) nor the blob store"
        ) from exc
