"""Malformed host names and NUL characters, sent as a hostile client would: each answers
a 4xx JSON error (or is a recorded, failed webhook attempt), never a 500."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from common.netguard import UnsafeURLError, URLPolicy
from tests.edge.conftest import Gateway, RawConnection
from tests.helpers import image_bytes
from tests.integration.conftest import ApiUser

LONG_LABEL = "http://" + "a" * 64 + ".example/x.png"
BAD_HOSTS = [
    LONG_LABEL,
    "http://a..example/x.png",
    "http://.example/x.png",
    "http://" + ".".join(["a" * 60] * 5) + "/x.png",  # 304 characters
]


# ---------------------------------------------------------------------------- host names
@pytest.mark.parametrize("url", BAD_HOSTS)
def test_the_url_guard_refuses_malformed_host_names(url: str) -> None:
    """The system resolver is the one that raised UnicodeError for these."""
    with pytest.raises(UnsafeURLError, match="not a valid host name"):
        URLPolicy().check(url)


@pytest.mark.parametrize("field", ["image_url", "callback_url"])
@pytest.mark.parametrize("url", BAD_HOSTS[:2])
def test_malformed_host_names_answer_422(
    gateway: Gateway, edge_user: ApiUser, field: str, url: str
) -> None:
    body = {"image_url": url} if field == "image_url" else {"image_url": url, field: url}
    response = httpx.post(f"{gateway.url}/v1/jobs", headers=edge_user.headers, json=body)
    assert response.status_code == 422, response.text
    assert "not a valid host name" in response.json()["detail"]
    callback = httpx.post(
        f"{gateway.url}/v1/jobs",
        headers=edge_user.headers,
        files={"file": ("x.png", image_bytes(seed=3), "image/png")},
        data={"callback_url": url},
    )
    assert callback.status_code == 422 and "callback_url refused" in callback.json()["detail"]


@pytest.fixture
def redirector() -> Iterator[str]:
    """A server (on an allowed host) whose every answer redirects to a malformed host."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", LONG_LABEL)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/image.png"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_a_malformed_host_answers_422(
    gateway: Gateway, edge_user: ApiUser, redirector: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/jobs", headers=edge_user.headers, json={"image_url": redirector}
    )
    assert response.status_code == 422, response.text
    assert "not a valid host name" in response.json()["detail"]


# ---------------------------------------------------------------------------- webhooks
def _delivery_to(database_url: str, user: ApiUser, url: str) -> uuid.UUID:
    """A job of ``user``'s tenant whose default callback is ``url`` (written as an older
    version could have stored it), and its pending delivery."""
    from sqlalchemy import update

    from common.db.models import Tenant
    from common.db.session import session_scope
    from common.settings import Settings
    from services.notifier.service import create_delivery
    from services.runtime import WorkerContext

    with session_scope(database_url) as session:
        session.execute(
            update(Tenant).where(Tenant.id == user.tenant_id).values(default_callback_url=url)
        )
    job_id = _submit(user)
    delivery_id = create_delivery(WorkerContext(Settings()), job_id, "done")
    assert delivery_id is not None
    return delivery_id


def _submit(user: ApiUser) -> uuid.UUID:
    from fastapi.testclient import TestClient

    from common.settings import Settings
    from services.gateway.app import create_app

    with TestClient(create_app(Settings()), base_url="http://127.0.0.1:8000") as client:
        response = client.post(
            "/v1/jobs",
            headers=user.headers,
            files={"file": ("x.png", image_bytes(seed=int(uuid.uuid4()) % 10_000), "image/png")},
        )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (LONG_LABEL, "not a valid host name"),
        ("http://a..example/hook", "not a valid host name"),
        ("http://10.0.0.7/hook", "forbidden address"),
    ],
)
def test_a_delivery_to_an_unusable_url_is_one_recorded_failed_attempt(
    edge_user: ApiUser, stack_env: dict[str, str], url: str, reason: str
) -> None:
    """Not a crash that leaves it pending with 0 attempts, and not 'attempts: 6' after
    one try: one attempt, recorded with the reason, and the delivery failed for good."""
    from common.db.models import DeliveryAttempt, WebhookDelivery
    from common.db.session import session_scope
    from common.settings import Settings
    from services.notifier.service import deliver
    from services.runtime import WorkerContext

    delivery_id = _delivery_to(stack_env["AIGI_DATABASE_URL"], edge_user, url)
    assert deliver(WorkerContext(Settings()), str(delivery_id)) == "failed"
    with session_scope(stack_env["AIGI_DATABASE_URL"]) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        attempts = session.query(DeliveryAttempt).filter_by(delivery_id=delivery_id).all()
        assert delivery.status == "failed" and delivery.attempts == 1
        assert delivery.next_attempt_at is None  # the scheduler never picks it again
        assert len(attempts) == 1 and reason in (attempts[0].error or "")


def test_only_a_failed_delivery_can_be_resent(
    gateway: Gateway, edge_user: ApiUser, stack_env: dict[str, str]
) -> None:
    from sqlalchemy import update

    from common.db.models import WebhookDelivery
    from common.db.session import session_scope

    delivery_id = _delivery_to(stack_env["AIGI_DATABASE_URL"], edge_user, "http://10.0.0.7/h")
    with session_scope(stack_env["AIGI_DATABASE_URL"]) as session:
        job_id = session.get(WebhookDelivery, delivery_id).job_id  # type: ignore[union-attr]
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(status="succeeded", attempts=1, next_attempt_at=None)
        )
    url = f"{gateway.url}/v1/jobs/{job_id}/deliveries/{delivery_id}/resend"
    succeeded = httpx.post(url, headers=edge_user.headers)
    assert succeeded.status_code == 409 and "succeeded" in succeeded.json()["detail"]
    with session_scope(stack_env["AIGI_DATABASE_URL"]) as session:
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(status="failed")
        )
    assert httpx.post(url, headers=edge_user.headers).status_code == 202


# ---------------------------------------------------------------------------- NUL
def _classified_job(user: ApiUser, database_url: str) -> uuid.UUID:
    """A submitted job given a verdict (as the classifier would), so it can be reviewed."""
    from sqlalchemy import update

    from common.db.models import Job
    from common.db.session import session_scope

    job_id = _submit(user)
    with session_scope(database_url) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(label=1, probability=0.9, tier="mostly fake")
        )
    return job_id


def test_nul_in_a_review_note_answers_422(
    gateway: Gateway, edge_user: ApiUser, stack_env: dict[str, str]
) -> None:
    job_id = _classified_job(edge_user, stack_env["AIGI_DATABASE_URL"])
    url = f"{gateway.url}/v1/jobs/{job_id}/review"
    refused = httpx.put(
        url, headers=edge_user.headers, json={"decision": "confirmed", "note": "a\u0000b"}
    )
    assert refused.status_code == 422, refused.text
    assert "NUL" in str(refused.json()["detail"])
    kept = httpx.put(url, headers=edge_user.headers, json={"decision": "confirmed", "note": "ab"})
    assert kept.status_code == 200 and kept.json()["note"] == "ab"


def test_nul_in_the_dashboard_review_form_is_a_form_error(
    gateway: Gateway, edge_user: ApiUser, stack_env: dict[str, str]
) -> None:
    from tests.dashboard.conftest import login, page_csrf

    job_id = _classified_job(edge_user, stack_env["AIGI_DATABASE_URL"])
    with httpx.Client(base_url=gateway.url) as browser:
        assert login(browser, edge_user.key).status_code == 303  # type: ignore[arg-type]
        csrf = page_csrf(browser, f"/dashboard/jobs/{job_id}")  # type: ignore[arg-type]
        answer = browser.post(
            f"/dashboard/jobs/{job_id}/review",
            data={"decision": "confirmed", "note": "a\x00b", "csrf_token": csrf},
        )
    assert answer.status_code == 422
    assert "text/html" in answer.headers["content-type"] and "NUL" in answer.text


@pytest.mark.parametrize("field", ["image_url", "callback_url"])
def test_nul_in_submission_fields_answers_422(
    gateway: Gateway, edge_user: ApiUser, field: str
) -> None:
    value = "http://127.0.0.1/a\x00b.png"
    body = {"image_url": "http://127.0.0.1/x.png", field: value}
    as_json = httpx.post(f"{gateway.url}/v1/jobs", headers=edge_user.headers, json=body)
    assert as_json.status_code == 422 and "NUL" in as_json.text
    as_form = httpx.post(
        f"{gateway.url}/v1/jobs",
        headers=edge_user.headers,
        files={"file": ("x.png", image_bytes(seed=4), "image/png")},
        data={field: value},
    )
    assert as_form.status_code == 422 and "NUL" in as_form.text


def test_nul_in_headers_and_filters_is_refused(gateway: Gateway, edge_user: ApiUser) -> None:
    """A raw NUL in a header is refused by the HTTP parser itself (400); the other
    places answer 422 and the connection lives on."""
    with RawConnection(gateway.port) as conn:
        header = conn.request(
            "POST", "/v1/jobs", {**edge_user.headers, "Idempotency-Key": "a\x00b"}
        )
    assert header.status == 400, header.body
    with RawConnection(gateway.port) as conn:
        for path in ("/v1/jobs?cursor=a%00b", "/v1/jobs?status=a%00b"):
            answer = conn.request("GET", path, edge_user.headers)
            assert answer.status == 422, (path, answer.status, answer.body)
        login = conn.request("GET", "/dashboard/login?next=/dashboard%00%0d%0aX:%20y", {})
        assert login.status == 200 and b"X: y" not in login.body
