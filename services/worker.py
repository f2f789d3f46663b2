"""Celery worker entry: every stage's task, registered by its constant name.

Tasks are thin: they read the job id, call a plain function of their stage's
service module, and let :func:`services.runtime.run_stage` record the run. Start one
worker per queue with ``aigi worker <stage>``; each only consumes its own queue.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.signals import worker_process_init
from sqlalchemy.exc import OperationalError

from common.celery_app import make_celery
from common.db.models import Job, JobStatus, StageStatus
from common.db.session import dispose_after_fork
from common.queues import CLASSIFY, DELIVER_WEBHOOK, EXPLAIN, GRADCAM, NOTIFY, TASK_NAMES
from common.settings import Settings
from services import runtime
from services.runtime import PermanentStageError, TaskInfo, run_stage

log = logging.getLogger("aigi.worker")

#: ``AIGI_WORKER_STAGE``, set by ``aigi worker <stage>`` before this module is imported:
#: the stage's own time limit and visibility timeout apply (see common/celery_app.py).
WORKER_STAGE = Settings().worker_stage
app = make_celery(stage=WORKER_STAGE)

#: Stages that run the detector; None is a worker of every stage.
MODEL_STAGES = frozenset({CLASSIFY, GRADCAM, None})

#: Transient failures are retried by Celery with backoff; anything else is permanent.
TRANSIENT = (OperationalError, ConnectionError, TimeoutError)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "max_retries": 8,
    "retry_jitter": True,
}


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """In each prefork child: fresh DB connections, torch threads set before any model."""
    dispose_after_fork()
    runtime.reset_context()
    threads = runtime.context().settings.torch_threads
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if WORKER_STAGE not in MODEL_STAGES:
        return  # explain and notify never run a model: torch would only cost them memory
    import torch

    torch.set_num_threads(threads)


def _info(task: Task) -> TaskInfo:
    delivery = task.request.delivery_info or {}
    return TaskInfo(
        task_id=task.request.id, queue=delivery.get("routing_key"), worker=task.request.hostname
    )


def _fail_job(job_id: str, error: str) -> None:
    from services.notifier.service import schedule_event

    ctx = runtime.context()
    with ctx.session() as session:
        runtime.advance_status(
            session,
            runtime.load_job(session, job_id).id,
            JobStatus.FAILED,
            error=error,
            finished_at=runtime.now(),
        )
    schedule_event(ctx, job_id, "done", app)


@app.task(name=TASK_NAMES[CLASSIFY], bind=True, **RETRY)
def classify_task(self: Task, job_id: str) -> None:
    from services.classifier.service import classify_job
    from services.notifier.service import schedule_event

    try:
        ran = run_stage(
            CLASSIFY,
            job_id,
            classify_job,
            lambda j: j.label is not None,
            _info(self),
            running_status=JobStatus.CLASSIFYING,
        )
    except PermanentStageError as exc:
        _fail_job(job_id, str(exc))
        raise Ignore() from exc  # stop the chain: nothing to explain
    if ran:
        schedule_event(runtime.context(), job_id, "verdict", app)


def _gradcam_done(job: Job) -> bool:
    return job.gradcam_status is not None and job.gradcam_status != StageStatus.RUNNING


@app.task(name=TASK_NAMES[GRADCAM], bind=True, **RETRY)
def gradcam_task(self: Task, job_id: str) -> None:
    from services.gradcam.service import gradcam_job

    try:
        run_stage(GRADCAM, job_id, gradcam_job, _gradcam_done, _info(self))
    except PermanentStageError:
        log.warning("gradcam failed; the verdict is kept", extra={"job_id": job_id})


@app.task(name=TASK_NAMES[EXPLAIN], bind=True, **RETRY)
def explain_task(self: Task, job_id: str) -> None:
    from services.explainer.service import explain_job

    try:
        run_stage(
            EXPLAIN,
            job_id,
            explain_job,
            lambda j: j.explain_status is not None,
            _info(self),
            running_status=JobStatus.EXPLAINING,
        )
    except PermanentStageError as exc:
        log.warning("explain failed", extra={"job_id": job_id, "error": str(exc)})


@app.task(name=TASK_NAMES[NOTIFY], bind=True, **RETRY)
def notify_task(self: Task, job_id: str) -> None:
    from services.notifier.service import notify_job

    run_stage(
        NOTIFY,
        job_id,
        lambda ctx, jid, run: notify_job(ctx, jid, run, app),
        lambda j: False,
        _info(self),
    )


@app.task(name=DELIVER_WEBHOOK, bind=True, **RETRY)
def deliver_webhook_task(self: Task, delivery_id: str) -> None:
    from services.notifier.service import deliver

    deliver(runtime.context(), delivery_id)
