"""The classify stage as a plain function (testable without Celery)."""

from __future__ import annotations

import uuid

from common.db.models import JobStatus
from common.images import ImageDecodeError, decode_rgb
from common.originals import ImageMissingError
from services.runtime import (
    PermanentStageError,
    StageRun,
    WorkerContext,
    advance_status,
    now,
    read_job_image,
)


def classify_job(ctx: WorkerContext, job_id: uuid.UUID, run: StageRun) -> None:
    try:
        data = read_job_image(ctx, job_id)
    except ImageMissingError as exc:
        raise PermanentStageError(str(exc)) from exc
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
            ood_score=prediction.ood_score,
            verdict_reason=prediction.reason,
            classified_at=now(),
        )
        run.finish(session)
