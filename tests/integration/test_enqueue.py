"""What the gateway and the reconciler put on the broker for a job."""

from __future__ import annotations

import base64
import json
import logging
import uuid

import pytest
from redis import Redis

from common.pipeline import ChainSender, stage_signature
from common.queues import NOTIFY, QUEUES, STAGES, TASK_NAMES
from common.settings import Settings


def queued_messages(redis: Redis) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for queue in QUEUES:
        raw = redis.lrange(queue, 0, -1)
        out[queue] = [json.loads(item) for item in raw]
    return out


def task_body(message: dict) -> tuple[list, dict, dict]:
    assert message["properties"]["body_encoding"] == "base64"
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    return args, kwargs, embed


def test_a_new_job_is_one_message_carrying_the_rest_of_its_chain(
    isolated_env: dict[str, str],
) -> None:
    settings = Settings(
        redis_url=isolated_env["AIGI_REDIS_URL"], database_url=isolated_env["AIGI_DATABASE_URL"]
    )
    job_id = uuid.uuid4()
    ChainSender.from_settings(settings).enqueue(job_id)

    messages = queued_messages(Redis.from_url(settings.redis_url))
    assert {queue: len(items) for queue, items in messages.items()} == {
        q: (1 if q == STAGES[0] else 0) for q in QUEUES
    }
    message = messages[STAGES[0]][0]
    assert message["headers"]["task"] == TASK_NAMES[STAGES[0]]
    assert message["properties"]["delivery_info"]["routing_key"] == STAGES[0]
    args, kwargs, embed = task_body(message)
    assert args == [str(job_id)] and kwargs == {}
    # The worker pops the chain from its end: the next stage is last.
    chain = embed["chain"]
    assert [step["task"] for step in reversed(chain)] == [TASK_NAMES[s] for s in STAGES[1:]]
    for step, stage in zip(reversed(chain), STAGES[1:], strict=True):
        assert step["args"] == [str(job_id)]
        assert step["options"]["queue"] == stage
        assert step["immutable"] is True


def test_a_resumed_job_starts_at_its_stage_with_nothing_after_notify(
    isolated_env: dict[str, str],
) -> None:
    settings = Settings(
        redis_url=isolated_env["AIGI_REDIS_URL"], database_url=isolated_env["AIGI_DATABASE_URL"]
    )
    ChainSender.from_settings(settings).enqueue(uuid.uuid4(), NOTIFY)
    messages = queued_messages(Redis.from_url(settings.redis_url))
    assert [len(messages[q]) for q in QUEUES] == [0, 0, 0, 1]
    _, _, embed = task_body(messages[NOTIFY][0])
    assert not embed["chain"]


#: Differ between any two messages.
FRESH_HEADERS = ("id", "root_id")
FRESH_PROPERTIES = ("correlation_id", "delivery_tag")


def test_the_message_is_the_one_celery_sends(isolated_env: dict[str, str]) -> None:
    """``ChainSender`` writes the message itself; Celery's ``send_task`` for the same
    chain must put the same message on the same list (ids aside)."""
    settings = Settings(
        redis_url=isolated_env["AIGI_REDIS_URL"], database_url=isolated_env["AIGI_DATABASE_URL"]
    )
    sender = ChainSender.from_settings(settings)
    app, job_id = sender.app, str(uuid.uuid4())
    sender.enqueue(job_id)
    rest = [stage_signature(app, stage, job_id) for stage in reversed(STAGES[1:])]
    app.send_task(TASK_NAMES[STAGES[0]], args=(job_id,), queue=STAGES[0], chain=rest)

    ours, celerys = reversed(queued_messages(sender.redis)[STAGES[0]])  # LPUSH: newest first
    assert task_body(ours) == task_body(celerys)
    assert {k: v for k, v in ours.items() if k not in ("body", "headers", "properties")} == {
        k: v for k, v in celerys.items() if k not in ("body", "headers", "properties")
    }
    for part, fresh in (("headers", FRESH_HEADERS), ("properties", FRESH_PROPERTIES)):
        assert ours[part].keys() == celerys[part].keys()
        assert {k: v for k, v in ours[part].items() if k not in fresh} == {
            k: v for k, v in celerys[part].items() if k not in fresh
        }, part
    assert ours["headers"]["root_id"] == ours["headers"]["id"]
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]


def test_work_accepted_while_redis_is_down_waits_in_postgres_for_the_scheduler(
    isolated_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable: a submission is still accepted (the rate limiter fails open)
    and a delivery re-sent; both are kept in Postgres for the scheduler, which sends
    them once Redis answers; nothing reached a queue meanwhile."""
    from common.db.models import DeliveryStatus, WebhookDelivery
    from common.db.session import session_scope
    from common.embedded import free_port
    from services.runtime import WorkerContext
    from services.scheduler import reconcile
    from tests.helpers import image_bytes
    from tests.integration.conftest import client_for, make_user, submit

    down = {**isolated_env, "AIGI_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    user = make_user(isolated_env["AIGI_DATABASE_URL"])
    client = client_for(down)
    with caplog.at_level(logging.ERROR, logger="aigi.gateway"):
        response = submit(client, user, image_bytes(seed=77))
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert "job left for the reconciler" in caplog.text
        # A failed webhook delivery re-sent meanwhile is left, due, for the scheduler.
        with session_scope(isolated_env["AIGI_DATABASE_URL"]) as session:
            delivery = WebhookDelivery(
                job_id=uuid.UUID(job_id),
                tenant_id=user.tenant_id,
                event="done",
                url="https://receiver.example/hook",
                status=DeliveryStatus.FAILED,
            )
            session.add(delivery)
            session.flush()
            delivery_id = str(delivery.id)
        resent = client.post(
            f"/v1/jobs/{job_id}/deliveries/{delivery_id}/resend", headers=user.headers
        )
        assert resent.status_code == 202 and resent.json()["status"] == "pending"
        assert "delivery left for the scheduler" in caplog.text

    settings = Settings(
        redis_url=isolated_env["AIGI_REDIS_URL"], database_url=isolated_env["AIGI_DATABASE_URL"]
    )
    sender = ChainSender.from_settings(settings)
    assert all(not items for items in queued_messages(sender.redis).values())
    report = reconcile(WorkerContext(settings), sender, deadline_seconds=0)
    assert (job_id, STAGES[0]) in report.requeued
    assert delivery_id in report.deliveries
    # Other tests' unfinished jobs in this database are re-enqueued too.
    queued = [task_body(m)[0] for m in queued_messages(sender.redis)[STAGES[0]]]
    assert queued.count([job_id]) == 1
