"""Alembic upgrade and downgrade on an empty database."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, inspect

from common.db.migrate import downgrade, upgrade
from tests.conftest import Services


def test_upgrade_and_downgrade_on_empty_database(services: Services) -> None:
    import psycopg

    admin_url = services.database_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"aigi_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = services.database_url.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    engine = create_engine(url)
    try:
        upgrade(url)
        tables = set(inspect(engine).get_table_names())
        assert {
            "jobs",
            "images",
            "tenants",
            "api_keys",
            "job_stages",
            "webhook_deliveries",
            "delivery_attempts",
            "reviews",
            "idempotency_keys",
        } <= tables
        downgrade(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)  # and back up again: the chain is repeatable
    finally:
        engine.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
