"""The explain stage against the real Postgres: ``explain_job`` through ``run_stage``
with a real WorkerContext, and once end to end through a real ``aigi worker explain``
process, both talking over HTTP to a server that answers a grounded claim (the real
models' answers are checked in test_llm_server.py and test_real_model.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from common.db.models import Image, Job, JobStage, JobStatus, StageStatus
from common.db.session import session_scope
from common.jobview import job_view
from common.queues import EXPLAIN
from common.settings import Settings
from common.tenants import create_tenant
from services import runtime
from services.explainer.prompt import PROMPT_VERSION
from services.explainer.service import explain_job
from services.runtime import TaskInfo, WorkerContext, run_stage
from tests.conftest import Services, WorkerPool
from tests.explainer.conftest import GROUNDED, RecordingServer, free_port, roi_document
from tests.helpers import wait_until

LIMITS = {
    "explain_time_limit_seconds": 60,
    "explain_visibility_timeout_seconds": 90,
    "llm_timeout_seconds": 30,
}


def make_job(
    database_url: str,
    *,
    explain: bool = True,
    gradcam_status: str | None = StageStatus.DONE,
    rois: dict[str, Any] | None = None,
) -> uuid.UUID:
    """A job as the chain leaves it before the explain stage: classified, gradcam run."""
    with session_scope(database_url) as session:
        tenant = create_tenant(session, f"explain-{uuid.uuid4().hex[:8]}")
        sha = uuid.uuid4().hex + uuid.uuid4().hex
        session.add(
            Image(
                sha256=sha,
                size_bytes=1,
                content_type="image/png",
                format="PNG",
                width=640,
                height=480,
            )
        )
        job = Job(
            id=uuid.uuid4(),
            tenant_id=tenant.id,
            image_sha256=sha,
            explain=explain,
            status=JobStatus.CLASSIFIED,
            model_id="test-tiny",
            label=1,
            probability=0.873,
            tier="mostly fake",
            gradcam_status=gradcam_status,
            rois=rois if rois is not None else roi_document(),
        )
        session.add(job)
        return job.id


@pytest.fixture
def use_context(services: Services) -> Iterator[Any]:
    """Run stages in this process with a WorkerContext built from the given settings."""

    def install(**values: Any) -> WorkerContext:
        ctx = WorkerContext(Settings(database_url=services.database_url, **values))
        runtime._context = ctx
        return ctx

    yield install
    if runtime._context is not None and "explainer" in runtime._context.__dict__:
        runtime._context.explainer.close()
    runtime.reset_context()


def run_explain(job_id: uuid.UUID) -> bool:
    return run_stage(
        EXPLAIN,
        str(job_id),
        explain_job,
        lambda j: j.explain_status is not None,
        TaskInfo(queue=EXPLAIN, worker="test"),
        running_status=JobStatus.EXPLAINING,
    )


def load(database_url: str, job_id: uuid.UUID) -> tuple[Job, list[JobStage]]:
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        stages = list(
            session.scalars(select(JobStage).where(JobStage.job_id == job_id).order_by(JobStage.id))
        )
        session.expunge_all()
        return job, stages


def test_llm_explanation_stored_and_shown(
    services: Services, use_context: Any, grounded_llm: RecordingServer
) -> None:
    use_context(llm_url=grounded_llm.url, llm_model="grounded", **LIMITS)
    job_id = make_job(services.database_url)
    assert run_explain(job_id)
    assert not run_explain(job_id)  # idempotent: the stage already finished
    job, stages = load(services.database_url, job_id)
    assert job.status == JobStatus.DONE and job.finished_at is not None
    assert job.explain_status == StageStatus.DONE and job.explanation_source == "llm"
    assert [(s.stage, s.status) for s in stages] == [(EXPLAIN, StageStatus.DONE)]
    view = job_view(job, "http://test").explanation
    assert view is not None and view.source == "llm" and view.status == "done"
    assert view.model == "grounded" and view.prompt_version == PROMPT_VERSION
    assert view.artifacts == {"frequency_domain_signatures": GROUNDED}
    assert view.summary and "0.873" in view.summary and view.error is None
    assert view.grounded_rate == 1.0
    assert job.explanation and job.explanation["claims"] == {"made": 1, "kept": 1}
    assert len(grounded_llm.posts()) == 1


def test_without_llm_the_evidence_explanation_is_stored(
    services: Services, use_context: Any
) -> None:
    use_context(llm_url=None)
    job_id = make_job(services.database_url)
    run_explain(job_id)
    job, _ = load(services.database_url, job_id)
    assert job.status == JobStatus.DONE and job.explanation_source == "evidence"
    view = job_view(job, "http://test").explanation
    assert view is not None and view.source == "evidence" and view.model is None
    assert "Region 1 (upper left" in view.artifacts["frequency_domain_signatures"]
    assert view.summary and "proves nothing" in view.summary


def test_llm_down_job_still_completes(services: Services, use_context: Any) -> None:
    use_context(llm_url=f"http://127.0.0.1:{free_port()}", **LIMITS)
    job_id = make_job(services.database_url)
    run_explain(job_id)
    job, stages = load(services.database_url, job_id)
    assert job.status == JobStatus.DONE and job.explanation_source == "evidence"
    assert job.explanation and "LLMUnavailable" in job.explanation["error"]
    assert stages[-1].status == StageStatus.DONE


def test_explain_false_is_skipped_without_llm_call(services: Services, use_context: Any) -> None:
    ctx = use_context(llm_url=f"http://127.0.0.1:{free_port()}", **LIMITS)
    job_id = make_job(services.database_url, explain=False)
    run_explain(job_id)
    job, stages = load(services.database_url, job_id)
    assert job.status == JobStatus.DONE and job.explain_status == StageStatus.SKIPPED
    assert job.explanation is None and job.explanation_source is None
    assert stages[-1].status == StageStatus.SKIPPED
    assert "explainer" not in ctx.__dict__  # the LLM client was never even built


def test_failed_gradcam_explained_from_the_verdict(services: Services, use_context: Any) -> None:
    use_context(llm_url=None)
    failed = {"rois": [], "error": "Grad-CAM failed: ValueError: image too small"}
    job_id = make_job(services.database_url, gradcam_status=StageStatus.FAILED, rois=failed)
    run_explain(job_id)
    job, _ = load(services.database_url, job_id)
    assert job.status == JobStatus.DONE and job.explanation_source == "evidence"
    assert job.explanation and job.explanation["artifacts"] == {}
    assert "heatmap is unavailable" in job.explanation["summary"]


def test_worker_process_end_to_end(
    isolated_env: dict[str, str], worker_pool: WorkerPool, grounded_llm: RecordingServer
) -> None:
    """A real ``aigi worker explain`` with AIGI_LLM_URL set explains a queued job."""
    from common.pipeline import ChainSender

    env = isolated_env
    worker_pool.env = env
    worker_pool.start(
        EXPLAIN,
        name="explain-llm",
        extra_env={
            "AIGI_LLM_URL": grounded_llm.url,
            "AIGI_LLM_MODEL": "grounded",
            "AIGI_EXPLAIN_TIME_LIMIT_SECONDS": "60",
            "AIGI_EXPLAIN_VISIBILITY_TIMEOUT_SECONDS": "90",
            "AIGI_LLM_TIMEOUT_SECONDS": "30",
            "HF_HUB_OFFLINE": "1",  # the LLM client must not care
        },
    )
    job_id = make_job(env["AIGI_DATABASE_URL"])
    settings = Settings(database_url=env["AIGI_DATABASE_URL"], redis_url=env["AIGI_REDIS_URL"])
    ChainSender.from_settings(settings).enqueue(job_id, EXPLAIN)

    def done() -> Job | None:
        job, _ = load(env["AIGI_DATABASE_URL"], job_id)
        return job if job.status == JobStatus.DONE else None

    job = wait_until(done, 60, message="the explain worker to finish the job")
    view = job_view(job, "http://test").explanation
    assert view is not None, worker_pool.workers[0].log()
    assert view.source == "llm", (job.explanation, worker_pool.workers[0].log()[-3000:])
    assert view.model == "grounded" and view.prompt_version == PROMPT_VERSION
    _, stages = load(env["AIGI_DATABASE_URL"], job_id)
    assert [(s.stage, s.status, s.worker) for s in stages] == [
        (EXPLAIN, StageStatus.DONE, "explain-llm@test")
    ]
