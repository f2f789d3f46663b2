"""The reconciler and the webhook scheduler (``aigi scheduler``).

Postgres is the source of truth. Every tick:

* a job unfinished for longer than the stage deadline is re-enqueued from its first
  unfinished stage (the tasks are idempotent, so a job that was merely slow costs a
  no-op); after ``max_reconcile_attempts`` it is marked failed;
* a done job whose ``notify`` stage never finished gets its notify task again;
* webhook deliveries whose retry time has come are sent to the notify queue.

So even a Redis that lost all its data loses no job.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select, update

from common.db.models import Job, JobStage, JobStatus, StageStatus
from common.pipeline import ChainSender
from common.queues import CLASSIFY, DELIVER_WEBHOOK, EXPLAIN, GRADCAM, NOTIFY
from services.notifier.service import due_deliveries
from services.runtime import WorkerContext, now

log = logging.getLogger("aigi.scheduler")
NOTIFY_LOOKBACK = timedelta(hours=6)


def first_unfinished_stage(job: Job) -> str | None:
    if job.label is None:
        return CLASSIFY
    if job.gradcam_status in (None, StageStatus.RUNNING):
        return GRADCAM
    if job.explain_status is None:
        return EXPLAIN
    return None


@dataclass
class TickReport:
    requeued: list[tuple[str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)


def reconcile(
    ctx: WorkerContext, sender: ChainSender, deadline_seconds: float | None = None, limit: int = 200
) -> TickReport:
    report = TickReport()
    deadline = (
        deadline_seconds if deadline_seconds is not None else (ctx.settings.stage_deadline_seconds)
    )
    cutoff = now() - timedelta(seconds=deadline)
    with ctx.session() as session:
        stale = session.scalars(
            select(Job)
            .where(Job.status.not_in(JobStatus.FINAL), Job.updated_at < cutoff)
            .order_by(Job.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Job)
        ).all()
        for job in stale:
            stage = first_unfinished_stage(job)
            if job.reconcile_count >= ctx.settings.max_reconcile_attempts:
                job.status, job.finished_at = JobStatus.FAILED, now()
                job.error = (
                    f"gave up after {job.reconcile_count} re-enqueues; stuck before stage {stage}"
                )
                report.failed.append(str(job.id))
                continue
            if stage is None:  # results complete but status not advanced
                job.status, job.finished_at = JobStatus.DONE, job.finished_at or now()
                continue
            job.reconcile_count += 1
            job.updated_at = job.requeued_at = now()
            report.requeued.append((str(job.id), stage))
        unnotified = session.scalars(
            select(Job.id)
            .where(
                Job.status.in_(JobStatus.FINAL),
                Job.finished_at < cutoff,
                Job.finished_at > now() - NOTIFY_LOOKBACK,
                or_(Job.requeued_at.is_(None), Job.requeued_at < cutoff),
                ~exists().where(
                    JobStage.job_id == Job.id,
                    JobStage.stage == NOTIFY,
                    JobStage.status == StageStatus.DONE,
                ),
            )
            .limit(limit)
        ).all()
    for job_id, stage in report.requeued:
        sender.enqueue(job_id, stage)
    for job_uuid in unnotified:
        if _claim_notify(ctx, job_uuid, cutoff):
            sender.enqueue(job_uuid, NOTIFY)
            report.notified.append(str(job_uuid))
    for delivery_id in due_deliveries(ctx):
        sender.send(DELIVER_WEBHOOK, NOTIFY, (str(delivery_id),))
        report.deliveries.append(str(delivery_id))
    if report.requeued or report.failed or report.notified:
        log.warning(
            "reconciled",
            extra={
                "requeued": report.requeued,
                "failed": report.failed,
                "notified": report.notified,
            },
        )
    return report


def _claim_notify(ctx: WorkerContext, job_id: uuid.UUID, cutoff: datetime) -> bool:
    """Mark the re-enqueue, so one job is re-notified at most once per deadline."""
    with ctx.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, or_(Job.requeued_at.is_(None), Job.requeued_at < cutoff))
            .values(requeued_at=now())
        )
        return bool(result.rowcount)


def run_forever(
    ctx: WorkerContext, sender: ChainSender, interval: float, stop: threading.Event | None = None
) -> None:
    stop = stop or threading.Event()
    log.info("scheduler started", extra={"interval_s": interval})
    while not stop.is_set():
        try:
            reconcile(ctx, sender)
        except Exception:  # keep going: Postgres or Redis may be restarting
            log.exception("scheduler tick failed; retrying")
        stop.wait(interval)
