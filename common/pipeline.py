"""Build and send the per-job chain ``classify → gradcam → explain → notify`` by name.

Used by the gateway (a new job) and by the reconciler (a job that stalled, resumed
from its first unfinished stage). Nothing here imports worker code.

A job's chain goes on the wire as what ``celery.chain(...).apply_async()`` sends: one
message for the first task, the remaining stages in its ``chain``; each worker sends
the next stage when its own finishes. :class:`ChainSender` builds that message with
Celery's own builder (``app.amqp.as_task_v2``, Celery's task protocol 2) and writes it
with one ``LPUSH`` to the stage's list, which is all kombu's Redis transport does to
publish to a queue of the default exchange. Going through ``send_task`` cost the
gateway CPU on every job for work this path does not need (router, producer pool,
exchange copies, a queue declaration check per publish; docs/benchmarks.md). The test
``test_the_message_is_the_one_celery_sends`` compares the two on every run, so a
Celery or kombu upgrade that changes the format fails there first.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from celery import Celery
from celery.canvas import Signature
from redis import Redis

from common.celery_app import make_celery
from common.queues import STAGES, TASK_NAMES
from common.settings import Settings


class JobSender(Protocol):
    """What sends a job's chain (:class:`ChainSender`; a benchmark that runs the stages
    in its own process sends nothing)."""

    def enqueue(self, job_id: uuid.UUID | str, first_stage: str = STAGES[0]) -> None: ...


def stage_signature(app: Celery, stage: str, job_id: uuid.UUID | str) -> Signature:
    return app.signature(TASK_NAMES[stage], args=(str(job_id),), queue=stage, immutable=True)


def _stages_from(first_stage: str) -> tuple[str, ...]:
    if first_stage not in STAGES:
        raise ValueError(f"unknown stage {first_stage!r}; stages are {STAGES}")
    return STAGES[STAGES.index(first_stage) :]


def task_message(
    app: Celery, name: str, queue: str, args: Sequence[Any], chain: list[Signature] | None = None
) -> str:
    """The JSON kombu's Redis transport stores for ``app.send_task(name, args, queue=queue,
    chain=chain)`` (priority 0, default exchange): the Celery message, its body base64."""
    task_id = str(uuid.uuid4())
    task = app.amqp.as_task_v2(
        task_id, name, args=tuple(args), chain=chain, reply_to=app.thread_oid, ignore_result=None
    )
    body = json.dumps(task.body).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": task.headers,
            "properties": {
                **task.properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


class ChainSender:
    """Sends job chains (and single tasks) to the broker, a Redis list per queue.

    Raises redis-py's errors (``RedisError``, ``OSError``) when Redis is unreachable;
    the job row in Postgres stays, and the reconciler enqueues it later."""

    def __init__(self, app: Celery, redis: Redis) -> None:
        self.app = app
        self.redis = redis

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainSender:
        """A sender with a Redis client of its own (the gateway shares its client)."""
        redis = Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10
        )
        return cls(make_celery(settings), redis)

    def enqueue(self, job_id: uuid.UUID | str, first_stage: str = STAGES[0]) -> None:
        """Send ``job_id``'s chain from ``first_stage`` to its end."""
        stages = _stages_from(first_stage)
        rest = [stage_signature(self.app, stage, job_id) for stage in reversed(stages[1:])]
        self.send(TASK_NAMES[stages[0]], stages[0], (str(job_id),), chain=rest or None)

    def send(
        self, name: str, queue: str, args: Sequence[Any], chain: list[Signature] | None = None
    ) -> None:
        self.redis.lpush(queue, task_message(self.app, name, queue, args, chain))

    def close(self) -> None:
        self.redis.close()
