"""API clients against the real app, Postgres and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Services


@dataclass
class ApiUser:
    tenant_id: uuid.UUID
    tenant_name: str
    key: str
    webhook_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_user(
    database_url: str, name: str | None = None, callback_url: str | None = None
) -> ApiUser:
    from common.db.session import session_scope
    from common.tenants import create_key, create_tenant

    with session_scope(database_url) as session:
        tenant = create_tenant(session, name or f"tenant-{uuid.uuid4().hex[:8]}", callback_url)
        _, key = create_key(session, tenant)
        return ApiUser(tenant.id, tenant.name, key, tenant.webhook_secret)


@pytest.fixture
def user(services: Services, stack_env: dict[str, str]) -> ApiUser:
    return make_user(services.database_url)


@pytest.fixture
def other_user(services: Services, stack_env: dict[str, str]) -> ApiUser:
    return make_user(services.database_url)


@pytest.fixture
def client(stack_env: dict[str, str]) -> Iterator[TestClient]:
    from common.settings import Settings
    from services.gateway.app import create_app

    app = create_app(Settings())
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def submit(
    client: TestClient | httpx.Client, user: ApiUser, data: bytes, **params: object
) -> httpx.Response:
    fields = {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in params.items()
        if k != "wait" and v is not None
    }
    query = {"wait": params["wait"]} if "wait" in params else None
    return client.post(
        "/v1/jobs",
        headers=user.headers,
        params=query,
        files={"file": ("image.png", data, "image/png")},
        data=fields,
    )


def client_for(env: dict[str, str]) -> TestClient:
    """A gateway app configured from ``env``'s AIGI_* variables (e.g. an isolated Redis)."""
    from common.settings import Settings
    from services.gateway.app import create_app

    settings = Settings(**{k[5:].lower(): v for k, v in env.items() if k.startswith("AIGI_")})
    return TestClient(create_app(settings), base_url="http://127.0.0.1:8000")
