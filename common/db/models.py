"""SQLAlchemy 2 models. Postgres is the source of truth for every job."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        uuid.UUID: UUID(as_uuid=True),
    }


def _now() -> Any:
    return func.now()


class JobStatus:
    QUEUED = "queued"
    CLASSIFYING = "classifying"
    CLASSIFIED = "classified"
    EXPLAINING = "explaining"
    DONE = "done"
    FAILED = "failed"
    ALL = (QUEUED, CLASSIFYING, CLASSIFIED, EXPLAINING, DONE, FAILED)
    FINAL = (DONE, FAILED)


class StageStatus:
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_COMPUTED = "not_computed"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    webhook_secret: Mapped[str] = mapped_column(String(200))
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(200))
    default_callback_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tenant: Mapped[Tenant] = relationship(lazy="joined")


class Image(Base):
    """An uploaded image's description, keyed by its sha256; the bytes are in
    ``ImageData`` or, with ``AIGI_IMAGE_STORE=blob_store``, in the blob store."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    format: Mapped[str] = mapped_column(String(20))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ImageData(Base):
    """An uploaded image's bytes, kept apart from ``images`` so that loading a job (which
    joins its image row) never reads them. Column stored uncompressed (migration 0003)."""

    __tablename__ = "image_data"

    sha256: Mapped[str] = mapped_column(
        ForeignKey("images.sha256", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_updated", "status", "updated_at"),
        Index("ix_jobs_tenant_sha_model", "tenant_id", "image_sha256", "model_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED)
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"))
    source_url: Mapped[str | None] = mapped_column(Text)
    explain: Mapped[bool] = mapped_column(Boolean, default=True)
    callback_url: Mapped[str | None] = mapped_column(Text)
    cached_from: Mapped[uuid.UUID | None] = mapped_column()

    # classify
    model_id: Mapped[str | None] = mapped_column(String(200))
    label: Mapped[int | None] = mapped_column(SmallInteger)
    probability: Mapped[float | None] = mapped_column(Float)
    tier: Mapped[str | None] = mapped_column(String(20))
    #: OOD score / threshold (> 1: outside the training distribution); NULL without stats.
    ood_score: Mapped[float | None] = mapped_column(Float)
    #: why the tier is ``uncertain`` (migration 0004).
    verdict_reason: Mapped[str | None] = mapped_column(String(60))
    # gradcam
    gradcam_status: Mapped[str | None] = mapped_column(String(20))
    rois: Mapped[dict[str, Any] | None] = mapped_column()
    heatmap_key: Mapped[str | None] = mapped_column(Text)
    overlay_key: Mapped[str | None] = mapped_column(Text)
    # explain
    explain_status: Mapped[str | None] = mapped_column(String(20))
    explanation: Mapped[dict[str, Any] | None] = mapped_column()
    explanation_source: Mapped[str | None] = mapped_column(String(20))

    error: Mapped[str | None] = mapped_column(Text)
    reconcile_count: Mapped[int] = mapped_column(Integer, default=0)
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )
    classified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    image: Mapped[Image] = relationship(lazy="joined", innerjoin=True)
    stages: Mapped[list[JobStage]] = relationship(
        back_populates="job", order_by="JobStage.id", lazy="selectin"
    )


class JobStage(Base):
    """One run of one stage for one job, written by the worker that ran it."""

    __tablename__ = "job_stages"
    __table_args__ = (Index("ix_job_stages_job", "job_id", "stage"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    queue: Mapped[str | None] = mapped_column(String(50))
    worker: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="stages")


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class DeliveryStatus:
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "event", name="uq_delivery_job_event"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(50))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )

    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(
        order_by="DeliveryAttempt.id", lazy="selectin"
    )


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    decision: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )
