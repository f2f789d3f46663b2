"""The HTTP contract: validation errors, authentication, 404s, listing and paging."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Services
from tests.helpers import image_bytes, lose_image_bytes
from tests.integration.conftest import ApiUser, submit


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}


def test_metrics_exposes_jobs_latency_and_queue_depth(client: TestClient, user: ApiUser) -> None:
    submit(client, user, image_bytes(seed=40))
    text = client.get("/metrics").text
    assert 'aigi_jobs{status="queued"}' in text or "aigi_jobs{" in text
    assert 'aigi_queue_depth{queue="classify"}' in text
    assert "aigi_stage_duration_seconds" in text


def test_openapi_documents_versioned_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/jobs" in spec["paths"] and "/v1/jobs/{job_id}" in spec["paths"]
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"hello, this is plain text and not an image at all", "not an image"),
        (image_bytes(fmt="PNG")[:120], "truncated"),
        (image_bytes(fmt="JPEG")[:300], "truncated"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "svg"],
)
def test_bad_uploads_get_422(client: TestClient, user: ApiUser, data: bytes, fragment: str) -> None:
    response = submit(client, user, data)
    assert response.status_code == 422, response.text
    assert fragment.lower() in response.json()["detail"].lower()


def test_oversized_upload_gets_413(client: TestClient, user: ApiUser) -> None:
    state = client.app.state.gateway  # type: ignore[attr-defined]
    limit = state.settings.max_upload_bytes
    state.settings.max_upload_bytes = 10_000
    try:
        response = submit(client, user, image_bytes(size=(200, 200), fmt="PNG"))
    finally:
        state.settings.max_upload_bytes = limit
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]


def test_missing_file_and_bad_options_get_422(client: TestClient, user: ApiUser) -> None:
    no_file = client.post(
        "/v1/jobs", headers=user.headers, data={"explain": "true"}, files={"other": ("x", b"y")}
    )
    assert no_file.status_code == 422
    bad_flag = submit(client, user, image_bytes(), explain="maybe")
    assert bad_flag.status_code == 422 and "explain" in bad_flag.json()["detail"]
    bad_json = client.post("/v1/jobs", headers=user.headers, json={"url": "x"})
    assert bad_json.status_code == 422 and "image_url" in bad_json.json()["detail"]


def test_unauthenticated_and_unknown_keys_get_401(client: TestClient) -> None:
    assert client.get("/v1/jobs").status_code == 401
    bad = client.get("/v1/jobs", headers={"Authorization": "Bearer aigi_nope_nope"})
    assert bad.status_code == 401


def test_unknown_job_is_404(client: TestClient, user: ApiUser) -> None:
    missing = uuid.uuid4()
    for path in ("", "/heatmap.png", "/overlay.png", "/image", "/deliveries"):
        response = client.get(f"/v1/jobs/{missing}{path}", headers=user.headers)
        assert response.status_code == 404, (path, response.text)


def test_other_tenants_job_is_404(client: TestClient, user: ApiUser, other_user: ApiUser) -> None:
    job_id = submit(client, user, image_bytes(seed=41)).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=user.headers).status_code == 200
    for path in ("", "/image", "/deliveries", "/heatmap.png"):
        response = client.get(f"/v1/jobs/{job_id}{path}", headers=other_user.headers)
        assert response.status_code == 404, path
    listed = client.get("/v1/jobs", headers=other_user.headers).json()["items"]
    assert job_id not in {j["id"] for j in listed}


def test_the_submitted_image_is_returned_as_sent(client: TestClient, user: ApiUser) -> None:
    data = image_bytes(seed=42)
    job_id = submit(client, user, data).json()["id"]
    response = client.get(f"/v1/jobs/{job_id}/image", headers=user.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"  # the client's upload
    assert response.content == data


def test_an_image_lost_from_storage_is_404(
    client: TestClient, user: ApiUser, services: Services
) -> None:
    job = submit(client, user, image_bytes(seed=43)).json()
    lose_image_bytes(services.database_url, job["image"]["sha256"])
    response = client.get(f"/v1/jobs/{job['id']}/image", headers=user.headers)
    assert response.status_code == 404
    assert "missing from storage" in response.json()["detail"]


def test_list_filters_and_cursor_paging(client: TestClient, user: ApiUser) -> None:
    ids = [submit(client, user, image_bytes(seed=50 + i)).json()["id"] for i in range(5)]
    first = client.get("/v1/jobs", params={"limit": 2}, headers=user.headers).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    seen = [j["id"] for j in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(
            "/v1/jobs", params={"limit": 2, "cursor": cursor}, headers=user.headers
        ).json()
        seen.extend(j["id"] for j in page["items"])
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids)), "newest first, no duplicates, nothing skipped"
    assert (
        client.get("/v1/jobs", params={"cursor": "garbage!"}, headers=user.headers).status_code
        == 422
    )
    failed = client.get("/v1/jobs", params={"status": "failed"}, headers=user.headers).json()
    assert failed["items"] == []
    assert (
        client.get("/v1/jobs", params={"status": "nonsense"}, headers=user.headers).status_code
        == 422
    )
    assert (
        client.get(
            "/v1/jobs", params={"created_after": "2999-01-01T00:00:00Z"}, headers=user.headers
        ).json()["items"]
        == []
    )


def test_gateway_never_imports_torch() -> None:
    """The gateway sends tasks by name; importing it (and its CLI) loads no torch."""
    import subprocess
    import sys

    code = (
        "import sys; import services.gateway.app, services.cli.main, services.worker; "
        "bad = [m for m in ('torch', 'transformers', 'pytorch_grad_cam') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr or result.stdout
