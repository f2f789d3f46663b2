"""The explain stage as a plain function: load the job, explain, store the result.

The job is read in one short transaction and the result written in another, so no
database connection is held while the LLM answers. The result, the job's final
status and the stage record are written together. The stage always completes the
job: an LLM problem gives the evidence explanation (see :mod:`.explainer`).
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import update

from common.db.models import Job, JobStatus, StageStatus
from common.detector.config import LABELS
from services.explainer.inputs import VerdictInput
from services.runtime import StageRun, WorkerContext, advance_status, load_job, now

log = logging.getLogger("aigi.explainer")


def _finish(
    ctx: WorkerContext,
    job_id: uuid.UUID,
    run: StageRun,
    status: str,
    explanation: dict[str, object] | None,
    source: str | None,
    job_status: str = JobStatus.DONE,
    error: str | None = None,
) -> None:
    with ctx.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(explain_status=status, explanation=explanation, explanation_source=source)
        )
        extra = {"error": error} if error else {}
        advance_status(session, job_id, job_status, finished_at=now(), **extra)
        run.finish(session, status, error)


def explain_job(ctx: WorkerContext, job_id: uuid.UUID, run: StageRun) -> None:
    with ctx.session() as session:
        job = load_job(session, job_id)
        wanted = job.explain
        label, probability, tier, model_id = job.label, job.probability, job.tier, job.model_id
        reason = job.verdict_reason
        roi_document, gradcam_status = job.rois, job.gradcam_status
    if not wanted:
        _finish(ctx, job_id, run, StageStatus.SKIPPED, None, None)
        return
    if label is None or probability is None:
        # The chain stops at a failed classify, so this is a job run out of order.
        error = "no verdict to explain"
        _finish(
            ctx, job_id, run, StageStatus.FAILED, {"error": error}, None, JobStatus.FAILED, error
        )
        return
    verdict = VerdictInput(
        label_name=LABELS[label],
        probability=probability,
        tier=tier or "unknown",
        model_id=model_id,
        reason=reason,
    )
    result = ctx.explainer.explain(verdict, roi_document, gradcam_status=gradcam_status)
    log.info(
        "explanation stored",
        extra={
            "job_id": str(job_id),
            "source": result.source,
            "artifacts": len(result.artifacts),
            "llm_calls": result.llm_calls,
            "llm_ms": round(result.llm_seconds * 1000, 1),
            "grounded_rate": result.grounded_rate,
            "dropped": len(result.dropped),
        },
    )
    _finish(ctx, job_id, run, StageStatus.DONE, result.as_document(), result.source)
