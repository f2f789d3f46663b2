"""Postgres models, sessions and Alembic migrations (the source of truth)."""
