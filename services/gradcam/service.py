"""The gradcam stage as a plain function: heatmap, encoded ROIs, PNGs in the blob store.

A failure of Grad-CAM itself (an image it cannot handle) is recorded as a failed
stage with its error; the verdict is kept and the chain goes on to the explanation.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import update

from common.db.models import Job, StageStatus
from common.images import ImageDecodeError, decode_rgb
from common.originals import ImageMissingError
from services.runtime import PermanentStageError, StageRun, WorkerContext, read_job_image

log = logging.getLogger("aigi.gradcam")


def heatmap_key(job_id: uuid.UUID) -> str:
    return f"heatmaps/{job_id}.png"


def overlay_key(job_id: uuid.UUID) -> str:
    return f"overlays/{job_id}.png"


def _record_failure(ctx: WorkerContext, job_id: uuid.UUID, run: StageRun, error: str) -> None:
    with ctx.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(gradcam_status=StageStatus.FAILED, rois={"rois": [], "error": error})
        )
        run.finish(session, StageStatus.FAILED, error)


def gradcam_job(ctx: WorkerContext, job_id: uuid.UUID, run: StageRun) -> None:
    from services.gradcam.analysis import analyze_image

    try:
        data = read_job_image(ctx, job_id)
        image = decode_rgb(data, ctx.settings.max_image_pixels)
        analysis = analyze_image(
            ctx.detector, image, data, ctx.cam, ctx.settings.roi_threshold, ctx.settings.roi_top_k
        )
    except (ImageMissingError, ImageDecodeError, ValueError, RuntimeError) as exc:
        error = f"Grad-CAM failed: {type(exc).__name__}: {exc}"[:500]
        log.warning("gradcam failed", extra={"job_id": str(job_id), "error": error})
        _record_failure(ctx, job_id, run, error)
        raise PermanentStageError(error) from exc
    ctx.blobs.put(heatmap_key(job_id), analysis.heatmap_png)
    ctx.blobs.put(overlay_key(job_id), analysis.overlay_png)
    with ctx.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                gradcam_status=StageStatus.DONE,
                rois=analysis.document,
                heatmap_key=heatmap_key(job_id),
                overlay_key=overlay_key(job_id),
            )
        )
        run.finish(session)
