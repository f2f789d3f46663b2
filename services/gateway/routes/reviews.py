"""/v1/jobs/{job_id}/review: a moderator confirms or overturns a verdict."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from common.db.models import Job, Review
from common.detector.config import LABELS
from common.reviews import ReviewError, record_review, true_label
from common.vocabulary import Decision, LabelName
from services.gateway.dashboard.auth import reviewer_name
from services.gateway.deps import PrincipalDep, SessionDep
from services.gateway.edge import NoNul
from services.gateway.routes.jobs import ERROR_RESPONSES, ErrorOut, job_or_404

router = APIRouter(prefix="/v1/jobs", tags=["reviews"])


class ReviewIn(BaseModel):
    decision: Decision = Field(
        description="confirmed: the verdict is right; overturned: it is wrong"
    )
    note: Annotated[str, NoNul] | None = Field(default=None, max_length=2000)


class ReviewOut(BaseModel):
    job_id: uuid.UUID
    decision: Decision
    note: str | None
    reviewer: str = Field(description="the API key's name and its tenant")
    true_label: LabelName | None = Field(
        description="the label the review establishes (the verdict, or its opposite)"
    )
    created_at: datetime
    updated_at: datetime


def _out(review: Review, job: Job) -> ReviewOut:
    try:
        label: str | None = LABELS[true_label(job, review.decision)]
    except ReviewError:  # the verdict was cleared after the review
        label = None
    return ReviewOut(
        job_id=review.job_id,
        decision=review.decision,
        note=review.note,
        reviewer=review.reviewer,
        true_label=label,
        created_at=review.created_at,
        updated_at=review.updated_at,
    )


@router.put(
    "/{job_id}/review",
    response_model=ReviewOut,
    responses={
        409: {"model": ErrorOut, "description": "the job has no verdict yet"},
        **ERROR_RESPONSES,
    },
    summary="Confirm or overturn the verdict of a job",
)
def put_review(
    job_id: uuid.UUID, body: ReviewIn, session: SessionDep, principal: PrincipalDep
) -> ReviewOut:
    """Creates the job's review or replaces it (one review per job; the latest wins)."""
    job = job_or_404(session, principal, job_id)
    note = body.note.strip() if body.note else None
    try:
        review = record_review(session, job, body.decision, reviewer_name(principal), note or None)
    except ReviewError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    session.refresh(review)
    return _out(review, job)


@router.get(
    "/{job_id}/review",
    response_model=ReviewOut,
    responses=ERROR_RESPONSES,
    summary="The review of a job (404 when it has none)",
)
def get_review(job_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> ReviewOut:
    job = job_or_404(session, principal, job_id)
    review = session.scalar(select(Review).where(Review.job_id == job.id))
    if review is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no review")
    return _out(review, job)
