"""The edge: keys, rate limits, signed webhooks with retries, SSRF, hostile input, dedup."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.netguard import UnsafeURLError, URLPolicy, forbidden_reason
from tests.helpers import image_bytes, wait_until
from tests.integration.conftest import ApiUser, client_for, make_user, submit


# ------------------------------------------------------------------------------ keys
def test_revoked_key_gets_401(user: ApiUser, stack_env: dict) -> None:
    """Refused once this process's memory of the key runs out (auth_cache_seconds)."""
    from common.db.session import session_scope
    from common.tenants import authenticate, revoke_key

    fast_expiry = client_for({**stack_env, "AIGI_AUTH_CACHE_SECONDS": "0.5"})
    assert fast_expiry.get("/v1/jobs", headers=user.headers).status_code == 200
    with session_scope(stack_env["AIGI_DATABASE_URL"]) as session:
        principal = authenticate(session, user.key)
        assert principal is not None
        revoke_key(session, str(principal.key_id))
    wait_until(
        lambda: fast_expiry.get("/v1/jobs", headers=user.headers).status_code == 401,
        timeout=10,
        interval=0.1,
        message="the revoked key to be refused",
    )
    response = fast_expiry.get("/v1/jobs", headers=user.headers)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_rate_limit_answers_429_with_retry_after(client: TestClient, user: ApiUser) -> None:
    from services.gateway.ratelimit import TokenBucket

    state = client.app.state.gateway  # type: ignore[attr-defined]
    original = state.rate_limiter
    state.rate_limiter = TokenBucket(state.redis, per_minute=6, burst=3)
    try:
        codes = [client.get("/v1/jobs", headers=user.headers).status_code for _ in range(5)]
        blocked = client.get("/v1/jobs", headers=user.headers)
        submitted = submit(client, user, image_bytes(seed=45))  # limited in its own thread
    finally:
        state.rate_limiter = original
    assert codes[:3] == [200, 200, 200] and 429 in codes
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 10
    assert submitted.status_code == 429 and "retry-after" in submitted.headers


def test_tenant_and_key_commands(stack_env: dict) -> None:
    from typer.testing import CliRunner

    from services.cli.main import app

    runner = CliRunner()
    name = f"cli-{time.time_ns()}"
    created = runner.invoke(app, ["tenant", "create", name])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["webhook_secret"].startswith("whsec_")
    key = runner.invoke(app, ["key", "create", name, "--name", "ci"])
    assert key.exit_code == 0, key.output
    body = json.loads(key.stdout)
    assert body["key"].startswith("aigi_")
    revoked = runner.invoke(app, ["key", "revoke", body["id"]])
    assert revoked.exit_code == 0
    duplicate = runner.invoke(app, ["tenant", "create", name])
    assert duplicate.exit_code == 2 and "already exists" in duplicate.output


# ------------------------------------------------------------------------------ webhooks
@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    status_when_failing: int = 503
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            failing = len(state.requests) <= state.fail_first
            self.send_response(state.status_when_failing if failing else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def scheduler(stack_env: dict) -> Iterator[None]:
    """The real reconciler/webhook scheduler loop, in a thread, ticking fast."""
    from common.pipeline import ChainSender
    from common.settings import Settings
    from services.runtime import WorkerContext
    from services.scheduler import run_forever

    settings = Settings()
    stop = threading.Event()
    thread = threading.Thread(
        target=run_forever,
        args=(WorkerContext(settings), ChainSender.from_settings(settings), 0.2, stop),
        daemon=True,
    )
    thread.start()
    yield
    stop.set()
    thread.join(5)


pytestmark = pytest.mark.usefixtures("pipeline_workers")


def test_webhooks_are_signed_per_standard_webhooks(
    client: TestClient, user: ApiUser, receiver: Receiver
) -> None:
    job_id = submit(client, user, image_bytes(seed=60), callback_url=receiver.url).json()["id"]
    wait_until(lambda: len(receiver.requests) >= 2, 60, message="verdict and done webhooks")
    webhook = Webhook(user.webhook_secret)  # the off-the-shelf library verifies
    events = []
    for headers, body in receiver.requests:
        payload = webhook.verify(body, headers)
        events.append(payload["type"])
        assert payload["data"]["id"] == job_id
        assert headers["webhook-id"] and headers["webhook-signature"].startswith("v1,")
    assert sorted(events) == ["job.done", "job.verdict"]
    done = next(json.loads(b) for _, b in receiver.requests if b"job.done" in b)
    assert done["data"]["status"] == "done" and done["data"]["verdict"] is not None

    headers, body = receiver.requests[0]
    with pytest.raises(WebhookVerificationError):
        webhook.verify(body.replace(b'"job.', b'"jab.'), headers)  # tampered body
    stale = dict(headers, **{"webhook-timestamp": str(int(time.time()) - 600)})
    with pytest.raises(WebhookVerificationError, match="too old"):
        webhook.verify(body, stale)

    deliveries = client.get(f"/v1/jobs/{job_id}/deliveries", headers=user.headers).json()
    assert {d["event"] for d in deliveries} == {"verdict", "done"}
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in deliveries)
    assert all(d["attempt_log"][0]["status_code"] == 204 for d in deliveries)


def test_webhook_retries_until_the_receiver_recovers(
    client: TestClient, services: object, stack_env: dict, receiver: Receiver, scheduler: None
) -> None:
    user = make_user(stack_env["AIGI_DATABASE_URL"], callback_url=receiver.url)
    receiver.fail_first = 3
    job_id = submit(client, user, image_bytes(seed=61)).json()["id"]  # the tenant default URL

    def delivered() -> list | None:
        rows = client.get(f"/v1/jobs/{job_id}/deliveries", headers=user.headers).json()
        ok = [d for d in rows if d["status"] == "succeeded"]
        return rows if len(ok) == 2 else None

    rows = wait_until(delivered, 90, message="both deliveries to succeed after retries")
    attempts = sorted(d["attempts"] for d in rows)
    assert sum(attempts) == 3 + 2, attempts  # three 503s, then one success each
    failed_log = [a for d in rows for a in d["attempt_log"] if a["status_code"] == 503]
    assert len(failed_log) == 3 and all(a["latency_ms"] >= 0 for a in failed_log)


def test_non_retryable_4xx_fails_and_can_be_resent(
    client: TestClient, user: ApiUser, receiver: Receiver, scheduler: None
) -> None:
    receiver.fail_first, receiver.status_when_failing = 2, 410
    job_id = submit(client, user, image_bytes(seed=62), callback_url=receiver.url).json()["id"]

    def all_final() -> list | None:
        rows = client.get(f"/v1/jobs/{job_id}/deliveries", headers=user.headers).json()
        return rows if len(rows) == 2 and all(d["status"] != "pending" for d in rows) else None

    rows = wait_until(all_final, 60, message="deliveries to finish")
    failed = [d for d in rows if d["status"] == "failed"]
    assert len(failed) == 2 and all(d["attempts"] == 1 for d in failed), rows
    resent = client.post(
        f"/v1/jobs/{job_id}/deliveries/{failed[0]['id']}/resend", headers=user.headers
    )
    assert resent.status_code == 202
    wait_until(
        lambda: (
            next(
                d
                for d in client.get(f"/v1/jobs/{job_id}/deliveries", headers=user.headers).json()
                if d["id"] == failed[0]["id"]
            )["status"]
            == "succeeded"
        ),
        30,
        message="the re-sent delivery",
    )


# ------------------------------------------------------------------------------ SSRF
FORBIDDEN = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.5",
    "192.168.1.1",
    "169.254.169.254",
    "0.0.0.0",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_address_families(address: str) -> None:
    assert forbidden_reason(address) is not None
    policy = URLPolicy(resolver=lambda host, port: [address])
    with pytest.raises(UnsafeURLError, match="forbidden"):
        policy.check("http://images.example/cat.png")


def test_public_addresses_pass_and_other_refusals() -> None:
    assert forbidden_reason("93.184.216.34") is None
    assert forbidden_reason("2606:2800:220:1::") is None
    public = URLPolicy(resolver=lambda host, port: ["93.184.216.34"])
    assert public.check("https://images.example/cat.png")[1] == "93.184.216.34"
    for url, reason in [
        ("ftp://images.example/x", "only http"),
        ("file:///etc/passwd", "only http"),
        ("http://user:pw@images.example/", "credentials"),
        ("http:///nohost", "no host"),
    ]:
        with pytest.raises(UnsafeURLError, match=reason):
            public.check(url)
    mixed = URLPolicy(resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(UnsafeURLError, match="private"):
        mixed.check("http://rebinding.example/")


def test_hostname_resolving_to_private_address_is_refused(
    client: TestClient, user: ApiUser
) -> None:
    state = client.app.state.gateway  # type: ignore[attr-defined]
    original = state.url_policy
    state.url_policy = URLPolicy(resolver=lambda host, port: ["192.168.0.10"])
    try:
        response = client.post(
            "/v1/jobs", headers=user.headers, json={"image_url": "http://intranet.example/cat.png"}
        )
        callback = submit(client, user, image_bytes(), callback_url="http://hooks.example/x")
    finally:
        state.url_policy = original
    assert response.status_code == 422 and "private" in response.json()["detail"]
    assert callback.status_code == 422 and "callback_url refused" in callback.json()["detail"]


def test_redirect_to_loopback_is_refused(client: TestClient, user: ApiUser) -> None:
    """A public-looking host that redirects to 127.0.0.1 is re-checked and refused."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/secret.png")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    state = client.app.state.gateway  # type: ignore[attr-defined]
    original = state.url_policy
    # "public.example" is allowed and resolves to the local test server; 127.0.0.1 is not.
    state.url_policy = URLPolicy(
        allow_hosts=frozenset({f"public.example:{port}"}),
        resolver=lambda host, p: ["127.0.0.1"],
    )
    try:
        response = client.post(
            "/v1/jobs",
            headers=user.headers,
            json={"image_url": f"http://public.example:{port}/cat.png"},
        )
    finally:
        state.url_policy = original
        server.shutdown()
        server.server_close()
    assert response.status_code == 422, response.text
    assert "loopback" in response.json()["detail"]


# ------------------------------------------------------------------------------ hostile input
def _png_bomb() -> bytes:
    """A valid PNG header declaring 60000 x 60000 pixels (3.6 G pixels)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _hostile_corpus() -> dict[str, bytes]:
    png = image_bytes(fmt="PNG", seed=70)
    jpeg = image_bytes(fmt="JPEG", seed=71)
    flipped = bytearray(png)
    for i in range(60, len(flipped), 7):
        flipped[i] ^= 0xFF
    html_polyglot = b"<html><script>alert(1)</script></html>" + png
    return {
        "bomb": _png_bomb(),
        "truncated-png": png[: len(png) // 2],
        "truncated-jpeg": jpeg[: len(jpeg) // 3],
        "bit-flipped-png": bytes(flipped),
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        "html-polyglot": html_polyglot,
        "zip": b"PK\x03\x04" + b"\x00" * 100,
        "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
        "empty": b"",
        "random": bytes(range(256)) * 8,
    }


def test_hostile_corpus_gets_4xx_and_workers_stay_alive(
    client: TestClient, user: ApiUser, pipeline_workers: object
) -> None:
    for name, data in _hostile_corpus().items():
        response = client.post(
            "/v1/jobs", headers=user.headers, files={"file": (f"{name}.png", data, "image/png")}
        )
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert response.json()["detail"], name
    job_id = submit(client, user, image_bytes(seed=72), wait=20).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()["verdict"]


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P", "RGBA", "LA"])
def test_odd_but_valid_images_are_accepted(client: TestClient, user: ApiUser, mode: str) -> None:
    buffer = io.BytesIO()
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    Image.new(mode, (40, 30)).save(buffer, format=fmt)
    response = submit(client, user, buffer.getvalue(), wait=20)
    assert response.status_code == 200, response.text
    assert response.json()["verdict"] is not None


def test_animated_gif_uses_its_first_frame(client: TestClient, user: ApiUser) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    response = submit(client, user, buffer.getvalue(), wait=20)
    assert response.status_code == 200 and response.json()["image"]["format"] == "GIF"


# ------------------------------------------------------------------------------ idempotency
def test_idempotency_key_returns_the_original_job(client: TestClient, user: ApiUser) -> None:
    data = image_bytes(seed=80)
    headers = {**user.headers, "Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", headers=headers, files={"file": ("a.png", data, "image/png")})
    again = client.post("/v1/jobs", headers=headers, files={"file": ("a.png", data, "image/png")})
    assert first.status_code == 202 and again.status_code in (200, 202)
    assert again.json()["id"] == first.json()["id"]
    other = client.post(
        "/v1/jobs", headers=headers, files={"file": ("b.png", image_bytes(seed=81), "image/png")}
    )
    assert other.status_code == 422 and "different request" in other.json()["detail"]


def wait_for_done(client: TestClient, user: ApiUser, job_id: str) -> dict:
    def done() -> dict | None:
        view = client.get(f"/v1/jobs/{job_id}", headers=user.headers).json()
        return view if view["status"] == "done" else None

    return wait_until(done, 60, message=f"job {job_id} to finish")


def test_same_image_returns_the_cached_result_unless_fresh(
    client: TestClient, user: ApiUser
) -> None:
    data = image_bytes(seed=82)
    original = wait_for_done(client, user, submit(client, user, data, wait=20).json()["id"])
    cached = submit(client, user, data)
    assert cached.status_code == 200, cached.text  # the verdict is there at once
    body = cached.json()
    assert body["cached"] is True and body["id"] != original["id"]
    assert body["status"] == "done" and body["verdict"] == original["verdict"]
    assert body["evidence"]["rois"] == original["evidence"]["rois"]
    fresh = submit(client, user, data, fresh=True)
    assert fresh.status_code == 202 and fresh.json()["cached"] is False


def test_cached_results_stay_within_the_tenant_and_carry_the_explanation_asked_for(
    client: TestClient, user: ApiUser, other_user: ApiUser
) -> None:
    data = image_bytes(seed=83)
    wait_for_done(client, user, submit(client, user, data, explain=False).json()["id"])
    again = submit(client, user, data, explain=False)
    assert again.status_code == 200 and again.json()["cached"] is True
    # An explanation was not produced for these bytes yet: the job runs.
    wants_explanation = submit(client, user, data, explain=True)
    assert wants_explanation.status_code == 202 and wants_explanation.json()["cached"] is False
    # Another tenant never sees this tenant's results.
    elsewhere = submit(client, other_user, data, explain=False)
    assert elsewhere.status_code == 202 and elsewhere.json()["cached"] is False
