"""What the dashboard reads from Postgres (and Redis), always scoped to one tenant.

The job filters and the by-id lookup are the API's (``services.gateway.job_queries``);
this module adds the dashboard's lenient parsing, its free-text search and numbered pages.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import Select, String, cast, func, literal_column, or_, select
from sqlalchemy.orm import Session

from common.db.models import (
    DeliveryStatus,
    Job,
    JobStage,
    JobStatus,
    Review,
    StageStatus,
    WebhookDelivery,
)
from common.detector.config import ALL_TIERS, LABELS
from common.queues import QUEUES, STAGES
from common.vocabulary import REVIEW_STATES
from services.gateway.job_queries import JobFilter, select_jobs

LABEL_NAMES = LABELS
TIERS = ALL_TIERS
PAGE_SIZE = 25
_HEX = re.compile(r"^[0-9a-f-]{4,64}$")


# ---------------------------------------------------------------------------- job list
@dataclass
class JobFilters:
    """The job list's filters, parsed leniently from query parameters.

    Empty or unknown values mean "any" (a GET form sends ``status=`` for "any");
    problems are collected in ``errors`` and shown above the list.
    """

    status: str | None = None
    label: str | None = None
    tier: str | None = None
    review: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    q: str | None = None
    page: int = 1
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, params: dict[str, str]) -> JobFilters:
        out = cls()

        def choice(name: str, allowed: tuple[str, ...]) -> str | None:
            value = (params.get(name) or "").strip()
            if not value:
                return None
            if value not in allowed:
                out.errors.append(f"unknown {name} {value!r}; showing all")
                return None
            return value

        def day(name: str) -> date | None:
            value = (params.get(name) or "").strip()
            if not value:
                return None
            try:
                return date.fromisoformat(value)
            except ValueError:
                out.errors.append(f"{name} must be a date (YYYY-MM-DD); ignored")
                return None

        out.status = choice("status", JobStatus.ALL)
        out.label = choice("label", LABEL_NAMES)
        out.tier = choice("tier", TIERS)
        out.review = choice("review", REVIEW_STATES)
        out.date_from = day("from")
        out.date_to = day("to")
        q = (params.get("q") or "").strip().lower()
        out.q = q[:100] or None
        try:
            out.page = max(1, min(int(params.get("page") or 1), 100_000))
        except ValueError:
            out.page = 1
        return out

    def query_params(self, page: int | None = None) -> dict[str, str]:
        params = {
            "status": self.status or "",
            "label": self.label or "",
            "tier": self.tier or "",
            "review": self.review or "",
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "q": self.q or "",
        }
        chosen = page if page is not None else self.page
        if chosen > 1:
            params["page"] = str(chosen)
        return {k: v for k, v in params.items() if v}

    def query_string(self, page: int | None = None) -> str:
        return urlencode(self.query_params(page))

    @property
    def active(self) -> bool:
        return any(self.query_params(page=1).values())

    def job_filter(self) -> JobFilter:
        """The shared filter: a day range becomes [first day 00:00 UTC, day after last)."""
        return JobFilter(
            status=self.status,
            label=self.label,
            tier=self.tier,
            review=self.review,
            created_after=(
                datetime.combine(self.date_from, time(), UTC) if self.date_from else None
            ),
            created_before=(
                datetime.combine(self.date_to + timedelta(days=1), time(), UTC)
                if self.date_to
                else None
            ),
        )


def _search(q: str) -> Any:
    """Job id (full or leading part) or image sha256 (full or leading part)."""
    try:
        job_id = uuid.UUID(q)
    except ValueError:
        job_id = None
    if job_id is not None:
        return Job.id == job_id
    if not _HEX.match(q):
        return None
    # hex digits and dashes only: no LIKE wildcards can come from the user
    return or_(Job.image_sha256.startswith(q), cast(Job.id, String).startswith(q))


def filtered_jobs(tenant_id: uuid.UUID, filters: JobFilters) -> Select[Job]:
    query = select_jobs(tenant_id, filters.job_filter())
    if filters.q:
        condition = _search(filters.q)
        if condition is None:
            filters.errors.append("search takes a job id or an image sha256 (hex)")
            query = query.where(Job.id.is_(None))
        else:
            query = query.where(condition)
    return query


@dataclass
class JobRow:
    job: Job
    review: Review | None

    @property
    def finished(self) -> bool:
        return self.job.status in JobStatus.FINAL

    @property
    def label_name(self) -> str | None:
        return None if self.job.label is None else LABEL_NAMES[self.job.label]


@dataclass
class JobListPage:
    rows: list[JobRow]
    total: int
    page: int
    pages: int

    @property
    def pending(self) -> bool:
        return any(not row.finished for row in self.rows)


def list_jobs(session: Session, tenant_id: uuid.UUID, filters: JobFilters) -> JobListPage:
    query = filtered_jobs(tenant_id, filters)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(filters.page, pages)
    jobs = session.scalars(
        query.order_by(Job.created_at.desc(), Job.id.desc())
        .offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    ).all()
    reviews: dict[uuid.UUID, Review] = {}
    if jobs:
        for review in session.scalars(
            select(Review).where(Review.job_id.in_([job.id for job in jobs]))
        ):
            reviews[review.job_id] = review
    return JobListPage(
        rows=[JobRow(job, reviews.get(job.id)) for job in jobs],
        total=total,
        page=page,
        pages=pages,
    )


def review_of(session: Session, job_id: uuid.UUID) -> Review | None:
    return session.scalar(select(Review).where(Review.job_id == job_id))


def deliveries_of(session: Session, job_id: uuid.UUID) -> list[WebhookDelivery]:
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.created_at)
        ).all()
    )


# ---------------------------------------------------------------------------- overview
@dataclass(frozen=True)
class Window:
    key: str
    title: str
    unit: str  # date_trunc unit
    buckets: int

    def bounds(self, now: datetime) -> list[datetime]:
        """Bucket starts (naive UTC, oldest first), the last one holding ``now``."""
        now = now.astimezone(UTC).replace(tzinfo=None)
        if self.unit == "hour":
            last = now.replace(minute=0, second=0, microsecond=0)
            step = timedelta(hours=1)
        else:
            last = now.replace(hour=0, minute=0, second=0, microsecond=0)
            step = timedelta(days=1)
        return [last - step * (self.buckets - 1 - i) for i in range(self.buckets)]


WINDOWS = {
    "24h": Window("24h", "last 24 hours", "hour", 24),
    "7d": Window("7d", "last 7 days", "day", 7),
    "30d": Window("30d", "last 30 days", "day", 30),
}


@dataclass
class StageLatency:
    stage: str
    runs: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    failures: int


@dataclass
class Overview:
    window: Window
    buckets: list[datetime]
    by_verdict: dict[str, list[int]]
    by_tier: dict[str, list[int]]
    total: int
    status_counts: dict[str, int]
    latency: list[StageLatency]
    failed_jobs: int
    failed_deliveries: int
    explanation_sources: dict[str, int]
    queue_depths: dict[str, int | None]

    @property
    def explanation_total(self) -> int:
        return sum(self.explanation_sources.values())


def queue_depths(redis: Redis) -> dict[str, int | None]:
    """Messages waiting per queue (all tenants share the queues); None when Redis is down."""
    depths: dict[str, int | None] = {}
    for queue in QUEUES:
        try:
            depths[queue] = int(redis.llen(queue))
        except RedisError:
            depths[queue] = None
    return depths


def overview(
    session: Session, redis: Redis, tenant_id: uuid.UUID, window: Window, now: datetime
) -> Overview:
    buckets = window.bounds(now)
    since = buckets[0].replace(tzinfo=UTC)
    index = {b: i for i, b in enumerate(buckets)}
    in_window = (Job.tenant_id == tenant_id, Job.created_at >= since)

    # literal arguments (from a fixed set), so SELECT and GROUP BY hold the same expression
    unit = literal_column(f"'{window.unit}'", String)
    utc = literal_column("'UTC'", String)
    bucket = func.date_trunc(unit, func.timezone(utc, Job.created_at))
    by_verdict = {name: [0] * len(buckets) for name in (*LABEL_NAMES, "no verdict")}
    by_tier = {name: [0] * len(buckets) for name in (*TIERS, "no verdict")}
    total = 0
    for start, label, tier, count in session.execute(
        select(bucket, Job.label, Job.tier, func.count())
        .where(*in_window)
        .group_by(bucket, Job.label, Job.tier)
    ):
        i = index.get(start)
        if i is None:
            continue
        total += count
        by_verdict["no verdict" if label is None else LABEL_NAMES[label]][i] += count
        by_tier[tier if tier in by_tier else "no verdict"][i] += count

    status_counts = dict.fromkeys(JobStatus.ALL, 0)
    for status, count in session.execute(
        select(Job.status, func.count()).where(*in_window).group_by(Job.status)
    ):
        status_counts[status] = count

    finished = (JobStage.status != StageStatus.RUNNING, JobStage.duration_ms.is_not(None))
    latency_rows = session.execute(
        select(
            JobStage.stage,
            func.count().filter(*finished),
            func.percentile_cont(0.5).within_group(JobStage.duration_ms).filter(*finished),
            func.percentile_cont(0.9).within_group(JobStage.duration_ms).filter(*finished),
            func.percentile_cont(0.99).within_group(JobStage.duration_ms).filter(*finished),
            func.max(JobStage.duration_ms).filter(*finished),
            func.count().filter(JobStage.status == StageStatus.FAILED),
        )
        .join(Job, Job.id == JobStage.job_id)
        .where(Job.tenant_id == tenant_id, JobStage.started_at >= since)
        .group_by(JobStage.stage)
    ).all()
    found = {row[0]: row for row in latency_rows}
    latency = []
    for stage in (*STAGES, *sorted(set(found) - set(STAGES))):
        row = found.get(stage)
        if row is None:
            latency.append(StageLatency(stage, 0, None, None, None, None, 0))
        else:
            latency.append(StageLatency(stage, row[1], row[2], row[3], row[4], row[5], row[6]))

    failed_deliveries = (
        session.scalar(
            select(func.count()).where(
                WebhookDelivery.tenant_id == tenant_id,
                WebhookDelivery.created_at >= since,
                WebhookDelivery.status == DeliveryStatus.FAILED,
            )
        )
        or 0
    )

    sources = {"llm": 0, "evidence": 0, "none": 0}
    for source, count in session.execute(
        select(Job.explanation_source, func.count())
        .where(*in_window, Job.explain_status.is_not(None))
        .group_by(Job.explanation_source)
    ):
        key = source if source in sources else "none"
        sources[key] += count

    return Overview(
        window=window,
        buckets=buckets,
        by_verdict=by_verdict,
        by_tier=by_tier,
        total=total,
        status_counts=status_counts,
        latency=latency,
        failed_jobs=status_counts.get(JobStatus.FAILED, 0),
        failed_deliveries=failed_deliveries,
        explanation_sources=sources,
        queue_depths=queue_depths(redis),
    )
