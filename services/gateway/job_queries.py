"""Tenant-scoped job reads for the gateway: the one place that builds them.

The API's job list (cursor pages), the dashboard's job list (numbered pages, free-text
search) and every by-id lookup of both go through ``select_jobs`` and ``get_job``, so a
filter or the tenant check is written once.

The filter values' types are :mod:`common.vocabulary`'s ``Literal`` aliases, built from
their single sources, so the API's validation and its OpenAPI enums follow those tuples.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from common.db.models import Job, Review
from common.detector.config import LABELS
from common.vocabulary import (
    UNREVIEWED,
    LabelName,
    ReviewState,
    StatusName,
    TierName,
)


@dataclass(frozen=True)
class JobFilter:
    """Which of a tenant's jobs to list; None means "any"."""

    status: StatusName | None = None
    label: LabelName | None = None
    tier: TierName | None = None
    review: ReviewState | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive


def select_jobs(tenant_id: uuid.UUID, job_filter: JobFilter) -> Select[Job]:
    """The tenant's jobs matching ``job_filter``, unordered and unpaged (the caller pages)."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if job_filter.status:
        query = query.where(Job.status == job_filter.status)
    if job_filter.label:
        query = query.where(Job.label == LABELS.index(job_filter.label))
    if job_filter.tier:
        query = query.where(Job.tier == job_filter.tier)
    if job_filter.created_after:
        query = query.where(Job.created_at >= job_filter.created_after)
    if job_filter.created_before:
        query = query.where(Job.created_at < job_filter.created_before)
    reviewed = select(Review.id).where(Review.job_id == Job.id)
    if job_filter.review == UNREVIEWED:
        query = query.where(~reviewed.exists())
    elif job_filter.review:
        query = query.where(reviewed.where(Review.decision == job_filter.review).exists())
    return query


def get_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """The tenant's job, or None: another tenant's job is indistinguishable from none."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        return None
    return job
