"""The Celery application shared by the gateway (sender) and the workers.

Reliability settings (see the README, "Reliability"):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only
  after its task finished; a worker killed mid-task leaves it unacknowledged.
* ``worker_prefetch_multiplier = 1``: a worker holds one message at a time.
* Redis ``visibility_timeout`` above the hard task time limit, and a restore sweep
  every ``unacked_restore_interval`` seconds (throttle 1), so the message of a killed
  worker is delivered again within about ``visibility_timeout`` + the interval.
* Each stage keeps its unacknowledged messages under keys of its own
  (``unacked:<stage>``), so its visibility timeout applies to its own messages only:
  classify, gradcam and notify come back after about a minute, while the LLM stage,
  whose tasks may legitimately run for minutes, gets a longer timeout without a fast
  stage's worker restoring (and duplicating) its in-flight messages.

Time limits belong to the stage of the task, and the worker that runs it decides
them. Celery 5.7 copies ``task_time_limit`` into every task an app registers and
writes that limit into each message the app sends; a gradcam worker (45 s) sending
the chain's next task stamped the explain task with 45/40 s, which the explain
worker obeyed over its own 150 s. So each task gets its stage's limits by name
(``task_annotations``, the same in every process), and :func:`_no_limit_on_the_wire`
clears the limit from every message this code base publishes (chain continuation,
retry, ``send_task``); :class:`common.pipeline.ChainSender` writes none either. The
worker then applies the task's limits from its own settings, whoever sent it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from kombu import Queue

from common.queues import DELIVER_WEBHOOK, NOTIFY, QUEUES, TASK_NAMES
from common.settings import Settings, get_settings

#: Every task name of the code base, with the stage (queue) whose limits apply to it.
TASK_STAGES: dict[str, str] = {
    **{name: stage for stage, name in TASK_NAMES.items()},
    DELIVER_WEBHOOK: NOTIFY,
}


def stage_time_limits(settings: Settings, stage: str | None) -> tuple[int, int]:
    """(hard, soft) seconds of one task of ``stage``; the soft limit is 5 s earlier."""
    hard = settings.time_limit(stage)
    return hard, max(1, hard - 5)


def task_annotations(settings: Settings) -> dict[str, dict[str, int]]:
    """Each task's own time limits, by name (applied to the tasks a worker registers)."""
    annotations = {}
    for name, stage in TASK_STAGES.items():
        hard, soft = stage_time_limits(settings, stage)
        annotations[name] = {"time_limit": hard, "soft_time_limit": soft}
    return annotations


@before_task_publish.connect
def _no_limit_on_the_wire(sender: str | None = None, headers: Any = None, **_: Any) -> None:
    """A message of ours carries no time limit: the consuming worker applies its own."""
    if sender in TASK_STAGES and isinstance(headers, dict) and "timelimit" in headers:
        headers["timelimit"] = [None, None]


def make_celery(settings: Settings | None = None, stage: str | None = None) -> Celery:
    """The app; ``stage`` is the queue a worker consumes (None for producers)."""
    settings = settings or get_settings()
    time_limit, soft_time_limit = stage_time_limits(settings, stage)
    unacked = {}
    if stage is not None:
        unacked = {
            "unacked_key": f"unacked:{stage}",
            "unacked_index_key": f"unacked_index:{stage}",
            "unacked_mutex_key": f"unacked_mutex:{stage}",
        }
    app = Celery("aigi", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        # The defaults of this app's stage; every task of ours has its own (annotations).
        task_time_limit=time_limit,
        task_soft_time_limit=soft_time_limit,
        task_annotations=task_annotations(settings),
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_routes={name: {"queue": stage} for stage, name in TASK_NAMES.items()},
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout(stage),
            "unacked_restore_interval": settings.unacked_restore_interval_seconds,
            "unacked_restore_throttle": 1,
            # A worker killed while holding the restore lock must not block restores long.
            "unacked_mutex_expire": 10,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
            **unacked,
        },
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # Workers publish task events (Flower); producers do not publish "sent"
        # events, which would double the gateway's messages per job.
        worker_send_task_events=True,
    )
    return app
