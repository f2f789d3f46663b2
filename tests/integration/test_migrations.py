"""Alembic upgrade and downgrade on an empty database."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

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
            "image_data",
            "tenants",
            "api_keys",
            "job_stages",
            "webhook_deliveries",
            "delivery_attempts",
            "reviews",
            "idempotency_keys",
        } <= tables
        with engine.begin() as conn:  # an image whose only copy is in Postgres
            conn.execute(
                text(
                    "INSERT INTO images (sha256, size_bytes, content_type, format, width, height)"
                    " VALUES ('ab', 1, 'image/png', 'PNG', 1, 1)"
                )
            )
            conn.execute(text("INSERT INTO image_data (sha256, data) VALUES ('ab', 'x')"))
        with pytest.raises(RuntimeError, match="copy them to the blob store"):
            downgrade(url)
        assert "image_data" in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM images"))
        downgrade(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)  # and back up again: the chain is repeatable
    finally:
        engine.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
