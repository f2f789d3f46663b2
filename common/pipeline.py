"""Build and send the per-job chain ``classify → gradcam → explain → notify`` by name.

Used by the gateway (a new job) and by the reconciler (a job that stalled, resumed
from its first unfinished stage). Nothing here imports worker code.
"""

from __future__ import annotations

import uuid

from celery import Celery
from celery.canvas import Signature

from common.queues import STAGES, TASK_NAMES


def stage_signature(app: Celery, stage: str, job_id: uuid.UUID | str) -> Signature:
    return app.signature(TASK_NAMES[stage], args=(str(job_id),), queue=stage, immutable=True)


def _stages_from(first_stage: str) -> tuple[str, ...]:
    if first_stage not in STAGES:
        raise ValueError(f"unknown stage {first_stage!r}; stages are {STAGES}")
    return STAGES[STAGES.index(first_stage) :]


def enqueue(app: Celery, job_id: uuid.UUID | str, first_stage: str = STAGES[0]) -> None:
    """Send the chain; raises the broker's error if Redis is unreachable.

    Sent as what ``celery.chain(...).apply_async()`` puts on the wire, the first task
    with the remaining stages in the message's ``chain``, without building and freezing
    a canvas first: that cost the gateway a third more CPU per submission. Each worker
    sends the next stage when its own finishes."""
    stages = _stages_from(first_stage)
    rest = [stage_signature(app, stage, job_id) for stage in reversed(stages[1:])]
    app.send_task(TASK_NAMES[stages[0]], args=(str(job_id),), queue=stages[0], chain=rest or None)
