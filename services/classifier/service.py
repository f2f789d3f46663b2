"""The classify stage as a plain function (testable without Celery)."""

from __future__ import annotations

import uuid

from common.blobstore import BlobNotFoundError, image_key
from common.db.models import JobStatus
from common.images import ImageDecodeError, decode_rgb
from services.runtime import (
    PermanentStageError,
    StageRun,
    WorkerContext,
    advance_status,
    load_job,
    now,
)


def classify_job(ctx: WorkerContext, job_id: uuid.UUID, run: StageRun) -> None:
    with ctx.session() as session:
        sha = load_job(session, job_id).image_sha256
    try:
        data = ctx.blobs.get(image_key(sha))
    except BlobNotFoundError as exc:
        raise PermanentStageError(f"image {sha} is missing from the blob store") from exc
    try:
        image = decode_rgb(data, ctx.settings.max_image_pixels)
    except ImageDecodeError as exc:
        raise PermanentStageError(f"image cannot be decoded: {exc}") from exc
    engine = ctx.detector
    prediction = engine.predict([image])[0]
    with ctx.session() as session:
        advance_status(
            session,
            job_id,
            JobStatus.CLASSIFIED,
            model_id=engine.model_id,
            label=prediction.label,
            probability=prediction.probability,
            tier=prediction.tier,
            classified_at=now(),
        )
        run.finish(session)
