"""The Celery application shared by the gateway (sender) and the workers.

Reliability settings (see the README, "Reliability"):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only
  after its task finished; a worker killed mid-task leaves it unacknowledged.
* ``worker_prefetch_multiplier = 1``: a worker holds one message at a time.
* Redis ``visibility_timeout`` above the hard task time limit, and a restore sweep
  every ``unacked_restore_interval`` seconds (throttle 1), so the message of a killed
  worker is delivered again within about ``visibility_timeout`` + the interval.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from common.queues import QUEUES, TASK_NAMES
from common.settings import Settings, get_settings


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("aigi", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_seconds,
        task_soft_time_limit=max(1, settings.task_time_limit_seconds - 5),
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_routes={name: {"queue": stage} for stage, name in TASK_NAMES.items()},
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            "unacked_restore_interval": settings.unacked_restore_interval_seconds,
            "unacked_restore_throttle": 1,
            # A worker killed while holding the restore lock must not block restores long.
            "unacked_mutex_expire": 10,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 10,
        },
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app
