"""A noise image through the real classify stage ends ``uncertain``, with a reason.

The stage runs in this process with a checkpoint whose OOD statistics were fitted by
``fit_ood`` on smooth 'photographs'; the job is then read back through the API (the
same view the webhooks send) and found with ``tier=uncertain``.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from common.db.models import Image, ImageData, Job, JobStatus
from common.db.session import session_scope
from common.detector.ood_fit import fit_ood
from common.jobview import job_view
from common.queues import CLASSIFY
from common.settings import Settings
from services.classifier.service import classify_job
from services.runtime import TaskInfo, WorkerContext, run_stage
from tests.conftest import Services
from tests.helpers import image_bytes
from tests.integration.conftest import ApiUser
from tests.unit.conftest import write_dataset


@pytest.fixture(scope="module")
def ood_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ood-api")
    data = write_dataset(root / "data", n_per_class=40)
    folder = root / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    fit_ood(
        folder,
        [data],
        fit_limit=64,
        val_limit=32,
        synthetic_per_kind=3,
        method="pooled:knn/mean-feature",  # flags noise on this untrained net
    )
    return folder


def queued_job(database_url: str, tenant_id: uuid.UUID, data: bytes) -> uuid.UUID:
    """A job as the gateway leaves it: image stored, status queued (no broker message,
    so no worker of another test picks it up)."""
    sha = hashlib.sha256(data).hexdigest()
    with session_scope(database_url) as session:
        if session.get(Image, sha) is None:
            session.add(
                Image(
                    sha256=sha,
                    size_bytes=len(data),
                    content_type="image/png",
                    format="PNG",
                    width=160,
                    height=120,
                )
            )
            session.flush()
            session.add(ImageData(sha256=sha, data=data))
        job = Job(id=uuid.uuid4(), tenant_id=tenant_id, image_sha256=sha, status=JobStatus.QUEUED)
        session.add(job)
        return job.id


def test_a_noise_image_is_uncertain_with_a_reason(
    client: TestClient, user: ApiUser, services: Services, ood_checkpoint: Path
) -> None:
    job_id = queued_job(services.database_url, user.tenant_id, image_bytes((160, 120), seed=7))
    ctx = WorkerContext(Settings(database_url=services.database_url, model_path=ood_checkpoint))
    assert run_stage(
        CLASSIFY,
        str(job_id),
        classify_job,
        lambda j: j.label is not None,
        TaskInfo(queue=CLASSIFY, worker="test"),
        running_status=JobStatus.CLASSIFYING,
        ctx=ctx,
    )

    body = client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()
    verdict = body["verdict"]
    assert verdict["tier"] == "uncertain"
    assert verdict["reason"] == "outside the training distribution"
    assert verdict["ood_score"] > 1
    assert verdict["label_name"] in ("REAL", "FAKE") and 0 <= verdict["probability"] <= 1
    listed = client.get("/v1/jobs", params={"tier": "uncertain"}, headers=user.headers).json()
    assert str(job_id) in {job["id"] for job in listed["items"]}
    sure = client.get("/v1/jobs", params={"tier": "mostly fake"}, headers=user.headers).json()
    assert str(job_id) not in {job["id"] for job in sure["items"]}
    with session_scope(services.database_url) as session:  # the webhook payload's view
        job = session.get(Job, job_id)
        assert job is not None
        webhook = job_view(job, "http://test").model_dump(mode="json")["verdict"]
    assert webhook == verdict


def test_an_old_checkpoint_gives_a_null_ood_score(
    client: TestClient, user: ApiUser, services: Services, tiny_checkpoint: Path
) -> None:
    job_id = queued_job(services.database_url, user.tenant_id, image_bytes((160, 120), seed=8))
    ctx = WorkerContext(Settings(database_url=services.database_url, model_path=tiny_checkpoint))
    run_stage(
        CLASSIFY,
        str(job_id),
        classify_job,
        lambda j: j.label is not None,
        TaskInfo(queue=CLASSIFY, worker="test"),
        running_status=JobStatus.CLASSIFYING,
        ctx=ctx,
    )
    verdict = client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()["verdict"]
    assert verdict["ood_score"] is None and verdict["reason"] is None
    assert verdict["tier"] in ("mostly real", "probably real", "probably fake", "mostly fake")
