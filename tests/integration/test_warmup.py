"""The gateway opens its connections before it serves, and starts when they cannot open."""

from __future__ import annotations

import gc
import logging

import pytest

from common.db import session as db_session
from tests.integration.conftest import client_for


def test_the_gateway_opens_its_database_connections_before_it_serves(
    stack_env: dict[str, str],
) -> None:
    # An engine of its own (the URL differs), so other tests' pools are not counted.
    url = stack_env["AIGI_DATABASE_URL"] + "?application_name=aigi-warm-up-test"
    env = {**stack_env, "AIGI_DATABASE_URL": url, "AIGI_GATEWAY_WARM_CONNECTIONS": "4"}
    try:
        with client_for(env) as client:
            assert db_session.engine_for(url).pool.checkedin() == 4  # type: ignore[attr-defined]
            assert client.get("/readyz").status_code == 200
    finally:
        db_session.engine_for(url).dispose()
        db_session._engines.pop(url, None)


def test_the_gateway_starts_and_answers_503_while_the_database_is_down(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url = "postgresql+psycopg://aigi@127.0.0.1:9/nowhere"  # port 9 (discard): refused
    env = {**stack_env, "AIGI_DATABASE_URL": url}
    try:
        with caplog.at_level(logging.WARNING, logger="aigi.gateway"), client_for(env) as client:
            assert client.get("/healthz").status_code == 200
            answer = client.post(
                "/v1/jobs", headers={"Authorization": "Bearer aigi_x"}, files={"file": b"x"}
            )
            assert answer.status_code == 503, answer.text
        assert any("database warm-up stopped" in r.getMessage() for r in caplog.records)
    finally:
        db_session.engine_for(url).dispose()
        db_session._engines.pop(url, None)


def test_the_gateway_freezes_its_start_up_objects_out_of_the_collector(
    stack_env: dict[str, str],
) -> None:
    """A full collection over a warm gateway's ~150k start-up objects stalled the
    requests in flight for 75-95 ms; frozen, they are never traversed (until shutdown)."""
    gc.unfreeze()
    with client_for(stack_env) as client:
        assert gc.get_freeze_count() > 10_000
        assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0
