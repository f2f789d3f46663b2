"""The request path end to end: real gateway app, Postgres, Redis and worker processes."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from common.db.models import Job, JobStage
from common.db.session import session_scope
from common.queues import STAGES
from tests.conftest import WorkerPool
from tests.helpers import image_bytes, lose_image_bytes, wait_until
from tests.integration.conftest import ApiUser, client_for, submit

pytestmark = pytest.mark.usefixtures("pipeline_workers")


def poll_done(client: TestClient, user: ApiUser, job_id: str, timeout: float = 60) -> dict:
    """Wait until the job is final and its notify stage (the chain's last) has run."""

    def done() -> dict | None:
        body = client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()
        finished = body["status"] in ("done", "failed")
        notified = body["stages"].get("notify", {}).get("status") == "done"
        return body if finished and (notified or body["status"] == "failed") else None

    return wait_until(done, timeout, message=f"job {job_id} to finish")


def test_upload_poll_done_with_verdict(client: TestClient, user: ApiUser) -> None:
    response = submit(client, user, image_bytes(seed=1))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["status_url"].endswith(f"/v1/jobs/{body['id']}")
    assert response.headers["location"] == body["status_url"]

    job = poll_done(client, user, body["id"])
    assert job["status"] == "done"
    verdict = job["verdict"]
    assert verdict["label"] in (0, 1)
    assert verdict["label_name"] == ("FAKE" if verdict["label"] else "REAL")
    assert 0.0 <= verdict["probability"] <= 1.0
    assert verdict["tier"] in ("mostly real", "probably real", "probably fake", "mostly fake")
    assert verdict["model_id"] == "test-tiny-compact"
    assert set(job["stages"]) == set(STAGES)
    assert all(stage["duration_ms"] is not None for stage in job["stages"].values())

    evidence = job["evidence"]
    assert evidence["status"] == "done"
    assert 1 <= len(evidence["rois"]) <= 5
    assert evidence["rois"][0]["rank"] == 1 and "position" in evidence["rois"][0]
    assert evidence["image"]["width"] == 48 and evidence["metadata"]["c2pa"]["checked"]
    for url in (evidence["heatmap_url"], evidence["overlay_url"]):
        image = client.get(url, headers=user.headers)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG")


def test_chain_ran_on_four_queues(
    client: TestClient, user: ApiUser, stack_env: dict[str, str]
) -> None:
    job_id = submit(client, user, image_bytes(seed=2)).json()["id"]
    poll_done(client, user, job_id)
    with session_scope(stack_env["AIGI_DATABASE_URL"]) as session:
        runs = session.scalars(
            select(JobStage).where(JobStage.job_id == uuid.UUID(job_id)).order_by(JobStage.id)
        ).all()
        records = [(r.stage, r.queue, r.worker, r.status) for r in runs]
    assert [r[0] for r in records] == list(STAGES)
    for stage, queue, worker, _ in records:
        assert queue == stage, records
        assert worker == f"{stage}-main@test", records
    assert len({r[2] for r in records}) == 4


def test_wait_returns_the_verdict(client: TestClient, user: ApiUser) -> None:
    response = submit(client, user, image_bytes(seed=3), wait=20)
    assert response.status_code == 200, response.text
    assert response.json()["verdict"] is not None
    job_id = response.json()["id"]
    read = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}, headers=user.headers)
    assert read.status_code == 200 and read.json()["verdict"] is not None


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "photo.png").write_bytes(image_bytes(seed=4))
    (tmp_path / "notes.txt").write_text("not an image")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[misc]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_submission(client: TestClient, user: ApiUser, image_server: str) -> None:
    response = client.post(
        "/v1/jobs", headers=user.headers, json={"image_url": f"{image_server}/photo.png"}
    )
    assert response.status_code == 202, response.text
    job = poll_done(client, user, response.json()["id"])
    assert job["status"] == "done" and job["verdict"] is not None
    assert job["source_url"] == f"{image_server}/photo.png"


def test_url_submission_errors(client: TestClient, user: ApiUser, image_server: str) -> None:
    missing = client.post(
        "/v1/jobs", headers=user.headers, json={"image_url": f"{image_server}/absent.png"}
    )
    assert missing.status_code == 422 and "404" in missing.json()["detail"]
    text = client.post(
        "/v1/jobs", headers=user.headers, json={"image_url": f"{image_server}/notes.txt"}
    )
    assert text.status_code == 422 and "not an image" in text.json()["detail"]


def test_job_survives_sigkill_mid_classify(
    isolated_env: dict[str, str],
    worker_pool: WorkerPool,
    slow_checkpoint: Path,
    services: object,
) -> None:
    """A worker killed with SIGKILL mid-task loses nothing: the message comes back."""
    from tests.integration.conftest import make_user

    env = {**isolated_env, "AIGI_MODEL_PATH": str(slow_checkpoint)}
    worker_pool.env = env
    victim = worker_pool.start("classify", name="classify-victim")
    user = make_user(env["AIGI_DATABASE_URL"])
    client = client_for(env)
    job_id = submit(client, user, image_bytes(seed=5)).json()["id"]

    def classify_running() -> bool:
        with session_scope(env["AIGI_DATABASE_URL"]) as session:
            job = session.get(Job, uuid.UUID(job_id))
            return job is not None and job.status == "classifying"

    wait_until(classify_running, 60, interval=0.05, message="classify to start")
    victim.kill()
    with session_scope(env["AIGI_DATABASE_URL"]) as session:
        assert session.get(Job, uuid.UUID(job_id)).label is None  # killed before the verdict

    for stage in STAGES:
        worker_pool.start(stage, name=f"{stage}-rescuer", wait=False)
    job = poll_done(client, user, job_id, timeout=120)
    assert job["status"] == "done" and job["verdict"] is not None
    assert job["stages"]["classify"]["worker"] == "classify-rescuer@test"
    assert job["stages"]["classify"]["attempts"] == 2


def test_reconciler_requeues_a_lost_message(
    isolated_env: dict[str, str],
    worker_pool: WorkerPool,
) -> None:
    from redis import Redis

    from common.pipeline import ChainSender
    from common.settings import Settings
    from services.runtime import WorkerContext
    from services.scheduler import reconcile
    from tests.integration.conftest import make_user

    env = isolated_env
    worker_pool.env = env
    user = make_user(env["AIGI_DATABASE_URL"])
    client = client_for(env)
    job_id = submit(client, user, image_bytes(seed=6)).json()["id"]
    redis = Redis.from_url(env["AIGI_REDIS_URL"])
    assert redis.llen("classify") == 1
    redis.delete("classify")  # the message is lost, as after a Redis wipe

    for stage in STAGES:
        worker_pool.start(stage, name=f"{stage}-reconciled", wait=False)
    settings = Settings(database_url=env["AIGI_DATABASE_URL"], redis_url=env["AIGI_REDIS_URL"])
    time.sleep(0.5)
    report = reconcile(
        WorkerContext(settings), ChainSender.from_settings(settings), deadline_seconds=0
    )
    assert (job_id, "classify") in report.requeued
    job = poll_done(client, user, job_id, timeout=90)
    assert job["status"] == "done" and job["verdict"] is not None


def test_gradcam_failure_keeps_the_verdict(
    isolated_env: dict[str, str],
    worker_pool: WorkerPool,
) -> None:
    """Grad-CAM cannot run (the image's bytes vanished from Postgres): the stage is
    recorded as failed with its error, the verdict stays, the job completes, and the
    worker goes on to the next job."""
    from tests.integration.conftest import make_user

    env = isolated_env
    worker_pool.env = env
    worker_pool.start("classify", name="classify-gc")
    user = make_user(env["AIGI_DATABASE_URL"])
    client = client_for(env)
    data = image_bytes(seed=7)
    job_id = submit(client, user, data).json()["id"]
    wait_until(
        lambda: client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()["verdict"],
        60,
        message="the verdict",
    )
    sha = client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()["image"]["sha256"]
    lose_image_bytes(env["AIGI_DATABASE_URL"], sha)
    for stage in ("gradcam", "explain", "notify"):
        worker_pool.start(stage, name=f"{stage}-gc", wait=False)
    job = poll_done(client, user, job_id, timeout=90)
    assert job["status"] == "done"
    assert job["verdict"] is not None
    assert job["evidence"]["status"] == "failed"
    assert "Grad-CAM failed" in job["evidence"]["error"]
    assert job["stages"]["gradcam"]["status"] == "failed"

    next_id = submit(client, user, image_bytes(seed=8)).json()["id"]
    follow = poll_done(client, user, next_id, timeout=60)
    assert follow["evidence"]["status"] == "done", "the gradcam worker survived"


def test_stages_are_idempotent(
    client: TestClient, user: ApiUser, stack_env: dict[str, str]
) -> None:
    from common.pipeline import ChainSender
    from common.settings import Settings

    job_id = submit(client, user, image_bytes(seed=9)).json()["id"]
    first = poll_done(client, user, job_id)
    ChainSender.from_settings(Settings()).enqueue(
        job_id
    )  # the whole chain again, as after a redelivery
    marker = submit(client, user, image_bytes(seed=10)).json()["id"]
    poll_done(client, user, marker)  # one worker per queue: the duplicates ran before it
    time.sleep(0.5)
    again = client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()
    for field in ("verdict", "evidence", "explanation", "status", "finished_at"):
        assert again[field] == first[field], field
    with session_scope(stack_env["AIGI_DATABASE_URL"]) as session:
        stages = session.scalars(
            select(JobStage.stage).where(JobStage.job_id == uuid.UUID(job_id))
        ).all()
    assert sorted(stages) == sorted(["classify", "gradcam", "explain", "notify", "notify"])
