"""The explain stage as a plain function."""

from __future__ import annotations

import uuid

from common.db.models import JobStatus, StageStatus
from services.runtime import StageRun, WorkerContext, advance_status, load_job, now


def explain_job(ctx: WorkerContext, job_id: uuid.UUID, run: StageRun) -> None:
    with ctx.session() as session:
        job = load_job(session, job_id)
        status = StageStatus.NOT_COMPUTED if job.explain else StageStatus.SKIPPED
        job.explain_status = status
        job.explanation = {"error": "explanations are not computed by this version"}
        advance_status(session, job_id, JobStatus.DONE, finished_at=now())
        run.finish(session, status)
