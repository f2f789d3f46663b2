"""The dashboard, server side: login and sessions, pages, filters, reviews, CSRF and
tenant isolation, against the real app, Postgres and Redis."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes
from pydantic import SecretStr
from redis import Redis

from common.db.session import session_scope
from common.tenants import Principal
from services.gateway.dashboard.auth import SESSION_MAX_AGE, read_session, sign_session
from tests.dashboard.conftest import STAGE_MS, JobMaker, login, login_token, page_csrf
from tests.integration.conftest import ApiUser

FETCH = {"X-Requested-With": "aigi-dashboard"}


def _row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-job-id="([0-9a-f-]{36})"', html)


def _cookie_header(response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    session = [c for c in cookies if c.startswith("aigi_dashboard=")]
    assert len(session) == 1, cookies
    return session[0]


# ---------------------------------------------------------------------------- login
def test_pages_need_a_login(client: TestClient) -> None:
    for path in ("/dashboard", "/dashboard/jobs", f"/dashboard/jobs/{uuid.uuid4()}"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/dashboard/login?next=%2Fdashboard")
    # the page's own polling gets 401 (and reloads), not a redirect to HTML
    assert client.get("/dashboard/jobs/rows", headers=FETCH).status_code == 401
    image = client.get(f"/dashboard/jobs/{uuid.uuid4()}/image", follow_redirects=False)
    assert image.status_code == 303


def test_login_with_a_bad_key_fails(client: TestClient, user: ApiUser) -> None:
    for key in ("aigi_nope_nope", "", user.key + "x"):
        response = login(client, key)
        assert response.status_code == 401, key
        assert "invalid or revoked API key" in response.text
        assert "aigi_dashboard=" not in response.headers.get("set-cookie", "")
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_login_needs_the_login_forms_token(client: TestClient, user: ApiUser) -> None:
    client.get("/dashboard/login")
    no_token = client.post("/dashboard/login", data={"api_key": user.key}, follow_redirects=False)
    assert no_token.status_code == 403
    forged = client.post(
        "/dashboard/login",
        data={"api_key": user.key, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_login_sets_a_signed_httponly_cookie_without_the_key(
    client: TestClient, user: ApiUser
) -> None:
    response = login(client, user.key, next_url="/dashboard/jobs?status=done")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/jobs?status=done"
    header = _cookie_header(response)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "samesite=lax" in header.lower() and "path=/dashboard" in header.lower()
    assert "secure" not in attributes, "plain http: no Secure flag (it would never be sent)"
    value = header.split(";")[0].split("=", 1)[1]
    assert user.key not in value
    _, claims = URLSafeTimedSerializer("not the secret").loads_unsafe(value)  # unverified
    assert claims["t"] == str(user.tenant_id)
    assert set(claims) == {"k", "t", "n"}, "only ids and a nonce (and the signed login time)"
    settings = client.app.state.gateway.settings  # type: ignore[attr-defined]
    read = read_session(settings, value)
    assert read is not None and abs(read.issued_at - time.time()) < 60, "signed at login"
    assert client.get("/dashboard").status_code == 200


def test_cookie_is_secure_over_https(client: TestClient, user: ApiUser) -> None:
    with TestClient(client.app, base_url="https://dashboard.test") as https:
        response = login(https, user.key)
        assert response.status_code == 303
        assert "secure" in _cookie_header(response).lower()


def test_login_never_redirects_off_site(client: TestClient, user: ApiUser) -> None:
    for target in ("https://evil.test/", "//evil.test/dashboard", "/v1/jobs", "/dashboard\\@x"):
        response = login(client, user.key, next_url=target)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard", target


def _session_value(response) -> str:
    return _cookie_header(response).split(";")[0].split("=", 1)[1]


def _with_cookie(client: TestClient, value: str) -> int:
    """The dashboard's answer to a request carrying only this session cookie."""
    client.cookies.clear()
    client.cookies.set("aigi_dashboard", value, path="/dashboard")
    return client.get("/dashboard", follow_redirects=False).status_code


def test_tampered_or_foreign_cookie_is_refused(client: TestClient, user: ApiUser) -> None:
    value = _session_value(login(client, user.key))
    assert _with_cookie(client, value) == 200
    payload, signed_at, signature = value.rsplit(".", 2)  # the payload may be zlib'd: ".eJ…"
    # another tenant's id under the original signature
    _, claims = URLSafeTimedSerializer("not the secret").loads_unsafe(value)
    claims["t"] = str(uuid.uuid4())
    forged = URLSafeTimedSerializer("not the secret").dumps(claims).rsplit(".", 2)[0]
    assert _with_cookie(client, f"{forged}.{signed_at}.{signature}") == 303
    # the same claims signed with another secret
    settings = client.app.state.gateway.settings  # type: ignore[attr-defined]
    principal = Principal(user.tenant_id, user.tenant_name, uuid.UUID(claims["k"]), "default")
    foreign = settings.model_copy(update={"secret_key": SecretStr("another secret " * 4)})
    assert _with_cookie(client, sign_session(foreign, principal)) == 303
    # a signed cookie from another purpose's salt, a changed signature, a changed time, garbage
    other_salt = URLSafeTimedSerializer(
        settings.secret_key.get_secret_value(), salt="aigi-dashboard:csrf"
    ).dumps(claims)
    assert _with_cookie(client, other_salt) == 303
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert _with_cookie(client, f"{payload}.{signed_at}.{flipped}") == 303
    earlier = base64_encode(int_to_bytes(int(time.time()) - 10)).decode()
    assert earlier != signed_at
    assert _with_cookie(client, f"{payload}.{earlier}.{signature}") == 303
    for garbage in ("garbage", "a.b.c", "", "..."):
        assert _with_cookie(client, garbage) == 303, garbage


def test_an_expired_cookie_is_refused(client: TestClient, user: ApiUser) -> None:
    """A cookie is good for SESSION_MAX_AGE after login; then the dashboard asks again."""
    settings = client.app.state.gateway.settings  # type: ignore[attr-defined]
    key_id = uuid.UUID(
        URLSafeTimedSerializer("x").loads_unsafe(_session_value(login(client, user.key)))[1]["k"]
    )
    principal = Principal(user.tenant_id, user.tenant_name, key_id, "default")
    now = time.time()
    nearly = sign_session(settings, principal, now=now - SESSION_MAX_AGE + 60)
    expired = sign_session(settings, principal, now=now - SESSION_MAX_AGE - 60)
    assert _with_cookie(client, nearly) == 200
    assert _with_cookie(client, expired) == 303
    client.cookies.set("aigi_dashboard", expired, path="/dashboard")
    assert client.get("/dashboard/jobs/rows", headers=FETCH).status_code == 401
    # the same rule at the edges, on a fixed clock
    issued = sign_session(settings, principal, now=now)
    assert read_session(settings, issued, now=now + SESSION_MAX_AGE) is not None
    assert read_session(settings, issued, now=now + SESSION_MAX_AGE + 2) is None
    # a little clock skew between replicas is tolerated; a far-future cookie is not
    assert read_session(settings, issued, now=now - 30) is not None
    assert read_session(settings, issued, now=now - 3600) is None


def test_revoking_the_key_ends_the_session(client: TestClient, services, user: ApiUser) -> None:
    from common.db.models import ApiKey
    from common.tenants import hash_key, revoke_key

    assert login(client, user.key).status_code == 303
    assert client.get("/dashboard").status_code == 200
    with session_scope(services.database_url) as session:
        from sqlalchemy import select

        key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(user.key)))
        assert key is not None
        revoke_key(session, str(key.id))
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    assert client.get("/dashboard/jobs/rows", headers=FETCH).status_code == 401


def test_logout_needs_csrf_and_ends_the_session(dash: TestClient) -> None:
    assert dash.post("/dashboard/logout", follow_redirects=False).status_code == 403
    assert (
        dash.post(
            "/dashboard/logout", data={"csrf_token": "forged"}, follow_redirects=False
        ).status_code
        == 403
    )
    assert dash.get("/dashboard").status_code == 200, "a refused logout keeps the session"
    token = page_csrf(dash)
    response = dash.post("/dashboard/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert dash.get("/dashboard", follow_redirects=False).status_code == 303


# ---------------------------------------------------------------------------- pages
def test_overview_renders_charts_latency_queues_and_sources(
    dash: TestClient, user: ApiUser, make_job: JobMaker
) -> None:
    make_job(user.tenant_id, seed=1, label=1, tier="mostly fake", explanation_source="llm")
    make_job(user.tenant_id, seed=2, label=0, tier="probably real")
    make_job(user.tenant_id, seed=3, stage_failures=("gradcam",))
    make_job(user.tenant_id, seed=4, status="failed", label=None)
    page = dash.get("/dashboard")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'data-testid="total-jobs">4<', html)
    assert re.search(r'data-testid="failed-jobs">1<', html)
    # the charts: inline SVG, one coloured segment per verdict / tier
    assert html.count('<svg class="chart"') == 3
    assert 'data-series="FAKE" data-count="2"' in html
    assert 'data-series="REAL" data-count="1"' in html
    assert 'data-series="probably real" data-count="1"' in html
    assert 'data-series="no verdict" data-count="1"' in html
    # latency percentiles per stage from job_stages.duration_ms
    for stage, ms in STAGE_MS.items():
        row = re.search(rf'<tr data-stage="{stage}">(.*?)</tr>', html, re.S)
        assert row, stage
        assert f"{ms:.1f} ms" in row.group(1) or f"{ms:.0f} ms" in row.group(1)
    gradcam = re.search(r'<tr data-stage="gradcam">(.*?)</tr>', html, re.S)
    assert gradcam and '<td class="num bad">1</td>' in gradcam.group(1)
    # queue depths (LLEN per queue) and the explanation source share
    for queue in ("classify", "gradcam", "explain", "notify"):
        assert re.search(rf'<tr data-queue="{queue}"><td>{queue}</td><td class="num">\d+<', html)
    assert 'data-series="llm" data-count="1"' in html
    assert 'data-series="evidence" data-count="2"' in html
    assert re.search(r'data-testid="llm-share">33%<', html)
    for window in ("7d", "30d"):
        assert dash.get("/dashboard", params={"window": window}).status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["cache-control"] == "no-store"


def test_overview_survives_redis_being_down(dash: TestClient) -> None:
    state = dash.app.state.gateway  # type: ignore[attr-defined]
    real = state.redis
    state.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        page = dash.get("/dashboard")
    finally:
        state.redis.close()
        state.redis = real
    assert page.status_code == 200
    assert page.text.count("Redis unavailable") == 4


def test_job_detail_shows_image_overlay_rois_explanation_and_timings(
    dash: TestClient, user: ApiUser, make_job: JobMaker
) -> None:
    job_id = make_job(user.tenant_id, seed=5)
    page = dash.get(f"/dashboard/jobs/{job_id}")
    assert page.status_code == 200
    html = page.text
    assert f'src="/dashboard/jobs/{job_id}/image"' in html
    assert f'src="/dashboard/jobs/{job_id}/overlay.png"' in html
    assert 'id="overlay-toggle"' in html and 'class="overlay hidden"' in html
    # ROI boxes over the image, in image pixels (box_normalized x width/height)
    assert 'viewBox="0 0 48 40"' in html
    assert html.count('<g class="roi"') == 2
    assert '<rect x="4.0" y="6.0" width="16.0" height="16.0"' in html
    # the ROI table with its evidence, the explanation, the timings
    assert "high_freq_energy" in html and "(1.8×)" in html and "41.0%" in html
    assert "texture_smoothness" in html and "unusually smooth" in html
    assert "source <b>evidence</b>" in html
    for stage in STAGE_MS:
        assert f'<tr data-stage="{stage}">' in html
    assert "No webhook deliveries" in html
    assert "mostly fake" in html and "0.930" in html
    for path, kind in (("image", "image/png"), ("overlay.png", "image/png")):
        blob = dash.get(f"/dashboard/jobs/{job_id}/{path}")
        assert blob.status_code == 200 and blob.headers["content-type"] == kind
        assert blob.content.startswith(b"\x89PNG")
    assert dash.get(f"/dashboard/jobs/{job_id}/heatmap.png").status_code == 200


def test_job_detail_shows_how_grounded_an_llm_explanation_is(
    dash: TestClient, user: ApiUser, make_job: JobMaker
) -> None:
    llm = make_job(user.tenant_id, seed=906, explanation_source="llm")
    evidence = make_job(user.tenant_id, seed=907)
    assert "grounded 75%" in dash.get(f"/dashboard/jobs/{llm}").text
    assert " · grounded " not in dash.get(f"/dashboard/jobs/{evidence}").text


def test_job_detail_lists_webhook_deliveries(
    dash: TestClient, user: ApiUser, make_job: JobMaker, services
) -> None:
    from common.db.models import DeliveryAttempt, WebhookDelivery

    job_id = make_job(user.tenant_id, seed=6)
    with session_scope(services.database_url) as session:
        delivery = WebhookDelivery(
            id=uuid.uuid4(),
            job_id=job_id,
            tenant_id=user.tenant_id,
            event="done",
            url="http://127.0.0.1:9/hook",
            status="failed",
            attempts=1,
            last_status_code=500,
            last_error="HTTP 500",
        )
        session.add(delivery)
        session.flush()
        session.add(DeliveryAttempt(delivery_id=delivery.id, status_code=500, latency_ms=12.5))
    html = dash.get(f"/dashboard/jobs/{job_id}").text
    assert 'data-testid="deliveries"' in html
    assert "http://127.0.0.1:9/hook" in html and "HTTP 500" in html and "12.5 ms" in html


def test_job_list_filters_search_and_paging(
    dash: TestClient, user: ApiUser, other_user: ApiUser, make_job: JobMaker
) -> None:
    old = datetime(2024, 3, 10, 12, tzinfo=UTC)
    fake = make_job(user.tenant_id, seed=10, label=1, tier="mostly fake")
    real = make_job(user.tenant_id, seed=11, label=0, tier="probably real")
    running = make_job(user.tenant_id, seed=12, status="classifying", label=None)
    dated = make_job(user.tenant_id, seed=13, label=0, tier="mostly real", created_at=old)
    foreign = make_job(other_user.tenant_id, seed=14)

    def ids(**params: str) -> set[str]:
        response = dash.get("/dashboard/jobs", params=params)
        assert response.status_code == 200, response.text
        return set(_row_ids(response.text))

    everything = ids()
    assert {str(fake), str(real), str(running), str(dated)} == everything
    assert str(foreign) not in everything
    assert ids(status="classifying") == {str(running)}
    assert ids(label="FAKE") == {str(fake)}
    assert ids(label="REAL") == {str(real), str(dated)}
    assert ids(tier="probably real") == {str(real)}
    assert ids(review="unreviewed") == everything
    assert ids(review="confirmed") == set()
    assert ids(**{"from": "2024-03-10", "to": "2024-03-10"}) == {str(dated)}
    assert ids(**{"to": "2024-03-09"}) == set()
    assert str(dated) not in ids(**{"from": "2024-03-11"})
    # "any" (empty) values and unknown values are not errors
    assert ids(status="", label="", tier="", review="", q="") == everything
    unknown = dash.get("/dashboard/jobs", params={"status": "nonsense", "from": "yesterday"})
    assert unknown.status_code == 200 and "unknown status" in unknown.text
    assert set(_row_ids(unknown.text)) == everything
    # search by job id (whole or leading part) or by the image's sha256
    assert ids(q=str(real)) == {str(real)}
    assert ids(q=str(real)[:8]) == {str(real)}
    with session_scope(dash.app.state.gateway.settings.database_url) as session:  # type: ignore[attr-defined]
        from common.db.models import Job

        sha = session.get(Job, fake).image_sha256  # type: ignore[union-attr]
    assert ids(q=sha) == {str(fake)}
    assert ids(q=sha[:12].upper()) == {str(fake)}
    assert ids(q=str(foreign)) == set(), "search never crosses tenants"
    assert ids(q="not hex!") == set()


def test_job_list_pages(dash: TestClient, user: ApiUser, make_job: JobMaker) -> None:
    from services.gateway.dashboard.queries import PAGE_SIZE

    start = datetime.now(UTC) - timedelta(hours=1)
    made = [
        make_job(user.tenant_id, seed=100 + i, created_at=start + timedelta(seconds=i))
        for i in range(PAGE_SIZE + 2)
    ]
    first = dash.get("/dashboard/jobs", params={"label": "FAKE"})
    assert _row_ids(first.text) == [str(j) for j in reversed(made)][:PAGE_SIZE]
    assert "page 1 of 2" in first.text and 'rel="next"' in first.text
    second = dash.get("/dashboard/jobs", params={"label": "FAKE", "page": "2"})
    assert _row_ids(second.text) == [str(j) for j in reversed(made)][PAGE_SIZE:]
    assert "page 2 of 2" in second.text and 'rel="prev"' in second.text
    assert "label=FAKE" in re.search(r'rel="prev" href="([^"]+)"', second.text).group(1)  # type: ignore[union-attr]
    beyond = dash.get("/dashboard/jobs", params={"label": "FAKE", "page": "99"})
    assert _row_ids(beyond.text) == _row_ids(second.text), "past the end: the last page"


def test_rows_partial_says_whether_to_keep_polling(
    dash: TestClient, user: ApiUser, make_job: JobMaker
) -> None:
    done = make_job(user.tenant_id, seed=20)
    rows = dash.get("/dashboard/jobs/rows", headers=FETCH)
    assert rows.status_code == 200
    assert rows.text.lstrip().startswith('<tbody id="job-rows"')
    assert 'data-pending="false"' in rows.text and 'data-idle-poll="true"' in rows.text
    running = make_job(user.tenant_id, seed=21, status="explaining")
    rows = dash.get("/dashboard/jobs/rows", headers=FETCH)
    assert 'data-pending="true"' in rows.text
    assert set(_row_ids(rows.text)) == {str(done), str(running)}
    filtered = dash.get("/dashboard/jobs/rows", params={"status": "done"}, headers=FETCH)
    assert 'data-pending="false"' in filtered.text
    assert 'data-src="/dashboard/jobs/rows?status=done"' in filtered.text
    page = dash.get("/dashboard/jobs")
    assert '<script src="/dashboard/static/dashboard.js" defer></script>' in page.text
    script = dash.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200 and "job-rows" in script.text
    assert dash.get("/dashboard/static/dashboard.css").status_code == 200


# ---------------------------------------------------------------------------- reviews
def test_review_in_the_dashboard_is_stored_with_who_and_when(
    dash: TestClient, user: ApiUser, make_job: JobMaker, services
) -> None:
    from sqlalchemy import select

    from common.db.models import Review

    job_id = make_job(user.tenant_id, seed=30)
    token = page_csrf(dash, f"/dashboard/jobs/{job_id}")
    before = datetime.now(UTC)
    response = dash.post(
        f"/dashboard/jobs/{job_id}/review",
        data={"decision": "overturned", "note": "  a real photo  ", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/dashboard/jobs/{job_id}?saved=1#review"
    with session_scope(services.database_url) as session:
        review = session.scalar(select(Review).where(Review.job_id == job_id))
        assert review is not None
        assert review.decision == "overturned" and review.note == "a real photo"
        assert review.reviewer == f"default @ {user.tenant_name}"
        assert review.tenant_id == user.tenant_id
        assert review.updated_at >= before - timedelta(seconds=5)
    page = dash.get(f"/dashboard/jobs/{job_id}?saved=1").text
    assert "Review saved." in page and f"by <b>default @ {user.tenant_name}</b>" in page
    # the same review through the JSON API
    api = dash.get(f"/v1/jobs/{job_id}/review", headers=user.headers)
    assert api.status_code == 200
    body = api.json()
    assert body["decision"] == "overturned" and body["true_label"] == "REAL"
    assert body["reviewer"] == f"default @ {user.tenant_name}"
    # review state is filterable in the dashboard and in the API
    listed = set(_row_ids(dash.get("/dashboard/jobs", params={"review": "overturned"}).text))
    assert listed == {str(job_id)}
    assert str(job_id) not in _row_ids(
        dash.get("/dashboard/jobs", params={"review": "unreviewed"}).text
    )
    api_list = dash.get("/v1/jobs", params={"review": "overturned"}, headers=user.headers)
    assert [j["id"] for j in api_list.json()["items"]] == [str(job_id)]
    # a second review replaces the first
    token = page_csrf(dash, f"/dashboard/jobs/{job_id}")
    dash.post(
        f"/dashboard/jobs/{job_id}/review",
        data={"decision": "confirmed", "note": "", "csrf_token": token},
    )
    again = dash.get(f"/v1/jobs/{job_id}/review", headers=user.headers).json()
    assert again["decision"] == "confirmed" and again["note"] is None
    assert again["true_label"] == "FAKE"


def test_review_needs_the_sessions_csrf_token(
    dash: TestClient, other_dash: TestClient, user: ApiUser, make_job: JobMaker
) -> None:
    job_id = make_job(user.tenant_id, seed=31)
    path = f"/dashboard/jobs/{job_id}/review"
    assert dash.post(path, data={"decision": "confirmed"}).status_code == 403
    assert dash.post(path, data={"decision": "confirmed", "csrf_token": "x"}).status_code == 403
    foreign_token = page_csrf(other_dash)  # valid, but for another session
    refused = dash.post(path, data={"decision": "confirmed", "csrf_token": foreign_token})
    assert refused.status_code == 403
    # a fresh login (a new session) invalidates the old page's token
    old_token = page_csrf(dash)
    assert login(dash, user.key).status_code == 303
    assert (
        dash.post(path, data={"decision": "confirmed", "csrf_token": old_token}).status_code == 403
    )
    assert dash.get(f"/v1/jobs/{job_id}/review", headers=user.headers).status_code == 404
    ok = dash.post(path, data={"decision": "confirmed", "csrf_token": page_csrf(dash)})
    assert ok.status_code == 200 and "Review saved." in ok.text


def test_review_before_a_verdict_or_with_a_bad_decision(
    dash: TestClient, user: ApiUser, make_job: JobMaker
) -> None:
    job_id = make_job(user.tenant_id, seed=32, status="queued", label=None)
    page = dash.get(f"/dashboard/jobs/{job_id}").text
    assert "<fieldset disabled>" in page
    token = login_token(page)
    path = f"/dashboard/jobs/{job_id}/review"
    early = dash.post(path, data={"decision": "confirmed", "csrf_token": token})
    assert early.status_code == 409 and "no verdict yet" in early.text
    api = dash.put(
        f"/v1/jobs/{job_id}/review", headers=user.headers, json={"decision": "confirmed"}
    )
    assert api.status_code == 409
    done = make_job(user.tenant_id, seed=33)
    bad = dash.post(
        f"/dashboard/jobs/{done}/review", data={"decision": "maybe", "csrf_token": token}
    )
    assert bad.status_code == 422 and "decision must be one of" in bad.text
    bad_api = dash.put(f"/v1/jobs/{done}/review", headers=user.headers, json={"decision": "maybe"})
    assert bad_api.status_code == 422


def test_review_api(client: TestClient, user: ApiUser, make_job: JobMaker) -> None:
    job_id = make_job(user.tenant_id, seed=34, label=0, tier="mostly real")
    path = f"/v1/jobs/{job_id}/review"
    assert client.get(path, headers=user.headers).status_code == 404
    assert client.put(path, json={"decision": "confirmed"}).status_code == 401
    put = client.put(
        path, headers=user.headers, json={"decision": "overturned", "note": "clearly generated"}
    )
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["job_id"] == str(job_id) and body["decision"] == "overturned"
    assert body["note"] == "clearly generated" and body["true_label"] == "FAKE"
    assert body["reviewer"] == f"default @ {user.tenant_name}"
    assert datetime.fromisoformat(body["created_at"]) <= datetime.fromisoformat(body["updated_at"])
    assert client.get(path, headers=user.headers).json() == body
    too_long = client.put(
        path, headers=user.headers, json={"decision": "confirmed", "note": "x" * 2001}
    )
    assert too_long.status_code == 422
    spec = client.get("/openapi.json").json()["paths"]
    assert {"get", "put"} <= set(spec["/v1/jobs/{job_id}/review"])
    assert not [p for p in spec if p.startswith("/dashboard")], "the dashboard is not API"


# ---------------------------------------------------------------------------- tenants
def test_another_tenants_job_is_404_in_the_dashboard(
    dash: TestClient, other_dash: TestClient, user: ApiUser, other_user: ApiUser, make_job: JobMaker
) -> None:
    job_id = make_job(user.tenant_id, seed=40)
    assert dash.get(f"/dashboard/jobs/{job_id}").status_code == 200
    page = other_dash.get(f"/dashboard/jobs/{job_id}")
    assert page.status_code == 404 and "There is no job" in page.text
    assert str(user.tenant_name) not in page.text
    for path in ("image", "overlay.png", "heatmap.png"):
        assert other_dash.get(f"/dashboard/jobs/{job_id}/{path}").status_code == 404, path
    token = page_csrf(other_dash)
    review = other_dash.post(
        f"/dashboard/jobs/{job_id}/review", data={"decision": "confirmed", "csrf_token": token}
    )
    assert review.status_code == 404
    assert str(job_id) not in other_dash.get("/dashboard/jobs").text
    searched = other_dash.get("/dashboard/jobs", params={"q": str(job_id)})
    assert _row_ids(searched.text) == []
    overview = other_dash.get("/dashboard").text
    assert re.search(r'data-testid="total-jobs">0<', overview)
    # the review API is scoped the same way
    path = f"/v1/jobs/{job_id}/review"
    put = dash.put(path, headers=other_user.headers, json={"decision": "confirmed"})
    assert put.status_code == 404
    assert dash.get(path, headers=other_user.headers).status_code == 404
    assert dash.get(path, headers=user.headers).status_code == 404, "nothing was stored"


# ---------------------------------------------------------------------------- views
def test_reporting_views_return_rows(
    dash: TestClient, user: ApiUser, make_job: JobMaker, services
) -> None:
    from sqlalchemy import text

    fake = make_job(user.tenant_id, seed=50, label=1, tier="mostly fake")
    real = make_job(
        user.tenant_id, seed=51, label=0, tier="probably real", explanation_source="llm"
    )
    queued = make_job(user.tenant_id, seed=52, status="queued", label=None)
    put = dash.put(f"/v1/jobs/{fake}/review", headers=user.headers, json={"decision": "overturned"})
    assert put.status_code == 200
    with session_scope(services.database_url) as session:
        rows = {
            str(r.job_id): r
            for r in session.execute(
                text("SELECT * FROM v_jobs WHERE tenant_id = :t"), {"t": user.tenant_id}
            )
        }
        assert set(rows) == {str(fake), str(real), str(queued)}
        row = rows[str(fake)]
        assert row.label_name == "FAKE" and row.tier == "mostly fake"
        assert row.review_state == "overturned" and row.true_label == 0
        assert row.reviewer == f"default @ {user.tenant_name}"
        assert row.classify_ms == STAGE_MS["classify"] and row.gradcam_ms == STAGE_MS["gradcam"]
        assert row.roi_count == 2 and row.explanation_source == "evidence"
        assert abs(row.total_ms - 200.0) < 1 and abs(row.time_to_verdict_ms - 50.0) < 1
        assert rows[str(real)].explanation_source == "llm"
        assert rows[str(real)].review_state == "unreviewed"
        assert rows[str(queued)].label_name is None and rows[str(queued)].stage_runs == 0

        latency = session.execute(
            text("SELECT * FROM v_stage_latency WHERE hour >= now() - interval '2 hours'")
        ).all()
        stages = {r.stage for r in latency}
        assert set(STAGE_MS) <= stages
        for r in latency:
            assert r.runs >= 1 and r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms

        daily = session.execute(
            text("SELECT * FROM v_daily_verdicts WHERE tenant_id = :t"), {"t": user.tenant_id}
        ).one()
        assert daily.jobs == 3 and daily.fake_jobs == 1 and daily.real_jobs == 1
        assert daily.no_verdict_jobs == 1 and daily.mostly_fake == 1 and daily.probably_real == 1
        assert daily.reviewed == 1 and daily.overturned == 1 and daily.confirmed == 0
        assert daily.explained_by_llm == 1 and daily.explained_by_evidence == 1
        assert daily.day == datetime.now(UTC).date()


def test_views_come_and_go_with_the_migration(services) -> None:
    import psycopg
    from sqlalchemy import create_engine, inspect

    from common.db.migrate import downgrade, upgrade

    admin_url = services.database_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"aigi_views_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = services.database_url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(url)
    views = {"v_jobs", "v_stage_latency", "v_daily_verdicts"}
    try:
        upgrade(url)
        assert views <= set(inspect(engine).get_view_names())
        downgrade(url, "0001")
        assert not views & set(inspect(engine).get_view_names())
        assert "jobs" in inspect(engine).get_table_names()
        upgrade(url)
        assert views <= set(inspect(engine).get_view_names())
    finally:
        engine.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
