"""Request bodies from hostile clients, over real sockets to the real app: bounded while
they stream (413), timed (408), never read for a refused caller (401, 429), and an
unexpected error answers a JSON 500 on a connection that stays usable."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from services.gateway.edge import MULTIPART_OVERHEAD_BYTES, OTHER_BODY_BYTES
from tests.edge.conftest import Gateway, GatewayProcess, RawConnection, pieces
from tests.integration.conftest import ApiUser

MiB = 1024 * 1024


def _auth(user: ApiUser, content_type: str) -> dict[str, str]:
    return {**user.headers, "Content-Type": content_type}


def _multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()


def _multipart(boundary: str, size: int) -> Iterator[bytes]:
    """A multipart upload of ``size`` image bytes, made while it is sent."""

    def generate() -> Iterator[bytes]:
        yield _multipart_head(boundary)
        yield from pieces(size, fill=b"\x89")
        yield f"\r\n--{boundary}--\r\n".encode()

    return generate()


# ---------------------------------------------------------------------------- size
def test_chunked_json_over_the_limit_is_refused_while_streaming(
    gateway: Gateway, edge_user: ApiUser
) -> None:
    with RawConnection(gateway.port) as conn:
        answer = conn.request(
            "POST",
            "/v1/jobs",
            _auth(edge_user, "application/json"),
            pieces(8 * MiB),
            chunked=True,
        )
    assert answer.status == 413, answer.body
    assert "64" in str(answer.json()) or str(OTHER_BODY_BYTES) in str(answer.json())
    assert answer.headers["connection"] == "close"  # the rest is not drained
    assert answer.sent < 8 * MiB  # answered while the client was still sending


def test_chunked_multipart_over_the_upload_limit_is_refused_while_streaming(
    gateway: Gateway, edge_user: ApiUser
) -> None:
    assert gateway.app is not None
    limit = gateway.app.state.gateway.settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    boundary = uuid.uuid4().hex
    with RawConnection(gateway.port) as conn:
        answer = conn.request(
            "POST",
            "/v1/jobs",
            _auth(edge_user, f"multipart/form-data; boundary={boundary}"),
            _multipart(boundary, 24 * MiB),
            chunked=True,
        )
    assert answer.status == 413, answer.body
    assert str(limit) in answer.json()["detail"]  # type: ignore[index]
    assert answer.headers["connection"] == "close"


def test_declared_length_over_the_limit_is_refused_before_any_body(
    gateway: Gateway, edge_user: ApiUser
) -> None:
    for content_type, declared in (
        ("application/json", OTHER_BODY_BYTES + 1),
        ("multipart/form-data; boundary=x", 10**12),
    ):
        with RawConnection(gateway.port) as conn:  # no body byte is ever sent
            answer = conn.request(
                "POST",
                "/v1/jobs",
                {**_auth(edge_user, content_type), "Content-Length": str(declared)},
            )
        assert answer.status == 413 and answer.headers["connection"] == "close"


def test_an_upload_of_exactly_the_limit_passes_the_body_limit(
    gateway: Gateway, edge_user: ApiUser
) -> None:
    """The margin for the form's own bytes: a file of exactly AIGI_MAX_UPLOAD_BYTES with
    the longest callback_url is read whole and judged as an image (422: these bytes are
    not one), not refused as a body (413)."""
    import httpx

    assert gateway.app is not None
    limit = gateway.app.state.gateway.settings.max_upload_bytes
    response = httpx.post(
        f"{gateway.url}/v1/jobs",
        headers=edge_user.headers,
        files={"file": ("x.png", b"\x89" * limit, "image/png")},
        data={"callback_url": "http://127.0.0.1/" + "a" * 2000, "explain": "false"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "image" in response.json()["detail"]


def test_peak_memory_stays_flat_under_a_150_mb_chunked_body(
    gateway_process: GatewayProcess, stack_env: dict[str, str]
) -> None:
    """The issue's reproduction: 150 MB of chunked JSON (then the same as a multipart
    upload) to one gateway process. Its peak RSS (VmHWM) grows by less than 20 MB."""
    from tests.integration.conftest import make_user

    user = make_user(stack_env["AIGI_DATABASE_URL"])
    with RawConnection(gateway_process.port) as conn:  # warm: first request's imports
        warm = conn.request("GET", "/v1/jobs?limit=1", user.headers)
        assert warm.status == 200
    before = gateway_process.peak_rss_kib()
    with RawConnection(gateway_process.port) as conn:
        json_answer = conn.request(
            "POST", "/v1/jobs", _auth(user, "application/json"), pieces(150 * MiB), chunked=True
        )
    boundary = uuid.uuid4().hex
    with RawConnection(gateway_process.port) as conn:
        multipart_answer = conn.request(
            "POST",
            "/v1/jobs",
            _auth(user, f"multipart/form-data; boundary={boundary}"),
            _multipart(boundary, 150 * MiB),
            chunked=True,
            timeout=60,
        )
    grown_mib = (gateway_process.peak_rss_kib() - before) / 1024
    assert json_answer.status == 413 and multipart_answer.status == 413
    assert json_answer.sent < 150 * MiB and multipart_answer.sent < 150 * MiB
    assert grown_mib < 20, f"peak RSS grew by {grown_mib:.1f} MiB"


# ---------------------------------------------------------------------------- refused callers
@pytest.mark.parametrize("declared", ["Content-Length", "Transfer-Encoding"])
def test_a_refused_caller_is_answered_before_its_body_is_read(
    gateway: Gateway, edge_user: ApiUser, declared: str
) -> None:
    """A body that never comes: 401 (no key) and 429 (no tokens) arrive at once, not the
    408 of a body read, so neither read a byte of it."""
    from services.gateway.ratelimit import TokenBucket

    headers = {"Content-Type": "application/json"}
    headers |= {"Content-Length": "60000"} if declared == "Content-Length" else {}
    chunked = declared == "Transfer-Encoding"
    with RawConnection(gateway.port) as conn:
        unauthenticated = conn.request("POST", "/v1/jobs", headers, (), chunked=chunked)
    assert unauthenticated.status == 401
    assert unauthenticated.headers["connection"] == "close"

    assert gateway.app is not None
    state = gateway.app.state.gateway
    original = state.rate_limiter
    state.rate_limiter = TokenBucket(state.redis, per_minute=1, burst=1)
    try:
        state.rate_limiter.take(str(_key_id(edge_user)))  # the only token
        with RawConnection(gateway.port) as conn:
            limited = conn.request(
                "POST", "/v1/jobs", {**headers, **edge_user.headers}, (), chunked=chunked
            )
    finally:
        state.rate_limiter = original
    assert limited.status == 429 and "retry-after" in limited.headers
    assert limited.headers["connection"] == "close"


def _key_id(user: ApiUser) -> uuid.UUID:
    from common.db.session import session_scope
    from common.settings import get_settings
    from common.tenants import authenticate

    with session_scope(get_settings().database_url) as session:
        principal = authenticate(session, user.key)
        assert principal is not None
        return principal.key_id


# ---------------------------------------------------------------------------- slow clients
@pytest.mark.parametrize(
    ("content_type", "start"),
    [
        ("application/json", b'{"image_url": "http://exa'),
        ("multipart/form-data; boundary=b", _multipart_head("b")),
    ],
)
def test_a_body_that_stalls_gets_408(
    gateway: Gateway, edge_user: ApiUser, content_type: str, start: bytes
) -> None:
    """Declares 60 kB, sends a few bytes and waits: 408 after the read timeout (1 s
    in this gateway), not a request held open."""
    headers = {**_auth(edge_user, content_type), "Content-Length": "60000"}
    with RawConnection(gateway.port) as conn:
        answer = conn.request("POST", "/v1/jobs", headers, [start], timeout=10)
    assert answer.status == 408, answer.body
    assert "stalled" in answer.json()["detail"]  # type: ignore[index]
    assert answer.headers["connection"] == "close"


# ---------------------------------------------------------------------------- 500
def test_an_unexpected_error_answers_json_500_and_keeps_the_connection(
    gateway: Gateway, edge_user: ApiUser, caplog: pytest.LogCaptureFixture
) -> None:
    assert gateway.app is not None
    state = gateway.app.state.gateway

    class Broken:
        def take(self, key: str) -> None:
            raise RuntimeError("boom")

    original = state.rate_limiter
    with RawConnection(gateway.port) as conn:
        state.rate_limiter = Broken()
        try:
            failed = conn.request("GET", "/v1/jobs", edge_user.headers)
        finally:
            state.rate_limiter = original
        after = conn.request("GET", "/v1/jobs", edge_user.headers)  # same connection
    assert failed.status == 500
    body = failed.json()
    assert isinstance(body, dict) and body["request_id"] == failed.headers["x-request-id"]
    assert body["request_id"] in body["detail"]
    assert failed.headers.get("connection") != "close"
    assert after.status == 200 and "items" in json.loads(after.body)
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == body["request_id"]]
    assert logged and logged[0].exc_info is not None  # with its traceback


def test_a_client_that_leaves_mid_body_is_no_error(
    gateway: Gateway, edge_user: ApiUser, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import socket

    from tests.helpers import wait_until

    caplog.set_level(logging.INFO, "aigi.gateway")
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {edge_user.key}\r\nContent-Length: 5000\r\n\r\n".encode()
        + b'{"image_url": '
    )
    sock.close()
    wait_until(
        lambda: any(r.getMessage() == "client disconnected" for r in caplog.records),
        timeout=10,
        interval=0.05,
        message="the gateway to see the client leave",
    )
    assert not [r for r in caplog.records if r.getMessage() == "unhandled error"]
    with RawConnection(gateway.port) as conn:  # the server carries on
        assert conn.request("GET", "/v1/jobs", edge_user.headers).status == 200
