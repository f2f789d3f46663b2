"""One job filter for the API and the dashboard (services/gateway/job_queries.py): both
lists answer the same jobs for the same filter, and the API documents and validates
the values their single sources name."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from common.db.models import JobStatus
from common.detector.config import ALL_TIERS, LABELS
from common.reviews import DECISIONS
from tests.dashboard.conftest import JobMaker
from tests.integration.conftest import ApiUser


def _api_ids(client: TestClient, user: ApiUser, **params: str) -> set[str]:
    response = client.get("/v1/jobs", params={"limit": "100", **params}, headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None, "one page holds every job of this test"
    return {item["id"] for item in body["items"]}


def _dashboard_ids(dash: TestClient, **params: str) -> set[str]:
    response = dash.get("/dashboard/jobs", params=params)
    assert response.status_code == 200, response.text
    assert "showing all" not in response.text, "the dashboard refused a filter value"
    return set(re.findall(r'<tr data-job-id="([0-9a-f-]{36})"', response.text))


def test_the_api_and_the_dashboard_filter_alike(
    dash: TestClient, user: ApiUser, other_user: ApiUser, make_job: JobMaker
) -> None:
    fake = str(make_job(user.tenant_id, seed=210, label=1, tier="mostly fake"))
    real = str(make_job(user.tenant_id, seed=211, label=0, tier="probably real"))
    running = str(make_job(user.tenant_id, seed=212, status="classifying", label=None, tier=None))
    dated = str(
        make_job(
            user.tenant_id,
            seed=213,
            label=0,
            tier="mostly real",
            created_at=datetime(2024, 3, 10, 12, tzinfo=UTC),
        )
    )
    make_job(other_user.tenant_id, seed=214)
    review = dash.put(
        f"/v1/jobs/{real}/review", headers=user.headers, json={"decision": "overturned"}
    )
    assert review.status_code == 200, review.text
    mine = {fake, real, running, dated}

    cases: list[tuple[dict[str, str], dict[str, str], set[str]]] = [
        ({}, {}, mine),
        ({"status": "classifying"}, {"status": "classifying"}, {running}),
        ({"label": "FAKE"}, {"label": "FAKE"}, {fake}),
        ({"label": "REAL"}, {"label": "REAL"}, {real, dated}),
        ({"tier": "probably real"}, {"tier": "probably real"}, {real}),
        ({"review": "unreviewed"}, {"review": "unreviewed"}, mine - {real}),
        ({"review": "overturned"}, {"review": "overturned"}, {real}),
        ({"review": "confirmed"}, {"review": "confirmed"}, set()),
        (
            {"created_after": "2024-03-10T00:00:00Z", "created_before": "2024-03-11T00:00:00Z"},
            {"from": "2024-03-10", "to": "2024-03-10"},
            {dated},
        ),
        (
            {"label": "REAL", "created_after": "2024-03-11T00:00:00Z"},
            {"label": "REAL", "from": "2024-03-11"},
            {real},
        ),
    ]
    for api_params, dashboard_params, expected in cases:
        assert _api_ids(dash, user, **api_params) == expected, api_params
        assert _dashboard_ids(dash, **dashboard_params) == expected, dashboard_params


def _enum(schema: dict[str, Any]) -> list[str]:
    """The enum of a query parameter's schema (``anyOf: [{enum}, {null}]`` when optional)."""
    for option in [schema, *schema.get("anyOf", [])]:
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"no enum in {schema}")


def test_the_list_parameters_enums_are_the_single_sources(
    client: TestClient, user: ApiUser
) -> None:
    spec = client.get("/openapi.json").json()
    parameters = {p["name"]: p["schema"] for p in spec["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert _enum(parameters["status"]) == list(JobStatus.ALL)
    assert _enum(parameters["label"]) == list(LABELS)
    assert _enum(parameters["tier"]) == list(ALL_TIERS)
    assert _enum(parameters["review"]) == ["unreviewed", *DECISIONS]
    for name, value in (
        ("status", "finished"),
        ("label", "fake"),
        ("tier", "very fake"),
        ("review", "rejected"),
    ):
        response = client.get("/v1/jobs", params={name: value}, headers=user.headers)
        assert response.status_code == 422, (name, response.text)
    uncertain = client.get("/v1/jobs", params={"tier": "uncertain"}, headers=user.headers)
    assert uncertain.status_code == 200, uncertain.text
