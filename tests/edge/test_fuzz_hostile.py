"""The OpenAPI fuzz run, made hostile: every request schemathesis generates from the
gateway's own schema is sent over a real socket with its body chunk-encoded (no
Content-Length), after every string in it (path, query, headers, JSON and multipart
fields) was given a NUL character or made over-long. Nothing may answer 5xx, every
refusal is a JSON error, and the keep-alive connection survives all of it.

``AIGI_FUZZ_EXAMPLES`` examples per operation (``make soak`` sets hundreds).
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.edge.conftest import Gateway
from tests.integration.conftest import ApiUser

EXAMPLES = int(os.environ.get("AIGI_FUZZ_EXAMPLES", "10"))
LONG = 5000  # over every maxLength in the schema (2048 at most)


def hostile(value: Any, how: str) -> Any:
    """``value`` with each string given a NUL in its middle, or made over-long."""
    if isinstance(value, str):
        if how == "nul":
            middle = len(value) // 2
            return value[:middle] + "\x00" + value[middle:]
        return value + "a" * LONG
    if isinstance(value, dict):
        return {k: hostile(v, how) for k, v in value.items()}
    if isinstance(value, list):
        return [hostile(v, how) for v in value]
    return value


def _form_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


def _body(case: schemathesis.Case, how: str) -> tuple[bytes | None, str | None]:
    """The case's body, made hostile, encoded; and its content type."""
    if case.body is None or isinstance(case.body, schemathesis.core.NotSet):
        return None, None
    body = hostile(case.body, how)
    if case.media_type == "multipart/form-data" and isinstance(body, dict):
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in body.items():
            filename = '; filename="x.png"' if isinstance(value, bytes) else ""
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}'
                "\r\n\r\n".encode()
                + _form_value(value)
                + b"\r\n"
            )
        encoded = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return encoded, f"multipart/form-data; boundary={boundary}"
    return json.dumps(body).encode(), case.media_type or "application/json"


def _chunks(data: bytes, size: int = 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_hostile_variants_of_generated_requests_get_json_4xx(
    gateway: Gateway, edge_user: ApiUser
) -> None:
    assert gateway.app is not None
    schema = schemathesis.openapi.from_asgi("/openapi.json", gateway.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for operation in operations:

            @given(case=operation.as_strategy(), how=st.sampled_from(["nul", "long"]))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                database=None,
                phases=[Phase.explicit, Phase.generate],
            )
            def run(case: schemathesis.Case, how: str) -> None:
                body, content_type = _body(case, how)
                headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
                # A raw NUL cannot travel in a header (the HTTP parser refuses it): long only.
                headers = hostile(headers, "long") | edge_user.headers
                if content_type:
                    headers["Content-Type"] = content_type
                params = hostile(case.path_parameters or {}, how)
                path = case.path.format(**{k: quote(str(v), safe="") for k, v in params.items()})
                response = client.request(
                    case.method,
                    path,
                    params=hostile(case.query or {}, how),
                    headers=headers,
                    content=_chunks(body) if body is not None else None,
                )
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {path} ({how}): {response.text[:300]}")
                elif response.status_code >= 400 and case.path != "/metrics":
                    assert response.headers["content-type"].startswith("application/json")
                    assert "detail" in response.json()

            run()
    assert not failures, failures
    assert sum(statuses.values()) >= EXAMPLES, statuses
