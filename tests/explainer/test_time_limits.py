"""The explain stage runs under its own time limits, however its task reaches a worker.

Celery 5.7 writes the sending app's ``task_time_limit`` into each message, and a
worker obeys the message over its own settings: the gradcam worker (default limit)
sending the chain's next task made every explanation run under the default 45/40 s
instead of the explain stage's 150 s. These tests send the explain task the ways the
code base does and check what goes on the wire, then run the chain through real
workers whose default limit is shorter than a slow LLM's answer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from redis import Redis
from sqlalchemy import update

from common.celery_app import make_celery, stage_time_limits
from common.db.models import Job, JobStatus
from common.db.session import session_scope
from common.pipeline import ChainSender, stage_signature
from common.queues import CLASSIFY, EXPLAIN, GRADCAM, NOTIFY, TASK_NAMES
from common.settings import Settings, explain_limit_for
from services.runtime import WorkerContext, now
from services.scheduler import reconcile
from tests.conftest import WorkerPool, wait_for_workers
from tests.explainer.conftest import Recorded, RecordingServer, chat_answer
from tests.explainer.test_service import load, make_job
from tests.helpers import wait_until

LLM_URL = "http://127.0.0.1:9"


def test_settings_refuse_an_llm_timeout_that_cannot_fit() -> None:
    limits: dict[str, Any] = {"llm_url": LLM_URL, "llm_timeout_seconds": 60}
    with pytest.raises(ValidationError, match="AIGI_LLM_TIMEOUT_SECONDS=60 cannot fit") as info:
        Settings(**limits, explain_time_limit_seconds=60, explain_visibility_timeout_seconds=90)
    least = explain_limit_for(60)
    assert f"raise the explain limit to at least {least}" in str(info.value)
    fits = Settings(
        **limits, explain_time_limit_seconds=least, explain_visibility_timeout_seconds=least + 30
    )
    assert fits.llm_budget_seconds() >= 60
    with pytest.raises(ValidationError, match="cannot fit"):
        Settings(
            **limits,
            explain_time_limit_seconds=least - 1,
            explain_visibility_timeout_seconds=least + 30,
        )
    # without an LLM there is no call to fit
    Settings(llm_timeout_seconds=60, explain_time_limit_seconds=10)


def test_no_message_carries_the_senders_time_limit(isolated_env: dict[str, str]) -> None:
    """A gradcam worker's app (default limits) registers every task, as services/worker.py
    does, and sends the explain task as the chain, a retry and the reconciler do."""
    settings = Settings(
        redis_url=isolated_env["AIGI_REDIS_URL"],
        database_url=isolated_env["AIGI_DATABASE_URL"],
        task_time_limit_seconds=45,
        visibility_timeout_seconds=60,
        explain_time_limit_seconds=150,
        explain_visibility_timeout_seconds=180,
    )
    app = make_celery(settings, stage=GRADCAM)

    def noop(job_id: str) -> None:
        """Stands in for a stage's task."""

    for name in TASK_NAMES.values():
        app.task(name=name)(noop)
    explain = app.tasks[TASK_NAMES[EXPLAIN]]
    assert (explain.time_limit, explain.soft_time_limit) == (150, 145)
    assert stage_time_limits(settings, EXPLAIN) == (150, 145)
    for stage in (CLASSIFY, GRADCAM, NOTIFY):
        assert app.tasks[TASK_NAMES[stage]].time_limit == 45
    redis = Redis.from_url(settings.redis_url)
    job_id = str(uuid.uuid4())
    try:
        stage_signature(app, EXPLAIN, job_id).apply_async()  # the chain's next stage
        explain.apply_async((job_id,), queue=EXPLAIN)  # as Task.retry re-sends it
        app.send_task(TASK_NAMES[EXPLAIN], args=(job_id,), queue=EXPLAIN)
        ChainSender(app, redis).enqueue(job_id, EXPLAIN)  # the reconciler
        messages = [json.loads(raw) for raw in redis.lrange(EXPLAIN, 0, -1)]
    finally:
        redis.close()
        app.close()
    assert len(messages) == 4
    for message in messages:
        assert message["headers"]["task"] == TASK_NAMES[EXPLAIN]
        assert message["headers"]["timelimit"] == [None, None], message["headers"]


@pytest.mark.slow
def test_a_slow_llm_answer_is_kept_in_the_chain_and_after_the_reconciler(
    isolated_env: dict[str, str],
    worker_pool: WorkerPool,
    recording_server: Callable[..., RecordingServer],
) -> None:
    """Workers whose default limit (2 s hard, 1 s soft) is shorter than the LLM's answer
    (3 s), and an explain limit (30 s) that holds it: the gradcam worker's chain and the
    reconciler both lead to an LLM explanation."""
    delay = 3.0
    answer = chat_answer(
        json.dumps(
            {
                "frequency_domain_signatures": "Region 1 (upper left) has 2.30x the whole "
                "image's high-frequency energy (0.184 vs 0.0801), which indicates generation."
            }
        ),
        model="slow-llm",
    )

    def respond(request: Recorded) -> tuple[int, Any]:
        if request.method == "POST":
            time.sleep(delay)
        return 200, answer

    server = recording_server(respond)
    env = isolated_env
    short = {"AIGI_TASK_TIME_LIMIT_SECONDS": "2", "AIGI_VISIBILITY_TIMEOUT_SECONDS": "3"}
    llm = {
        "AIGI_LLM_URL": server.url,
        "AIGI_LLM_MODEL": "slow-llm",
        "AIGI_LLM_SCHEMA_STYLE": "openai",
        "AIGI_LLM_TIMEOUT_SECONDS": "20",
        "AIGI_EXPLAIN_TIME_LIMIT_SECONDS": "30",
        "AIGI_EXPLAIN_VISIBILITY_TIMEOUT_SECONDS": "40",
    }
    worker_pool.env = env
    worker_pool.start(GRADCAM, name="gradcam-short", wait=False, extra_env=short)
    explain_worker = worker_pool.start(
        EXPLAIN, name="explain-slow", wait=False, extra_env={**short, **llm}
    )
    wait_for_workers(env, ["gradcam-short", "explain-slow"])
    settings = Settings(database_url=env["AIGI_DATABASE_URL"], redis_url=env["AIGI_REDIS_URL"])
    sender = ChainSender.from_settings(settings)
    try:
        # Classified and Grad-CAM done: the gradcam task is a no-op that sends the next one.
        chained = make_job(env["AIGI_DATABASE_URL"])
        sender.enqueue(chained, GRADCAM)
        # Stuck before its explain stage for a month: the reconciler sends it again.
        resumed = make_job(env["AIGI_DATABASE_URL"])
        with session_scope(env["AIGI_DATABASE_URL"]) as session:
            session.execute(
                update(Job).where(Job.id == resumed).values(updated_at=now() - timedelta(days=30))
            )
        report = reconcile(WorkerContext(settings), sender, deadline_seconds=29 * 86400)
        assert (str(resumed), EXPLAIN) in report.requeued
    finally:
        sender.close()

    def finished(job_id: uuid.UUID) -> Callable[[], Job | None]:
        def check() -> Job | None:
            job, _ = load(env["AIGI_DATABASE_URL"], job_id)
            return job if job.status == JobStatus.DONE else None

        return check

    for job_id in (chained, resumed):
        job = wait_until(finished(job_id), 60, message="the explain worker to finish the job")
        document = job.explanation or {}
        log = explain_worker.log()[-3000:]
        assert job.explanation_source == "llm", (document, log)
        assert document["llm_ms"] >= delay * 1000 > 2000  # longer than the default limit
    assert "time limit" not in explain_worker.log().lower()
    assert len(server.posts()) == 2
