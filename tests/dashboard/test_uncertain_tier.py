"""The fifth tier in the dashboard: badge, filter, overview chart and job detail."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import update

from common.db.models import Job
from common.db.session import session_scope
from tests.dashboard.conftest import JobMaker
from tests.integration.conftest import ApiUser


def test_uncertain_jobs_are_badged_filtered_charted_and_explained(
    dash: TestClient, user: ApiUser, make_job: JobMaker
) -> None:
    uncertain = make_job(user.tenant_id, seed=60, label=1, probability=0.55, tier="uncertain")
    sure = make_job(user.tenant_id, seed=61, label=1, probability=0.97, tier="mostly fake")
    database_url = dash.app.state.gateway.settings.database_url  # type: ignore[attr-defined]
    with session_scope(database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == uncertain)
            .values(verdict_reason="outside the training distribution", ood_score=3.25)
        )

    page = dash.get("/dashboard/jobs", params={"tier": "uncertain"})
    assert page.status_code == 200
    rows = re.findall(r'<tr data-job-id="([0-9a-f-]+)"', page.text)
    assert rows == [str(uncertain)]
    assert '<option value="uncertain" selected>uncertain</option>' in page.text
    badge = re.search(r'<span class="pill tier-uncertain" title="([^"]*)"', page.text)
    assert badge and badge.group(1) == "outside the training distribution"
    everything = dash.get("/dashboard/jobs").text
    assert {str(uncertain), str(sure)} <= set(re.findall(r'data-job-id="([0-9a-f-]+)"', everything))

    overview = dash.get("/dashboard").text
    assert 'data-series="uncertain" data-count="1"' in overview
    assert 'data-series="mostly fake" data-count="1"' in overview

    detail = dash.get(f"/dashboard/jobs/{uncertain}").text
    assert 'data-testid="uncertain"' in detail and "outside the training distribution" in detail
    assert "3.25" in detail
