"""Per-process state of a worker and the stage runner every task goes through.

Models and clients are created lazily, in the process that uses them (the prefork
child), never in the parent before a fork.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import update
from sqlalchemy.orm import Session

from common.blobstore import BlobStore, blob_store_from_settings
from common.db.models import Job, JobStage, JobStatus, StageStatus
from common.db.session import session_scope
from common.originals import read_original
from common.settings import Settings, get_settings

if TYPE_CHECKING:
    from common.detector.inference import DetectorEngine
    from services.explainer.explainer import Explainer
    from services.gradcam.cam import DetectorCAM

log = logging.getLogger("aigi.worker")

STATUS_RANK = {s: i for i, s in enumerate(JobStatus.ALL)}


class PermanentStageError(Exception):
    """The stage cannot succeed for this job (bad input); retrying will not help."""


@dataclass
class TaskInfo:
    task_id: str | None = None
    queue: str | None = None
    worker: str | None = None


class WorkerContext:
    """Everything a task needs, built once per process on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    @cached_property
    def blobs(self) -> BlobStore:
        return blob_store_from_settings(self.settings)

    @cached_property
    def detector(self) -> DetectorEngine:
        from common.detector.inference import DetectorEngine

        engine = DetectorEngine.from_checkpoint(
            self.settings.model_path,
            device=self.settings.model_device,
            batch_size=self.settings.model_batch_size,
        )
        log.info("detector loaded", extra={"model_id": engine.model_id, "pid": os.getpid()})
        return engine

    @cached_property
    def cam(self) -> DetectorCAM:
        """Grad-CAM on the detector, built once per process (hooks live as long as it)."""
        from services.gradcam.cam import DetectorCAM

        return DetectorCAM(self.detector.model)

    @cached_property
    def explainer(self) -> Explainer:
        """The explainer and its LLM client (and circuit breaker), one per process."""
        from services.explainer.explainer import build_explainer

        return build_explainer(self.settings)

    def session(self) -> Any:
        return session_scope(self.settings.database_url)


_context: WorkerContext | None = None


def context() -> WorkerContext:
    global _context
    if _context is None:
        _context = WorkerContext()
    return _context


def reset_context() -> None:
    global _context
    _context = None


def now() -> datetime:
    return datetime.now(UTC)


def advance_status(session: Session, job_id: uuid.UUID, status: str, **values: Any) -> bool:
    """Move a job forward (never backwards, never out of a final state)."""
    lower = [s for s, rank in STATUS_RANK.items() if rank < STATUS_RANK[status]]
    if status == JobStatus.FAILED:
        lower = [s for s in JobStatus.ALL if s not in JobStatus.FINAL]
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(lower))
        .values(status=status, updated_at=now(), **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def load_job(session: Session, job_id: str | uuid.UUID) -> Job:
    job = session.get(Job, uuid.UUID(str(job_id)))
    if job is None:
        raise PermanentStageError(f"job {job_id} does not exist")
    return job


def read_job_image(ctx: WorkerContext, job_id: uuid.UUID) -> bytes:
    """The bytes of the job's image; raises ``ImageMissingError`` when they are lost."""
    with ctx.session() as session:
        return read_original(session, ctx.blobs, load_job(session, job_id).image_sha256)


@dataclass
class StageRun:
    """The ``job_stages`` row of the run in progress; ``finish`` it with the result."""

    record_id: int
    started: float

    def finish(
        self, session: Session, status: str = StageStatus.DONE, error: str | None = None
    ) -> None:
        mark_record(session, self.record_id, status, self.started, error)


StageWork = Callable[[WorkerContext, uuid.UUID, StageRun], None]


def run_stage(
    stage: str,
    job_id: str,
    work: StageWork,
    is_done: Callable[[Job], bool],
    info: TaskInfo,
    running_status: str | None = None,
    ctx: WorkerContext | None = None,
) -> bool:
    """Run ``work`` for one job unless the stage already finished; record the run.

    ``work`` receives the :class:`StageRun` it must finish in the same transaction as
    its result, so the result and the record of it are written together or not at all.
    Returns False when the stage had already finished (an idempotent no-op). ``ctx``
    defaults to this process's :func:`context` (a benchmark passes its own).
    """
    ctx = ctx or context()
    job_uuid = uuid.UUID(job_id)
    with ctx.session() as session:
        job = load_job(session, job_uuid)
        if job.status == JobStatus.FAILED or is_done(job):
            log.info("stage already finished; skipping", extra={"stage": stage, "job_id": job_id})
            return False
        record = JobStage(
            job_id=job_uuid,
            stage=stage,
            status=StageStatus.RUNNING,
            queue=info.queue,
            worker=info.worker,
            pid=os.getpid(),
            task_id=info.task_id,
        )
        session.add(record)
        if running_status:
            advance_status(session, job_uuid, running_status)
        else:
            session.execute(update(Job).where(Job.id == job_uuid).values(updated_at=now()))
        session.flush()
        record_id = record.id
    started = time.perf_counter()
    try:
        work(ctx, job_uuid, StageRun(record_id, started))
    except PermanentStageError as exc:
        finish_record(ctx, record_id, StageStatus.FAILED, started, str(exc))
        raise
    except SoftTimeLimitExceeded as exc:
        error = f"{stage} timed out after {time.perf_counter() - started:.1f} s"
        finish_record(ctx, record_id, StageStatus.FAILED, started, error)
        raise PermanentStageError(error) from exc
    except Exception as exc:
        finish_record(ctx, record_id, StageStatus.FAILED, started, f"{type(exc).__name__}: {exc}")
        raise
    log.info(
        "stage finished",
        extra={
            "stage": stage,
            "job_id": job_id,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return True


def finish_record(
    ctx: WorkerContext, record_id: int, status: str, started: float, error: str | None = None
) -> None:
    try:
        with ctx.session() as session:
            mark_record(session, record_id, status, started, error)
    except Exception:  # the database may be the reason we failed
        log.exception("could not record stage failure", extra={"record_id": record_id})


def mark_record(
    session: Session, record_id: int, status: str, started: float, error: str | None = None
) -> None:
    session.execute(
        update(JobStage)
        .where(JobStage.id == record_id)
        .values(
            status=status,
            finished_at=now(),
            duration_ms=(time.perf_counter() - started) * 1000.0,
            error=error,
        )
    )
