"""Dashboard fixtures: API users and clients (from the integration suite), a logged-in
dashboard client, and jobs written straight into Postgres with finished results (so the
pages have verdicts, ROIs, overlays and timings to show without running the workers)."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from tests.helpers import image_bytes
from tests.integration.conftest import ApiUser, client, make_user, other_user, submit, user

__all__ = ["ApiUser", "client", "make_user", "other_user", "submit", "user"]

STAGE_MS = {"classify": 40.0, "gradcam": 120.0, "explain": 15.0, "notify": 5.0}


def login_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1)


def login(client: TestClient, key: str, next_url: str | None = None) -> Any:
    form = client.get("/dashboard/login")
    assert form.status_code == 200, form.text
    data = {"api_key": key, "csrf_token": login_token(form.text)}
    if next_url:
        data["next"] = next_url
    return client.post("/dashboard/login", data=data, follow_redirects=False)


def page_csrf(client: TestClient, path: str = "/dashboard/jobs") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return login_token(response.text)


@pytest.fixture
def dash(client: TestClient, user: ApiUser) -> TestClient:
    """The ``client`` logged in to the dashboard as ``user``."""
    response = login(client, user.key)
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def other_dash(client: TestClient, other_user: ApiUser) -> Iterator[TestClient]:
    """A second browser (its own cookies) logged in as ``other_user``."""
    second = TestClient(client.app, base_url=str(client.base_url))
    assert login(second, other_user.key).status_code == 303
    yield second
    second.close()


def _png(size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(array, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


ROIS = [
    {
        "rank": 1,
        "box": [4, 6, 20, 22],
        "box_normalized": [0.0833, 0.15, 0.4167, 0.55],
        "area_fraction": 0.1333,
        "heat_share": 0.41,
        "peak": 0.97,
        "mean_heat": 0.71,
        "position": "upper left",
        "evidence": {
            "high_freq_energy": {"value": 0.21, "relative": 1.8},
            "noise_residual": {"value": 3.2, "relative": 0.6},
        },
    },
    {
        "rank": 2,
        "box": [30, 20, 44, 36],
        "box_normalized": [0.625, 0.5, 0.9167, 0.9],
        "area_fraction": 0.1167,
        "heat_share": 0.22,
        "peak": 0.8,
        "mean_heat": 0.6,
        "position": "lower right",
        "evidence": {"saturation_mean": {"value": 0.7, "relative": 1.4}},
    },
]


JobMaker = Callable[..., uuid.UUID]


@pytest.fixture
def make_job(client: TestClient) -> JobMaker:
    """Write a job (and its image, overlay, stage runs) straight into Postgres."""
    from common.blobstore import image_key
    from common.db.models import Image, Job, JobStage
    from common.db.session import session_scope

    state = client.app.state.gateway  # type: ignore[attr-defined]

    def make(
        tenant_id: uuid.UUID,
        seed: int,
        status: str = "done",
        label: int | None = 1,
        probability: float | None = 0.93,
        tier: str | None = "mostly fake",
        created_at: datetime | None = None,
        explanation_source: str | None = "evidence",
        stage_failures: tuple[str, ...] = (),
    ) -> uuid.UUID:
        data = image_bytes(size=(48, 40), seed=seed)
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        state.blobs.put(image_key(sha), data)
        job_id = uuid.uuid4()
        with session_scope(state.settings.database_url) as session:
            if session.get(Image, sha) is None:
                session.add(
                    Image(
                        sha256=sha,
                        size_bytes=len(data),
                        content_type="image/png",
                        format="PNG",
                        width=48,
                        height=40,
                    )
                )
                session.flush()
            created = created_at or datetime.now(UTC)
            verdict = label is not None
            job = Job(
                id=job_id,
                tenant_id=tenant_id,
                status=status,
                image_sha256=sha,
                explain=True,
                reconcile_count=0,
                created_at=created,
                updated_at=created,
                model_id="test-model" if verdict else None,
                label=label,
                probability=probability if verdict else None,
                tier=tier if verdict else None,
                classified_at=created + timedelta(milliseconds=50) if verdict else None,
            )
            if status == "done":
                state.blobs.put(f"overlays/{job_id}.png", _png((48, 40), seed + 1000))
                state.blobs.put(f"heatmaps/{job_id}.png", _png((48, 40), seed + 2000))
                job.gradcam_status = "done"
                job.rois = {"version": "rois-v1", "rois": ROIS, "image": {"width": 48}}
                job.overlay_key = f"overlays/{job_id}.png"
                job.heatmap_key = f"heatmaps/{job_id}.png"
                job.explain_status = "done"
                job.explanation_source = explanation_source
                job.explanation = {
                    "artifacts": {
                        "texture_smoothness": "The upper-left region is unusually smooth.",
                        "colour_saturation": "Colours in the lower right are over-saturated.",
                    },
                    "model": "evidence-v1",
                }
                if explanation_source == "llm":  # the share of the LLM's claims kept
                    job.explanation["grounded_rate"] = 0.75
                job.finished_at = created + timedelta(milliseconds=200)
            session.add(job)
            session.flush()
            if status == "done":
                for stage, ms in STAGE_MS.items():
                    session.add(
                        JobStage(
                            job_id=job_id,
                            stage=stage,
                            status="failed" if stage in stage_failures else "done",
                            queue=stage,
                            worker=f"{stage}-fake@test",
                            started_at=created,
                            finished_at=created + timedelta(milliseconds=ms),
                            duration_ms=ms,
                        )
                    )
        return job_id

    return make
