"""Build and send the per-job chain ``classify → gradcam → explain → notify`` by name.

Used by the gateway (a new job) and by the reconciler (a job that stalled, resumed
from its first unfinished stage). Nothing here imports worker code.
"""

from __future__ import annotations

import uuid

from celery import Celery, chain
from celery.canvas import Signature

from common.queues import STAGES, TASK_NAMES


def stage_signature(app: Celery, stage: str, job_id: uuid.UUID | str) -> Signature:
    return app.signature(TASK_NAMES[stage], args=(str(job_id),), queue=stage, immutable=True)


def chain_from(app: Celery, job_id: uuid.UUID | str, first_stage: str = STAGES[0]) -> Signature:
    if first_stage not in STAGES:
        raise ValueError(f"unknown stage {first_stage!r}; stages are {STAGES}")
    stages = STAGES[STAGES.index(first_stage) :]
    return chain(*(stage_signature(app, stage, job_id) for stage in stages))


def enqueue(app: Celery, job_id: uuid.UUID | str, first_stage: str = STAGES[0]) -> None:
    """Send the chain; raises the broker's error if Redis is unreachable."""
    chain_from(app, job_id, first_stage).apply_async()
