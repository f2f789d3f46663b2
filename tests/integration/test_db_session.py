"""Pooled connections: one that died while idle is replaced before anyone uses it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from common.db import session as db_session


def test_a_connection_killed_while_idle_is_replaced_on_checkout(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An engine of its own (the URL differs), so other tests' pools are not touched.
    url = stack_env["AIGI_DATABASE_URL"] + "?application_name=aigi-ping-test"
    engine = db_session.engine_for(url)
    try:
        with engine.connect() as conn:
            first_pid = conn.scalar(text("SELECT pg_backend_pid()"))
        admin_engine = db_session.engine_for(stack_env["AIGI_DATABASE_URL"])
        with admin_engine.connect() as admin:  # Postgres ends the idle pooled connection
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
            admin.commit()
        monkeypatch.setattr(db_session, "PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as conn:  # pinged, found dead, replaced: no error here
            assert conn.scalar(text("SELECT 1")) == 1
            assert conn.scalar(text("SELECT pg_backend_pid()")) != first_pid
    finally:
        engine.dispose()
        db_session._engines.pop(url, None)
