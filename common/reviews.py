"""Moderator reviews and their export as training data."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.blobstore import BlobStore
from common.db.models import Job, Review
from common.detector.config import LABELS
from common.originals import ImageMissingError, read_original
from common.tenants import get_tenant
from common.vocabulary import DECISIONS

EXTENSIONS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "MPO": ".jpg",
}


class ReviewError(ValueError):
    pass


def true_label(job: Job, decision: str) -> int:
    """The label a review establishes: the verdict if confirmed, its opposite if overturned."""
    if job.label is None:
        raise ReviewError("this job has no verdict yet; review it once it is classified")
    return job.label if decision == "confirmed" else 1 - job.label


def record_review(
    session: Session, job: Job, decision: str, reviewer: str, note: str | None = None
) -> Review:
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {DECISIONS}")
    true_label(job, decision)
    review = session.scalar(select(Review).where(Review.job_id == job.id))
    if review is None:
        review = Review(
            id=uuid.uuid4(),
            job_id=job.id,
            tenant_id=job.tenant_id,
            decision=decision,
            reviewer=reviewer,
            note=note,
        )
        session.add(review)
    else:
        review.decision, review.reviewer, review.note = decision, reviewer, note
    session.flush()
    return review


def export_reviewed(
    session: Session, blobs: BlobStore, since: datetime, out: Path, tenant: str | None = None
) -> dict[str, int]:
    query = select(Review, Job).join(Job, Job.id == Review.job_id).where(Review.updated_at >= since)
    if tenant:
        query = query.where(Review.tenant_id == get_tenant(session, tenant).id)
    counts = {"REAL": 0, "FAKE": 0, "missing": 0}
    for review, job in session.execute(query).all():
        label = LABELS[true_label(job, review.decision)]
        try:
            data = read_original(session, blobs, job.image_sha256)
        except ImageMissingError:
            counts["missing"] += 1
            continue
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        ext = EXTENSIONS.get(job.image.format, ".img")
        (folder / f"{job.image_sha256[:32]}{ext}").write_bytes(data)
        counts[label] += 1
    return counts
