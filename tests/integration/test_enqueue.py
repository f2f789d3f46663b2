"""What the gateway and the reconciler put on the broker for a job."""

from __future__ import annotations

import base64
import json
import uuid

from redis import Redis

from common.celery_app import make_celery
from common.pipeline import enqueue
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
    enqueue(make_celery(settings), job_id)

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
    enqueue(make_celery(settings), uuid.uuid4(), NOTIFY)
    messages = queued_messages(Redis.from_url(settings.redis_url))
    assert [len(messages[q]) for q in QUEUES] == [0, 0, 0, 1]
    _, _, embed = task_body(messages[NOTIFY][0])
    assert not embed["chain"]


def test_publishing_reuses_one_redis_client_per_channel(isolated_env: dict[str, str]) -> None:
    from common.broker import Channel

    settings = Settings(
        redis_url=isolated_env["AIGI_REDIS_URL"], database_url=isolated_env["AIGI_DATABASE_URL"]
    )
    app = make_celery(settings)
    for _ in range(3):
        enqueue(app, uuid.uuid4())
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        channel._pool = None  # as after a reconnect: a new pool gets a new client
        assert channel._create_client() is not first
        assert channel._create_client().connection_pool is channel.pool
    assert len(Redis.from_url(settings.redis_url).lrange(STAGES[0], 0, -1)) == 3
